"""What the outbound bank link's parts share: its settings, its errors, the key a request and
its response share, where its ZAK comes from, and how a backoff is jittered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hsm.keys import KeyRef
from messages.envelope import message_class
from switch.bank.dialect import PRESETS, Dialect

#: A backoff is shortened by up to this share of itself, at random, so that links and queued
#: reversals that failed together do not all come due at the same instant.
JITTER = 0.1


def jittered(delay_s: float, draw: float) -> float:
    """``delay_s`` less up to :data:`JITTER` of it, ``draw`` being a random number in [0, 1):
    never longer than the backoff the spec states, never shorter than 90 % of it.

    >>> jittered(10.0, 0.0), jittered(10.0, 0.5), 9.0 < jittered(10.0, 0.9999) <= 10.0
    (10.0, 9.5, True)
    """
    return delay_s * (1.0 - JITTER * draw)


class LinkDown(ConnectionError):
    """The link is not connected and signed on: the request was not sent."""


class LinkLost(LinkDown):
    """The connection was lost with the request sent and unanswered: it may have been done."""


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    host: str
    port: int
    acquirer_id: str  # the centre's F32 towards this bank
    timeout_s: float = 10.0  # a request unanswered this long has timed out
    echo_idle_s: float = 30.0  # an echo after this long without traffic
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    frame_bytes_max: int = 8192
    dialect: Dialect = PRESETS["medswitch"]
    bank_id: str = ""  # the bank, in log lines


def reply_key(mti: str, stan: str, transmitted: str, acquirer_id: str) -> str:
    """The key a request and its response share: the request's class, F11, F7, F32."""
    request_mti = f"{int(mti) - 10:04d}" if int(mti[2]) % 2 == 1 else mti
    return f"{message_class(request_mti)}|{stan}|{transmitted}|{int(acquirer_id)}"


class MacKeys(Protocol):
    """The link's ZAK: the current one MACs, these verify (the previous too, for a while after
    a key change: :class:`switch.bank.keys.LinkKeys`)."""

    async def current(self) -> KeyRef | None: ...

    async def accepted(self) -> list[KeyRef]: ...


@dataclass(frozen=True, slots=True)
class FixedKey:
    """A ZAK that never changes."""

    zak: KeyRef

    async def current(self) -> KeyRef | None:
        return self.zak

    async def accepted(self) -> list[KeyRef]:
        return [self.zak]

"""What a handler is given beside its typed request: the terminal, its session, the time, and
narrow interfaces to the services (implemented in switch/, faked nowhere: tests use the real
ones on a temporary database and key store)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple, Protocol

from hsm.interface import Hsm, SignOnKeys
from hsm.keys import KeyRef
from ledger.core import Ledger
from ledger.medical.service import MedicalService


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    terminal_id: str
    institution_id: str
    kind: str  # pos | kiosk | bank_counter
    status: str  # active | suspended | closed
    batch: str  # 6 digits

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class CardRecord:
    card_no: str
    application_serial: str  # as the ledger names the card's accounts (hex)
    cardholder_id: str
    key_version: int
    status: str  # active | lost | cancelled | replaced
    expiry: date
    _serial: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def serial_bytes(self) -> bytes:
        """The 10-byte application serial the card reports (EF 0015 bytes 11-20), made at
        its first use (an advice asks twice; the daemon keeps its cards)."""
        serial = self._serial
        if serial is None:
            serial = bytes.fromhex(self.application_serial).rjust(10, b"\0")
            object.__setattr__(self, "_serial", serial)
        return serial


class CardDirectory(Protocol):
    def get(self, card_no: str) -> CardRecord | None:
        """The card (a point read of the embedded database: no thread hop)."""
        ...

    def psam_institution(self, psam_terminal_no: str) -> str | None:
        """The institution owning the PSAM with this terminal number (12 digits)."""
        ...

    def blacklist_version(self) -> int: ...

    def terminal_parameters(self, terminal_id: str) -> StoredParameters | None:
        """The newest parameter version for the terminal (its group's, else its
        institution's, else every terminal's); None when none is stored."""
        ...

    def blacklist_changes(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(version, 'A' add / 'D' delete, application serial) after ``after``, in order."""
        ...


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    floor_fen: int
    count_max: int
    age_max_h: int


@dataclass(frozen=True, slots=True)
class StoredParameters:
    """A parameter version an operator set (switch/estate/parameters.py)."""

    version: int
    limits: OfflineLimits
    categories: str


class TerminalDirectory(Protocol):
    async def get(self, terminal_id: str, *, refresh: bool = False) -> TerminalRecord | None:
        """The record, from a cache unless ``refresh``."""
        ...


class SessionKeys(Protocol):
    async def tmk(self, terminal_id: str) -> KeyRef | None: ...

    async def get(self, terminal_id: str) -> SignOnKeys | None:
        """The terminal's current working keys."""
        ...

    def admit(self, terminal_id: str, now: datetime) -> bool:
        """May the terminal sign on now (its sign-on rate limit)?"""
        ...

    def signing_on(self, terminal_id: str) -> AbstractAsyncContextManager[None]:
        """Held while a sign-on of the terminal issues and offers its keys: one at a time."""
        ...

    async def offer(self, terminal_id: str, keys: SignOnKeys) -> str:
        """Keys a sign-on issued: pending until a request MACed under them arrives (the
        current keys serve until then); the batch they open then."""
        ...

    async def forget(self, terminal_id: str) -> None:
        """The terminal signed off: its working keys serve no message until a new sign-on."""
        ...


_OFFLINE = OfflineLimits(20_000, 50, 72)


class Why(NamedTuple):
    """Why a handler refused its request, for the request's log line (specs/terminal-interface.md,
    "Faults"): a short machine-readable reason and the bill the request named, if any. Noted by
    :func:`routing.common.answer`; none when the handler gave none (the log line then names the
    response code's outcome)."""

    reason: str
    bill_id: str


@dataclass(frozen=True, init=False)  # no slots: __init__ fills the instance's dict at once
class RequestContext:
    terminal: TerminalRecord
    session: SignOnKeys | None
    now: datetime  # the host's time for this request, in the centre's time zone
    hsm: Hsm
    terminals: TerminalDirectory
    sessions: SessionKeys
    cards: CardDirectory
    ledger: Ledger
    message_key: str  # (terminal, batch, STAN, message class): DESIGN §5's message identity
    offline: OfflineLimits = _OFFLINE
    medical: MedicalService | None = None
    # A refusal's reason, noted by answer() (note_why): not an __init__ parameter, and nothing
    # is made for the requests answered without one.
    why: Why | None = field(default=None, init=False, compare=False, repr=False)

    def __init__(  # the fields in order, as dataclass would write it
        self,
        terminal: TerminalRecord,
        session: SignOnKeys | None,
        now: datetime,
        hsm: Hsm,
        terminals: TerminalDirectory,
        sessions: SessionKeys,
        cards: CardDirectory,
        ledger: Ledger,
        message_key: str,
        offline: OfflineLimits = _OFFLINE,
        medical: MedicalService | None = None,
    ) -> None:
        """The frozen dataclass's ``__init__`` set each field through ``object.__setattr__``
        (1.5 us a request); one dict update does the same (0.6 us)."""
        self.__dict__.update(
            terminal=terminal,
            session=session,
            now=now,
            hsm=hsm,
            terminals=terminals,
            sessions=sessions,
            cards=cards,
            ledger=ledger,
            message_key=message_key,
            offline=offline,
            medical=medical,
        )

    def note_why(self, reason: str, bill_id: str) -> None:
        """Note why the request is refused (the context is otherwise frozen)."""
        self.__dict__["why"] = Why(reason, bill_id)

    @property
    def host_time(self) -> str:
        return host_stamps(self.now)[0]

    @property
    def host_date(self) -> str:
        return host_stamps(self.now)[1]


def host_stamps(now: datetime) -> tuple[str, str]:
    """The host's time hhmmss and date MMDD that every reply carries (they set the terminal's
    clock), each the digits of one integer with a leading 1 cut off: strftime costs ten times
    as much, f-strings with ``:02d`` twice.

    >>> host_stamps(datetime(2026, 1, 5, 7, 8, 9)), host_stamps(datetime(2026, 12, 31, 23, 59, 0))
    (('070809', '0105'), ('235900', '1231'))
    """
    hhmmss = 1_000_000 + now.hour * 10_000 + now.minute * 100 + now.second
    return str(hhmmss)[1:], str(10_000 + now.month * 100 + now.day)[1:]

"""An outbound bank link (the bank as issuer of savings accounts): one persistent connection
with sign-on on connect, echo when idle, reconnect with capped exponential backoff, requests
multiplexed and matched to their responses by (message class, F11, F7, F32), a timeout per
request, and late or unknown responses logged as unmatched (ideas from moov-io's
iso8583-connection and jPOS QMUX).

MACs: every financial request carries F128 (X9.19 under the link's ZAK) and every financial
response must verify, or it is dropped as if it never came (the request then times out).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from messages import bank
from messages.bank import BankEcho, BankMessage, BankReply, BankSignOn, SavingsDebit
from messages.codec import Codec, Message
from messages.envelope import message_class
from messages.errors import CodecError, FramingError
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_bank import BANK
from routing.bank_context import LINK_DOWN, TIMED_OUT
from switch.bank.observe import LinkEvents
from switch.bank.stans import NoStanAhead, Stans
from switch.sequences import Sequences, stan

__all__ = ["BankLinkClient", "BankLinkPool", "LinkDown", "LinkLost", "NoStanAhead", "Stans"]

log = logging.getLogger("medswitch.bank.out")


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


class BankLinkClient:
    def __init__(
        self,
        settings: OutboundSettings,
        hsm: Hsm,
        zak: KeyRef | MacKeys,
        clock: Callable[[], datetime] = datetime.now,
        stans: Stans | Iterator[int] | None = None,
        events: LinkEvents | None = None,
    ) -> None:
        self.settings = settings
        self.events = events or LinkEvents(settings.host)  # a log line each; metrics if given
        self.hsm = hsm
        self.keys: MacKeys = FixedKey(zak) if isinstance(zak, KeyRef) else zak
        self.clock = clock
        self.codec = Codec(BANK)
        self.unmatched = 0  # responses that matched no pending request (late ones)
        self.connects = 0
        self.sent = 0  # requests sent on this connection
        self._stan: Stans | Iterator[int] = stans if stans is not None else Stans()
        self._pending: dict[str, asyncio.Future[BankReply]] = {}
        self._expired: collections.deque[str] = collections.deque(maxlen=256)  # late ones
        self._writer: asyncio.StreamWriter | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._up.is_set()

    @property
    def connected(self) -> bool:
        """Connected (signed on or not)."""
        return self._writer is not None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._pending.values():
            future.cancel()

    async def wait_up(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout_s)
        return self.up

    def envelope(self) -> dict[str, Any]:
        """F11, F7, F32 of a new request (F11 from the numbers drawn ahead)."""
        return self._envelope(next(self._stan))

    async def next_envelope(self) -> dict[str, Any]:
        """F11, F7, F32 of a new request, F11 drawn from the sequence when none is ahead."""
        source = self._stan
        number = await source.draw() if isinstance(source, Stans) else next(source)
        return self._envelope(number)

    def _envelope(self, number: int) -> dict[str, Any]:
        return {
            "stan": stan(number),
            "transmitted": self.clock().strftime("%m%d%H%M%S"),
            "acquirer_id": self.settings.acquirer_id,
        }

    async def request(self, typed: BankMessage) -> BankReply:
        """Send ``typed`` and wait for its response; LinkDown or TimeoutError otherwise."""
        if not self.up:
            raise LinkDown(f"bank link {self.settings.host}:{self.settings.port} is down")
        self.sent += 1
        return await self._exchange(typed)

    async def _exchange(self, typed: BankMessage) -> BankReply:
        writer = self._writer
        if writer is None:
            raise LinkDown("not connected")
        mti, _, _ = typed.codes()
        key = reply_key(mti, typed.stan, typed.transmitted, typed.acquirer_id)
        future: asyncio.Future[BankReply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            payload = await self._encode(typed, mac=not mti.startswith("08"))
            writer.write(encode_frame(payload, LengthFormat.ASCII4))
            self.events.sent(typed, mti)
            reply = await asyncio.wait_for(future, self.settings.timeout_s)
        except TimeoutError:
            self.events.timed_out(typed)
            raise
        finally:
            self._pending.pop(key, None)
            if future.cancelled():  # timed out: its answer, if it comes, is late
                self._expired.append(key)
        self.events.answered(typed, reply)
        return reply

    async def _encode(self, typed: BankMessage, *, mac: bool) -> bytes:
        message = bank.build(typed)
        if not mac:
            return self.codec.encode(message)
        zak = await self.keys.current()
        if zak is None:
            raise LinkDown("the link has no ZAK")
        fields = dict(message.fields)
        fields[128] = bytes(8)
        payload = self.codec.encode(Message(message.mti, fields))
        code = await self.hsm.generate_mac(zak, MacAlgorithm.X9_19, self.codec.mac_block(payload))
        return self.codec.with_mac(payload, code)

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial_s
        while not self._closing:
            try:
                await self._session()
                backoff = self.settings.backoff_initial_s
                ended = ConnectionResetError("the connection was closed")
                self.events.link_failed(self.settings.host, self.settings.port, ended)
            except (OSError, ConnectionError, TimeoutError, CodecError) as err:
                self.events.link_failed(self.settings.host, self.settings.port, err)
            self._up.clear()
            await asyncio.sleep(backoff)  # close() cancels the task, ending the sleep
            backoff = min(backoff * 2, self.settings.backoff_max_s)

    async def _session(self) -> None:
        """One connection: connect, read in the background, sign on, echo when idle."""
        settings = self.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port), settings.timeout_s
        )
        self._writer = writer
        self.connects += 1
        reading = asyncio.ensure_future(self._read(reader))
        try:
            reply = await self._exchange(BankSignOn(**await self.next_envelope()))
            if reply.response_code != "00":
                raise ConnectionError(f"sign-on refused {reply.response_code}")
            self._up.set()
            self.events.signed_on(settings.host, settings.port)
            while not reading.done():
                done, _ = await asyncio.wait({reading}, timeout=settings.echo_idle_s)
                if not done:
                    echo = await self._exchange(BankEcho(**await self.next_envelope()))
                    if echo.response_code != "00":
                        raise ConnectionError(f"echo refused {echo.response_code}")
        finally:
            self._up.clear()
            self._writer = None
            writer.close()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(LinkLost("the connection was lost"))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(LengthFormat.ASCII4, self.settings.frame_bytes_max)
        while data := await reader.read(65536):
            try:
                frames = decoder.feed(data)
            except FramingError as err:
                log.warning("bank link: %s", err)
                return
            for frame in frames:
                await self._deliver(frame)

    async def _deliver(self, frame: bytes) -> None:
        try:
            reply = bank.parse(self.codec.decode(frame))
        except CodecError as err:
            log.warning("bank link: unreadable response: %s", err)
            self.events.dropped("unreadable", frame[:4].decode("ascii", "replace"), None)
            return
        if not isinstance(reply, BankReply):
            log.warning("bank link: unexpected request %s from the bank", reply.codes()[0])
            return
        if not reply.mti.startswith("08") and not await self._mac_ok(frame, reply.mac):
            self.events.dropped(
                "missing_mac" if reply.mac is None else "bad_mac", reply.mti, reply.stan
            )
            return
        key = reply_key(reply.mti, reply.stan, reply.transmitted, reply.acquirer_id)
        future = self._pending.get(key)
        if future is None or future.done():
            self.unmatched += 1
            late = key in self._expired
            self.events.dropped("late" if late else "unmatched", reply.mti, reply.stan)
            return
        future.set_result(reply)

    async def _mac_ok(self, frame: bytes, mac: bytes | None) -> bool:
        if mac is None:
            return False
        block = self.codec.mac_block(frame)
        for zak in await self.keys.accepted():
            if await self.hsm.verify_mac(zak, MacAlgorithm.X9_19, block, mac):
                return True
        return False


class BankLinkPool:
    """Several connections to one bank: requests spread round-robin over those signed on, so
    one failing connection does not stop the others; STANs from one sequence (a response is
    matched on its own connection, and F11 stays unique on the link)."""

    def __init__(self, clients: list[BankLinkClient], stans: Stans | None = None) -> None:
        if not clients:
            raise ValueError("a pool needs a connection")
        self.clients = clients
        self.stans = stans
        self._next = itertools.count()

    @classmethod
    def open(
        cls,
        settings: OutboundSettings,
        hsm: Hsm,
        keys: KeyRef | MacKeys,
        clock: Callable[[], datetime],
        connections: int,
        sequences: Sequences | None = None,
        events: LinkEvents | None = None,
    ) -> BankLinkPool:
        """``connections`` to one bank sharing one STAN source: the ``sequences`` when given
        (the daemon's), else counting in the process."""
        stans = Stans(sequences)
        return cls(
            [
                BankLinkClient(settings, hsm, keys, clock, stans, events)
                for _ in range(max(1, connections))
            ],
            stans,
        )

    @property
    def settings(self) -> OutboundSettings:
        return self.clients[0].settings

    @property
    def up(self) -> bool:
        return any(client.up for client in self.clients)

    @property
    def connected(self) -> bool:
        return any(client.connected for client in self.clients)

    @property
    def unmatched(self) -> int:
        return sum(client.unmatched for client in self.clients)

    @property
    def connects(self) -> int:
        return sum(client.connects for client in self.clients)

    def start(self) -> None:
        for client in self.clients:
            client.start()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if self.stans is not None:
            await self.stans.close()

    async def wait_up(self, timeout_s: float) -> bool:
        for _ in range(max(1, int(timeout_s / 0.05))):
            if self.up:
                return True
            await asyncio.sleep(0.05)
        return self.up

    def envelope(self) -> dict[str, Any]:
        return self.clients[0].envelope()

    async def next_envelope(self) -> dict[str, Any]:
        return await self.clients[0].next_envelope()

    async def request(self, typed: BankMessage) -> BankReply:
        start = next(self._next)
        count = len(self.clients)
        for offset in range(count):
            client = self.clients[(start + offset) % count]
            if client.up:
                return await client.request(typed)
        raise LinkDown(f"bank link {self.settings.host}:{self.settings.port}: no connection up")


class OutboundSavings:
    """The savings issuer as the EP load handlers see it (routing.bank_context.SavingsLink):
    one bank, its link (a connection or a pool of them), and where its current ZPK is found."""

    def __init__(
        self,
        link: BankLinkClient | BankLinkPool,
        bank_id: str,
        pin_key: Callable[[], Awaitable[KeyRef | None]],
    ) -> None:
        self.link = link
        self._bank_id = bank_id
        self._pin_key = pin_key

    @property
    def bank_id(self) -> str:
        return self._bank_id

    async def pin_key(self) -> KeyRef | None:
        return await self._pin_key()

    async def envelope(self) -> dict[str, str]:
        envelope: dict[str, str] = await self.link.next_envelope()
        return envelope

    async def debit(self, request: SavingsDebit) -> str:
        try:
            return (await self.link.request(request)).response_code
        except (TimeoutError, LinkLost):
            return TIMED_OUT
        except LinkDown:
            return LINK_DOWN

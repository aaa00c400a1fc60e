"""An outbound bank link (the bank as issuer of savings accounts): one persistent connection
with sign-on on connect, echo when idle, reconnect with capped exponential backoff (less up to
10 % jitter), requests multiplexed and matched to their responses by (message class, F11, F7,
F32), a timeout per request, and late or unknown responses logged as unmatched (ideas from moov-io's
iso8583-connection and jPOS QMUX).

The link speaks its bank's dialect (:mod:`switch.bank.dialect`): framing, encodings, which
messages carry a MAC (F128, X9.19 under the link's ZAK) and which responses must. A response
whose MAC is missing or does not verify where the dialect requires one is dropped as if it never
came (the request then times out); every dropped response is logged with its reason and given
to ``on_drop`` (``missing_mac``, ``bad_mac``, ``unmatched``, ``late``, ``unreadable``).

The bank may start requests on this connection too (:mod:`switch.bank.outbound_requests`):
its echo and sign-on are answered 00, a sign-off 00 (no requests go out until it signs on
again), anything else refused with a code; a request that does not decode is answered 30 with
its envelope.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from hsm.interface import Hsm
from hsm.keys import KeyRef
from messages import bank
from messages.bank import BankEcho, BankMessage, BankReply, BankSignOn, SavingsDebit
from messages.codec import Message
from messages.errors import CodecError, FramingError
from routing.bank_context import LINK_DOWN, TIMED_OUT
from switch import trace
from switch.bank import outbound_requests
from switch.bank.link_types import (
    FixedKey,
    LinkDown,
    LinkLost,
    MacKeys,
    OutboundSettings,
    jittered,
    reply_key,
)
from switch.bank.observe import LinkEvents
from switch.bank.stans import NoStanAhead, Stans
from switch.bank.wire import LinkWire
from switch.sequences import Sequences, stan

__all__ = [
    "BankLinkClient",
    "BankLinkPool",
    "FixedKey",
    "LinkDown",
    "LinkLost",
    "MacKeys",
    "NoStanAhead",
    "OutboundSettings",
    "Stans",
    "reply_key",
]

log = logging.getLogger("medswitch.bank.out")
TIMED_OUT_KEPT = 1024  # keys of timed-out requests remembered, to tell a late answer


class BankLinkClient:
    def __init__(
        self,
        settings: OutboundSettings,
        hsm: Hsm,
        zak: KeyRef | MacKeys,
        clock: Callable[[], datetime] = datetime.now,
        stans: Stans | Iterator[int] | None = None,
        on_drop: Callable[[str], None] | None = None,
        events: LinkEvents | None = None,
    ) -> None:
        self.settings = settings
        # A log line for each request, response, timeout and link failure; metrics if given.
        self.events = events or LinkEvents(settings.bank_id or settings.host)
        self.hsm = hsm
        self.keys: MacKeys = FixedKey(zak) if isinstance(zak, KeyRef) else zak
        self.clock = clock
        self.wire = LinkWire(settings.dialect, hsm)
        self.codec = self.wire.codec
        self._peer = f"{settings.host}:{settings.port} outbound"  # as the frame trace names it
        self.on_drop = on_drop  # a response dropped, with its reason (metrics)
        self.unmatched = 0  # responses that matched no pending request (late ones)
        self._draw = random.Random().random  # the reconnect backoff's jitter (not a secret)
        self.signed_off = False  # the bank signed this connection off: nothing goes out
        self.connects = 0
        self.sent = 0  # requests sent on this connection
        self._stan: Stans | Iterator[int] = stans if stans is not None else Stans()
        self._pending: dict[str, asyncio.Future[BankReply]] = {}
        self._timed_out: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._writer: asyncio.StreamWriter | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Connected and signed on (by us, and not signed off by the bank since)."""
        return self._up.is_set() and not self.signed_off

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
            "transmitted": self.settings.dialect.transmitted(self.clock()),
            "acquirer_id": self.settings.acquirer_id,
        }

    async def request(self, typed: BankMessage) -> BankReply:
        """Send ``typed`` and wait for its response; LinkDown or TimeoutError otherwise."""
        if not self.up or self.signed_off:
            raise LinkDown(f"bank link {self.settings.host}:{self.settings.port} is down")
        self.sent += 1
        return await self._exchange(typed)

    async def _exchange(self, typed: BankMessage) -> BankReply:
        writer = self._writer
        if writer is None:
            raise LinkDown("not connected")
        mti, _, network = typed.codes()
        key = reply_key(mti, typed.stan, typed.transmitted, typed.acquirer_id)
        future: asyncio.Future[BankReply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            payload = await self._encode(typed, mac=self.settings.dialect.signs(mti, network))
            writer.write(self.wire.frame(payload))
            trace.frame("bank", "out", self._peer, payload, self.codec)
            self.events.sent(typed, mti)
            reply = await asyncio.wait_for(future, self.settings.timeout_s)
        except TimeoutError:
            self._timed_out[key] = None  # its answer, if it comes, is late
            while len(self._timed_out) > TIMED_OUT_KEPT:
                self._timed_out.popitem(last=False)
            self.events.timed_out(typed)
            raise
        finally:
            self._pending.pop(key, None)
        self.events.answered(typed, reply)
        return reply

    async def _encode(self, typed: BankMessage, *, mac: bool) -> bytes:
        message = bank.build(typed)
        if isinstance(typed, SavingsDebit):
            fields = dict(message.fields)
            optional = self.settings.dialect.debit_fields(
                typed.stan, typed.transmitted, self.clock()
            )
            message = Message(message.mti, {**fields, **optional})
        zak = None
        if mac:
            zak = await self.keys.current()
            if zak is None:
                raise LinkDown("the link has no ZAK")
        return await self.wire.encode(message, zak)

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
            # close() cancels the task, ending the sleep
            await asyncio.sleep(jittered(backoff, self._draw()))
            backoff = min(backoff * 2, self.settings.backoff_max_s)

    async def _session(self) -> None:
        """One connection: connect, read in the background, sign on, echo when idle."""
        settings = self.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port), settings.timeout_s
        )
        self._writer = writer
        self.signed_off = False
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
        decoder = self.wire.decoder(self.settings.frame_bytes_max)
        while data := await reader.read(65536):
            try:
                frames = decoder.feed(data)
            except FramingError as err:
                log.warning("bank link: %s", err)
                return
            for frame in frames:
                await self._deliver(frame)

    async def _deliver(self, frame: bytes) -> None:
        trace.frame("bank", "in", self._peer, frame, self.codec)
        bank_id = self.settings.bank_id
        mti = self.wire.mti_of(frame)
        if mti and int(mti[2]) % 2 == 0:  # the bank starts a request on this connection
            keys = await self.keys.accepted()
            answer = await outbound_requests.answer(self.wire, keys, frame, bank_id)
            if answer.signed_on is not None:
                self.signed_off = not answer.signed_on
            if self._writer is not None and answer.payload:
                self._writer.write(self.wire.frame(answer.payload))
                trace.frame("bank", "out", self._peer, answer.payload, self.codec)
            return
        try:
            message = self.codec.decode(frame)
            reply = bank.parse(message)
        except CodecError as err:
            self._dropped("unreadable", "bank %s link: unreadable response: %s", bank_id, err)
            return
        if not isinstance(reply, BankReply):  # an MTI its request class would have taken
            self._dropped("unreadable", "bank %s link: a request as a response", bank_id)
            return
        check = await self.wire.check(frame, message, await self.keys.accepted())
        if not check.ok:
            why = "carries no MAC (missing)" if check.reason == "missing_mac" else "fails its MAC"
            what = "bank %s link: response %s stan=%s code=%s " + why + "; dropped"
            self._dropped(
                check.reason or "bad_mac", what, bank_id, reply.mti, reply.stan, reply.response_code
            )
            return
        key = reply_key(reply.mti, reply.stan, reply.transmitted, reply.acquirer_id)
        future = self._pending.get(key)
        if future is None or future.done():
            self.unmatched += 1
            reason = "late" if key in self._timed_out else "unmatched"
            what = "bank %s link: " + reason + " response %s stan=%s code=%s"
            self._dropped(reason, what, bank_id, reply.mti, reply.stan, reply.response_code)
            return
        future.set_result(reply)

    def _dropped(self, reason: str, what: str, *args: object) -> None:
        log.warning(what, *args)
        if self.on_drop is not None:
            self.on_drop(reason)


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
        on_drop: Callable[[str], None] | None = None,
        events: LinkEvents | None = None,
    ) -> BankLinkPool:
        """``connections`` to one bank sharing one STAN source: the ``sequences`` when given
        (the daemon's), else counting in the process; ``on_drop`` hears of every response
        dropped, with its reason."""
        stans = Stans(sequences)
        clients = [
            BankLinkClient(settings, hsm, keys, clock, stans, on_drop, events)
            for _ in range(max(1, connections))
        ]
        return cls(clients, stans)

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

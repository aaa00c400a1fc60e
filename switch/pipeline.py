"""One request pipeline for both links, written once: bytes in → decode → parse → admit →
repeat? → route → handler → seal (MAC, encode) → remember → metrics → log → bytes out. What
differs between the terminal interface and the bank link is a :class:`Link` profile
(:class:`switch.terminal_service.TerminalService`, :class:`switch.bank.service.BankService`):
how a frame is read and answered when it does not decode, the link's admission checks (kept
linear, top to bottom, in the profile), its route key, its handler context and its MAC.

Bounded, and what a 96 means for money (specs/terminal-interface.md, "Faults"):

- Every request is answered within ``response_timeout_s`` of its arrival. Its work runs as a
  task of its own; when the deadline passes first the request is answered 96 (system fault),
  and its work is *not* cancelled: a handler stopped half-way could leave a bank's savings
  debit without its ledger posting, or a posting without its review record. It runs to its
  end, and its reply, once known, is remembered as the exchange's answer. A 96 is never
  remembered: a retransmission gets the truth once it is known (while the work still runs it
  waits for it, bounded by its own deadline, and is answered 96 again).
- A ledger that cannot be written (its writer ended) fails the work at once: the request is
  answered 96 at once, with one log line and no traceback (:func:`ledger_unavailable` is the
  one place that recognises it). The ledger wrote nothing for that request; its repeat posts
  once the ledger is back. Work that did commit before the writer was lost posts nothing more
  when repeated (the ledger's transfer ids are idempotent) and is answered afresh.
- A TAC-confirmed debit (0220 advice, 0320 upload) is money the card has already paid. It is
  answered 00 only after its posting committed; a 96 leaves the record with the POS, which
  sends it again (and uploads it at batch settlement) until it is answered 00; and when the
  ledger was only slow, the work still posts when the ledger answers. A 96 never drops what a
  card has paid.
- Any other failure of the work is a fault of the switch: answered 96 as well, logged with its
  traceback, not remembered.

A frame that does not decode is answered 30 by the profile when its MTI is a request the
interface defines and the envelope the peer matches replies by could be read; otherwise (no
MTI, an MTI the interface does not define, a response, no readable STAN) the profile gives no
answer and the connection is closed (the handler returns ``None``: see
`switch.listener`): no reply the peer could match exists, and a closed connection tells it at
once. A message the profile reads but does not answer (a stray reply) gets ``b""``: nothing is
sent and the connection stays open.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ledger.core import LedgerUnavailable
from messages.codec import Codec, Message
from messages.errors import CodecError
from messages.outcome import Outcome
from routing.context import Why
from routing.table import Route
from switch import trace
from switch.logs import Logged, log_message
from switch.metrics import Metrics
from switch.ratelimit import RateLimitedWarnings
from switch.replies import Replay, ReplyCache
from switch.txn_types import transaction_type

log = logging.getLogger("medswitch.pipeline")


class Reply(Protocol):
    """What the pipeline reads of any reply: its MTI and response code."""

    @property
    def mti(self) -> str: ...

    @property
    def response_code(self) -> str: ...


Req = TypeVar("Req", bound=Logged)  # a link's typed request: its log line reads the card and amount
Rep = TypeVar("Rep", bound=Reply)
Key = TypeVar("Key")  # what a reply is MACed under: a terminal's session, a bank link's ZAK
Party = TypeVar("Party")  # who the link admitted: a terminal's record; nothing on a bank link


class Served(NamedTuple, Generic[Rep, Key]):
    """A reply to seal and send: the handler's, or a refusal."""

    reply: Rep
    mac_key: Key | None = None  # None: sent without a MAC
    handler: str = "refused"  # the metrics' and log line's name for who answered
    replay: Replay | None = None  # (message key, digest) to remember the reply under
    reason: str = ""  # a refusal's machine-readable reason for the log line ("": the outcome's)
    bill: str = ""  # the bill the request named, for a refusal's log line


class Repeat(NamedTuple):
    """A retransmission: the original reply, byte for byte."""

    original: bytes


class Admitted(NamedTuple, Generic[Key, Party]):
    """A request that passed its link's checks."""

    mac_key: Key | None  # what the request's MAC verified under; the reply is sealed under it
    message_key: str  # DESIGN §5's message identity
    digest: bytes | None  # of the request's content; None: not remembered (network management)
    party: Party


class Link(Protocol[Req, Rep, Key, Party]):
    """One link's part of the pipeline. ``admit`` holds the link's checks, in order."""

    name: str  # "terminal" | "bank": the metrics' label, the log line's interface
    log: logging.Logger
    codec: Codec  # the link's wire encoding (a bank's dialect): how the frame trace reads it

    def read(self, payload: bytes, peer: str) -> tuple[Message, Req] | None:
        """The decoded frame and its typed request (CodecError when it does not decode); None:
        not answered (a peer not allowed, a reply where a request belongs)."""
        ...

    def format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """The 30 answer to a frame that did not decode; None: close the connection."""
        ...

    async def admit(
        self, request: Req, message: Message, payload: bytes
    ) -> Admitted[Key, Party] | Served[Rep, Key]: ...

    def route(self, request: Req, message: Message) -> Route | None: ...

    async def context(self, request: Req, admitted: Admitted[Key, Party]) -> Any:
        """What the route's handler is given beside the request."""
        ...

    def why(self, context: Any) -> Why | None:
        """The handler's note on why it refused (the log line's reason and bill), read from
        the ``context`` it was given; None: it noted nothing."""
        ...

    async def answered(
        self, request: Req, reply: Rep, admitted: Admitted[Key, Party]
    ) -> Key | None:
        """The handler answered: the link's own state follows (sign-on, sign-off); returns
        the key the reply is sealed under."""
        ...

    def refuse(self, request: Req, outcome: Outcome) -> Rep: ...

    async def seal(self, reply: Rep, mac_key: Key | None) -> bytes:
        """The reply's bytes, MACed under ``mac_key`` when there is one."""
        ...

    def envelope(self, request: Req, message: Message) -> dict[str, str | None]:
        """The link's envelope fields for the message's log line (no card data)."""
        ...


_APPROVED = Outcome.APPROVED.code
_REASONS = {outcome.value: outcome.name.lower() for outcome in Outcome}


def refusal_reason(code: str) -> str:
    """The log line's reason for a refusal whose answerer gave none: its outcome's name.

    >>> refusal_reason("13"), refusal_reason("Q9")
    ('invalid_amount', 'code_Q9')
    """
    return _REASONS.get(code) or f"code_{code}"


def ledger_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the ledger cannot be written now (closed, or its writer ended
    and may be restarting: `ledger.core.LedgerUnavailable`). The one place that recognises it."""
    return isinstance(error, LedgerUnavailable)


class _Exchange:
    """One request's progress, shared by its work, its answer and the deadline sweep."""

    __slots__ = ("answer", "deadline", "late", "mac_key", "message", "peer", "request", "work")

    def __init__(
        self, request: Any, message: Message, peer: str, answer: asyncio.Future[bytes | None]
    ) -> None:
        self.request, self.message, self.peer = request, message, peer
        self.answer = answer  # what the listener awaits: the work's reply, or the late 96
        self.deadline = 0.0  # the loop's time by which it is answered
        self.work: asyncio.Task[None] | None = None
        self.mac_key: Any = None  # set once admitted: a late 96 is sealed under it
        self.late = False  # answered 96 at the deadline; the work goes on


#: How often the deadline sweep drops finished exchanges that a slow one ahead of them keeps
#: (the sweep otherwise runs at the oldest running exchange's deadline).
SWEEP_S = 1.0


class Pipeline(Generic[Req, Rep, Key, Party]):
    """The listener's handler for one link (``handle``).

    Per request: one task (the work) and one future (its answer), no timer. The deadlines are
    kept by one sweep per pipeline: the exchanges in flight, in arrival order, and one timer at
    the oldest running one's deadline (or `SWEEP_S`, whichever is sooner), which answers the
    late ones 96 (their work goes on; its reply is remembered, not sent)."""

    def __init__(
        self,
        *,
        link: Link[Req, Rep, Key, Party],
        replies: ReplyCache,
        metrics: Metrics,
        response_timeout_s: float,
    ) -> None:
        assert response_timeout_s > 0
        self.link = link
        self.replies = replies
        self.metrics = metrics
        self.response_timeout_s = response_timeout_s
        self._late: set[asyncio.Task[None]] = set()  # work answered 96 (or abandoned) running
        self._flight: collections.deque[_Exchange] = collections.deque()  # in arrival order
        self._sweep: asyncio.TimerHandle | None = None
        self._answering: set[asyncio.Task[None]] = set()  # late 96s being sealed
        self._format_warnings = RateLimitedWarnings(link.log)  # a flood must not fill the disk

    @property
    def late(self) -> int:
        """Requests answered 96 at their deadline (or whose answer nobody awaits any more: the
        listener's drain gave up) whose work still runs."""
        self._keep_abandoned()
        return len(self._late)

    async def settle_late(self, timeout_s: float) -> int:
        """Wait (at most ``timeout_s``) for the work answered 96 that still runs, so that a
        drain closes the ledger only after it; returns how many are still running."""
        self._keep_abandoned()
        if self._late:
            await asyncio.wait(set(self._late), timeout=timeout_s)
        return len(self._late)

    def handle(self, payload: bytes, peer: str) -> asyncio.Future[bytes | None]:
        """The reply to ``payload`` (a future: cancelling it leaves the work running)."""
        link = self.link
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes | None] = loop.create_future()
        trace.frame(link.name, "in", peer, payload, link.codec)  # if tracing (switch.trace)
        try:
            read = link.read(payload, peer)
        except CodecError as err:
            self.metrics.format_errors.labels(link.name).inc()
            self._format_warnings.warning("%s: format error from %s: %s", link.name, peer, err)
            refusal = link.format_error(payload, err)
            if refusal:
                trace.frame(link.name, "out", peer, refusal, link.codec)
            answer.set_result(refusal)  # None: no message type defined; the listener closes
            return answer
        if read is None:
            answer.set_result(b"")
            return answer
        message, request = read
        exchange = _Exchange(request, message, peer, answer)
        exchange.deadline = loop.time() + self.response_timeout_s
        exchange.work = loop.create_task(self._run(exchange, payload))
        flight = self._flight
        while flight and flight[0].work.done():  # type: ignore[union-attr]
            flight.popleft()  # finished: most leave in about the order they came
        flight.append(exchange)
        if self._sweep is None:
            self._sweep = loop.call_at(min(exchange.deadline, loop.time() + SWEEP_S), self._swept)
        return answer

    async def _run(self, exchange: _Exchange, payload: bytes) -> None:
        """The work, its reply the exchange's answer unless it was answered 96 already."""
        try:
            encoded = await self._work(exchange.request, exchange.message, payload, exchange)
        except Exception as error:  # the 96 could not be sealed either
            if exchange.late or exchange.answer.done():
                self.link.log.error("%s: late work failed", self.link.name, exc_info=error)
            else:
                exchange.answer.set_exception(error)
            return
        if not exchange.late:
            self._answer(exchange, encoded)

    def _swept(self) -> None:
        """The sweep's timer: answer 96 what passed its deadline; keep what still runs."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_at = now + SWEEP_S
        running: collections.deque[_Exchange] = collections.deque()
        for exchange in self._flight:
            if exchange.work.done():  # type: ignore[union-attr]
                continue
            running.append(exchange)
            if exchange.late or exchange.answer.done():
                continue  # answered already (or nobody awaits it): the work just runs on
            if exchange.deadline <= now:
                self._timed_out(exchange)
            else:
                next_at = min(next_at, exchange.deadline)
        self._flight = running
        if running:
            self._sweep = loop.call_at(next_at, self._swept)

    def _keep_abandoned(self) -> None:
        """Work whose answer was cancelled (the listener's drain) runs on: kept as late."""
        for exchange in self._flight:
            work = exchange.work
            assert work is not None
            if exchange.answer.cancelled() and not work.done() and work not in self._late:
                self._keep(work)

    async def _work(
        self, request: Req, message: Message, payload: bytes, exchange: _Exchange
    ) -> bytes:
        started = time.perf_counter()
        link = self.link
        try:
            served = await self._serve(request, message, payload, exchange)
        except Exception as error:  # the work failed: 96, never remembered
            served = self._fault(request, error, exchange)
        if isinstance(served, Repeat):
            if not exchange.late:
                self.metrics.answered(link.name, transaction_type(request), message.mti, "repeat")
            return served.original
        reply, mac_key, handler, replay, reason, bill = served
        try:
            encoded = await self.replies.remember(replay, link.seal(reply, mac_key))
        except Exception as error:  # no MAC (the HSM failed): 96, without one
            link.log.error("%s: the reply was not sealed: answered 96", link.name, exc_info=error)
            reply, handler = link.refuse(request, Outcome.SYSTEM_FAULT), "failed"
            reason = "reply_not_sealed"
            encoded = await link.seal(reply, None)
        if not exchange.late:
            code = reply.response_code
            self.metrics.answered(link.name, transaction_type(request), reply.mti, code)
            self.metrics.handled(handler, code, time.perf_counter() - started)
        if link.log.isEnabledFor(logging.INFO):
            envelope = link.envelope(request, message)
            if exchange.late:
                envelope["late"] = "yes"  # answered 96 at the deadline
            code = reply.response_code
            # every refusal says why (and which bill), no card data; an approval when its
            # handler noted something (e.g. a settlement without its visit script)
            if code != _APPROVED or reason:
                envelope["reason"] = reason or refusal_reason(code)
                if bill:
                    envelope["bill"] = bill
            log_message(link.log, link.name, envelope, request, code, handler, started)
        return encoded

    async def _serve(
        self, request: Req, message: Message, payload: bytes, exchange: _Exchange
    ) -> Served[Rep, Key] | Repeat:
        link = self.link
        admitted = await link.admit(request, message, payload)
        if isinstance(admitted, Served):
            return admitted
        mac_key = exchange.mac_key = admitted.mac_key
        replay = None
        if admitted.digest is not None:
            key, digest = admitted.message_key, admitted.digest
            earlier = await self.replies.earlier(key, digest)
            if isinstance(earlier, bytes):
                return Repeat(earlier)
            if earlier is Outcome.DUPLICATE:
                refusal = link.refuse(request, Outcome.DUPLICATE)
                return Served(refusal, mac_key, "duplicate", reason="duplicate_other_content")
            self.replies.begin(key, digest)
            replay = (key, digest)
        route = link.route(request, message)
        if route is None or route.handler is None:
            refusal = link.refuse(request, Outcome.FUNCTION_NOT_SUPPORTED)
            return Served(refusal, mac_key, "unrouted", replay, "no_route")
        try:
            context = await link.context(request, admitted)
            reply: Rep = await route.handler(request, context)
            mac_key = await link.answered(request, reply, admitted)
        except BaseException:  # copies waiting for this reply are handled afresh
            if replay is not None:
                self.replies.finish(replay[0], replay[1], None)
            raise
        why = link.why(context)
        if why is not None:
            return Served(reply, mac_key, route.name, replay, why.reason, why.bill_id)
        return Served(reply, mac_key, route.name, replay)

    def _fault(self, request: Req, error: Exception, exchange: _Exchange) -> Served[Rep, Key]:
        link = self.link
        if ledger_unavailable(error):
            link.log.error("%s: the ledger is unavailable (%s): answered 96", link.name, error)
            handler, reason = "unavailable", "ledger_unavailable"
        else:
            link.log.error("%s: the request failed: answered 96", link.name, exc_info=error)
            handler, reason = "failed", "fault"
        refusal = link.refuse(request, Outcome.SYSTEM_FAULT)
        return Served(refusal, exchange.mac_key, handler, reason=reason)

    def _timed_out(self, exchange: _Exchange) -> None:
        """The deadline passed first: 96 now (not remembered); the work goes on."""
        exchange.late = True
        assert exchange.work is not None
        self._keep(exchange.work)
        link = self.link
        request = exchange.request
        envelope = link.envelope(request, exchange.message)
        link.log.warning(
            "%s: no answer within %.1f s (%s): answered 96; its work goes on",
            link.name,
            self.response_timeout_s,
            " ".join(f"{name}={value}" for name, value in envelope.items()),
        )
        refusal = link.refuse(request, Outcome.SYSTEM_FAULT)
        kind = transaction_type(request)
        self.metrics.answered(link.name, kind, refusal.mti, refusal.response_code)
        sealing = asyncio.get_running_loop().create_task(self._answer_late(exchange, refusal))
        self._answering.add(sealing)
        sealing.add_done_callback(self._answering.discard)

    async def _answer_late(self, exchange: _Exchange, refusal: Rep) -> None:
        try:
            encoded = await self.link.seal(refusal, exchange.mac_key)
        except Exception as error:  # the listener logs it (and sends nothing)
            if not exchange.answer.done():
                exchange.answer.set_exception(error)
            return
        self._answer(exchange, encoded)

    def _answer(self, exchange: _Exchange, encoded: bytes) -> None:
        """The exchange's reply, unless it was answered already (or nobody awaits it)."""
        if not exchange.answer.done():
            link = self.link
            trace.frame(link.name, "out", exchange.peer, encoded, link.codec)
            exchange.answer.set_result(encoded)

    def _keep(self, work: asyncio.Task[None]) -> None:
        self._late.add(work)
        work.add_done_callback(self._late.discard)

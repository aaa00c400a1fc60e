"""The terminal interface's pipeline: bytes in → checks → route → handler → MACed reply out.

Short and linear, like the handlers it calls: decode (30 on a format error), parse, registered
terminal (97), institution (03), signed on (22), MAC (A0), batch (77), route (40), handler,
build, MAC, encode. Every answer is counted by MTI and response code.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from hsm.interface import Hsm, MacAlgorithm, SignOnKeys
from ledger.core import Ledger
from ledger.medical.service import MedicalService
from messages import terminal_table
from messages.codec import Codec, FieldValue, Message
from messages.envelope import message_class
from messages.errors import CodecError
from messages.outcome import Outcome
from messages.terminal import SignOn, TerminalMessage, TerminalReply
from routing.context import CardDirectory, OfflineLimits, RequestContext, host_stamps
from routing.table import RouteTable
from switch.logs import log_message
from switch.metrics import Metrics
from switch.replies import ReplyCache
from switch.sessions import Sessions, SqliteTerminals

log = logging.getLogger("medswitch.terminal")

# (reply, the session that MACs it, handler name, (message key, digest) to remember it under)
Served = tuple[TerminalReply, SignOnKeys | None, str, tuple[str, bytes] | None]

_MAC_ERROR = Outcome.MAC_ERROR.code  # read once: an enum's value is two Python calls away

# Envelope fields a format-error reply may echo: never card data.
_ECHOED = (3, 11, 25, 41, 42, 60)


class TerminalService:
    def __init__(
        self,
        codec: Codec,
        hsm: Hsm,
        terminals: SqliteTerminals,
        sessions: Sessions,
        cards: CardDirectory,
        ledger: Ledger,
        offline: OfflineLimits,
        medical: MedicalService | None,
        routes: RouteTable,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.codec = codec
        self.hsm = hsm
        self.terminals = terminals
        self.sessions = sessions
        self.cards = cards
        self.ledger = ledger
        self.replies = ReplyCache()
        self.offline = offline
        self.medical = medical
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        self._classes: dict[str, tuple[str, bytes]] = {}

    async def handle(self, payload: bytes, peer: str) -> bytes | None:
        try:
            message = self.codec.decode(payload)
            request = terminal_table.parse(message)
        except CodecError as err:
            self.metrics.format_errors.labels("terminal").inc()
            log.warning("format error from %s: %s", peer, err)
            return self._format_error(payload, err)
        started = time.perf_counter()
        served = await self._serve(request, message, payload)
        if isinstance(served, bytes):  # a retransmission: the original reply, byte for byte
            self.metrics.answered("terminal", message.mti, "repeat")
            return served
        reply, session, handler, replay = served
        encoded = await self.replies.remember(replay, self._encode(reply, session))
        self.metrics.answered("terminal", reply.mti, reply.response_code)
        self.metrics.handled(handler, time.perf_counter() - started)
        if log.isEnabledFor(logging.INFO):
            envelope = {
                "terminal": request.terminal_id,
                "mti": message.mti,
                "stan": request.stan,
                "batch": request.batch,
            }
            log_message(log, "terminal", envelope, request, reply.response_code, handler, started)
        return encoded

    async def _serve(
        self, request: TerminalMessage, message: Message, payload: bytes
    ) -> Served | bytes:
        terminal = self.terminals.kept(request.terminal_id) or await self.terminals.get(
            request.terminal_id
        )  # the cache's record without a coroutine, as nearly every message finds it
        if terminal is None or not terminal.active:
            return self._reply(request, Outcome.TERMINAL_NOT_REGISTERED), None, "refused", None
        if terminal.institution_id != request.institution_id.strip():
            return self._reply(request, Outcome.INVALID_MERCHANT), None, "refused", None
        session = None
        block = self.codec.mac_block(payload)  # what the MAC covers; digested below
        if not isinstance(request, SignOn):
            terminal_id = terminal.terminal_id
            session = self.sessions.kept(terminal_id) or await self.sessions.get(terminal_id)
            mac = message.fields.get(64)
            if (
                session is None
                or not isinstance(mac, bytes)
                or not await self.hsm.verify_mac(session.mak, MacAlgorithm.CUP_ECB, block, mac)
            ):  # not the current keys: a sign-on's pending ones (then current), or 22 / A0
                proven = await self.sessions.proven(terminal_id, self.hsm, block, mac)
                if isinstance(proven, Outcome):
                    return self._reply(request, proven), None, "refused", None
                session = proven
            if request.batch != terminal.batch:
                terminal = await self.terminals.get(terminal.terminal_id, refresh=True)
                if terminal is None or request.batch != terminal.batch:
                    refusal = self._reply(request, Outcome.BATCH_MISMATCH)
                    return refusal, session, "refused", None
        mti, processing_code, _, txn_type, network_code = request.codes()
        kind, kind_bytes = self._class_of(mti)
        message_key = f"{terminal.terminal_id}|{request.batch}|{request.stan}|{kind}"
        replay = None
        if not mti.startswith("08"):  # network management is simply done again
            # The same request, with its MTI's repeat digit normalised (0401 repeats 0400).
            digest = hashlib.blake2b(kind_bytes + block[2:], digest_size=16).digest()
            earlier = await self.replies.earlier(message_key, digest)
            if isinstance(earlier, bytes):
                return earlier
            if earlier is Outcome.DUPLICATE:
                return self._reply(request, Outcome.DUPLICATE), session, "duplicate", None
            self.replies.begin(message_key, digest)
            replay = (message_key, digest)
        route = self.routes.match(
            "terminal",
            kind,
            processing_code,
            txn_type,
            network_code,
            None,
            getattr(request, "pan", None) or "",
        )
        if route is None or route.handler is None:
            refusal = self._reply(request, Outcome.FUNCTION_NOT_SUPPORTED)
            return refusal, session, "unrouted", replay
        context = RequestContext(
            terminal,
            session,
            self.clock(),
            self.hsm,
            self.terminals,
            self.sessions,
            self.cards,
            self.ledger,
            message_key,
            self.offline,
            self.medical,
        )
        try:
            reply: TerminalReply = await route.handler(request, context)
        except BaseException:
            if replay is not None:
                self.replies.finish(replay[0], replay[1], None)
            raise
        if isinstance(request, SignOn):  # an 0810 with keys is MACed under them (pending)
            approved = reply.response_code == Outcome.APPROVED.code
            session = self.sessions.issued(terminal.terminal_id) if approved else None
        return reply, session, route.name, replay

    def _class_of(self, mti: str) -> tuple[str, bytes]:
        """The MTI's message class, as text and as its two BCD bytes (kept: a few MTIs)."""
        found = self._classes.get(mti)
        if found is None:
            kind = message_class(mti)
            found = self._classes[mti] = (kind, bytes.fromhex(kind))
        return found

    def _reply(self, request: TerminalMessage, outcome: Outcome) -> TerminalReply:
        host_time, host_date = self.stamps()
        return terminal_table.reply_to(
            request, outcome.code, host_time=host_time, host_date=host_date
        )

    def stamps(self) -> tuple[str, str]:
        """Host time hhmmss and date MMDD: every reply carries them (they set the clock)."""
        return host_stamps(self.clock())

    async def _encode(self, reply: TerminalReply, session: SignOnKeys | None) -> bytes:
        if session is None or reply.response_code == _MAC_ERROR:
            return self.codec.encode(terminal_table.build(reply))
        message = terminal_table.build(reply)
        fields = dict(message.fields)
        fields[64] = bytes(8)
        payload = self.codec.encode(Message(message.mti, fields, message.tpdu, message.header))
        mac = await self.hsm.generate_mac(
            session.mak, MacAlgorithm.CUP_ECB, self.codec.mac_block(payload)
        )
        return self.codec.with_mac(payload, mac)

    def _format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """Answer 30, echoing what could be read of the envelope; nothing if not even that."""
        prefix = self.codec.prefix_bytes
        if len(payload) < prefix + 2:
            return None
        tpdu, header = payload[:5], payload[5:prefix]
        mti = payload[prefix : prefix + 2].hex()
        if not mti.isdigit() or mti[2] not in "02468":
            return None
        fields: dict[int, FieldValue] = {39: Outcome.FORMAT_ERROR.code}
        fields.update(err.envelope)
        reply = Message(
            f"{(int(mti) // 10) * 10 + 10:04d}", fields, tpdu[:1] + tpdu[3:5] + tpdu[1:3], header
        )
        try:
            return self.codec.encode(reply)
        except CodecError:
            return self.codec.encode(Message(reply.mti, {39: "30"}, reply.tpdu, reply.header))

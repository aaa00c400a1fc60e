"""The inbound bank link's pipeline: bytes in → checks → route → handler → MACed reply out.

The bank host is the acquirer for its counters. Shaped like :mod:`switch.terminal_service`:
allowed peer (else no answer), decode (30 with the envelope it could read), parse, acquirer F32
(03), MAC X9.19 under the link's ZAK on every financial message (A0, moving nothing), link signed
on (91 before a 0800 F70 = 001), retransmission by (F32, F7, F11, class) → the original reply
byte for byte (94 for the same key with other content), route (40), handler, build, MAC, encode.
Network management (sign-on, sign-off, echo) needs no MAC; when it carries one it must verify.

The link's sign-on state lives in this process (one inbound link per bank; a bank that finds the
switch restarted signs on again, as bank hosts do after any reconnect).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef, KeyUsage
from ledger.core import Ledger
from messages import bank
from messages.bank import (
    BankMessage,
    BankReply,
    BankSignOff,
    BankSignOn,
    CardService,
    CounterEpLoad,
)
from messages.codec import Codec, FieldValue, Message
from messages.envelope import message_class
from messages.errors import CodecError
from messages.outcome import Outcome
from routing.bank_context import BankContext, CardStatusRegister, SavingsLink
from routing.context import CardDirectory, OfflineLimits, RequestContext, TerminalRecord
from routing.table import RouteTable
from switch.bank.keys import LinkKeys, inbound_aliases
from switch.config import BankConfig
from switch.logs import log_message
from switch.metrics import Metrics
from switch.replies import ReplyCache
from switch.sessions import Sessions, SqliteTerminals

log = logging.getLogger("medswitch.bank")

# (reply, the ZAK to MAC it under or None, handler name, (message key, digest) to remember it)
Served = tuple[BankReply, KeyRef | None, str, tuple[str, bytes] | None]


class BankService:
    def __init__(
        self,
        codec: Codec,
        hsm: Hsm,
        link: BankConfig,
        terminals: SqliteTerminals,
        sessions: Sessions,
        cards: CardDirectory,
        card_status: CardStatusRegister,
        ledger: Ledger,
        offline: OfflineLimits,
        routes: RouteTable,
        metrics: Metrics,
        clock: Callable[[], datetime],
        savings: SavingsLink | None = None,
        keys: LinkKeys | None = None,
    ) -> None:
        self.savings = savings
        self.keys = keys or LinkKeys(hsm, sessions, inbound_aliases(link), link.key_overlap_s)
        self.codec = codec
        self.hsm = hsm
        self.link = link
        self.terminals = terminals
        self.sessions = sessions
        self.cards = cards
        self.card_status = card_status
        self.ledger = ledger
        self.offline = offline
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        self.replies = ReplyCache()
        self.signed_on: set[str] = set()  # acquirer ids (F32) whose link is signed on

    def peer_allowed(self, peer: str) -> bool:
        allowed = self.link.allowed_peers
        return not allowed or peer.rpartition(":")[0] in allowed

    async def handle(self, payload: bytes, peer: str) -> bytes | None:
        if not self.peer_allowed(peer):
            log.warning("bank link: %s is not an allowed peer; not answered", peer)
            return None
        try:
            message = self.codec.decode(payload)
            request = bank.parse(message)
        except CodecError as err:
            self.metrics.format_errors.labels("bank").inc()
            log.warning("bank link: format error from %s: %s", peer, err)
            return self._format_error(payload, err)
        if isinstance(request, BankReply):
            log.warning("bank link: unexpected reply %s from %s", message.mti, peer)
            return None
        started = time.perf_counter()
        served = await self._serve(request, message, payload)
        if isinstance(served, bytes):  # a retransmission: the original reply, byte for byte
            self.metrics.answered("bank", message.mti, "repeat")
            return served
        reply, zak, handler, replay = served
        encoded = await self.replies.remember(replay, self._encode(reply, zak))
        self.metrics.answered("bank", reply.mti, reply.response_code)
        self.metrics.handled(handler, time.perf_counter() - started)
        if log.isEnabledFor(logging.INFO):
            envelope = {
                "acquirer": request.acquirer_id,
                "terminal": request.terminal_id,
                "mti": message.mti,
                "stan": request.stan,
                "transmitted": request.transmitted,
            }
            log_message(log, "bank", envelope, request, reply.response_code, handler, started)
        return encoded

    async def _serve(
        self, request: BankMessage, message: Message, payload: bytes
    ) -> Served | bytes:
        mti = message.mti
        financial = not mti.startswith("08")
        if request.acquirer_id != self.link.acquirer_id:
            return self._refuse(request, Outcome.INVALID_MERCHANT), None, "refused", None
        mac = message.fields.get(128)
        zak = None  # the key the request's MAC verified under: the reply is MACed under it
        if financial or mac is not None:
            zak = await self._mac_key(payload, mac)
            if zak is None:
                return self._refuse(request, Outcome.MAC_ERROR), None, "refused", None
        if financial and request.acquirer_id not in self.signed_on:
            refusal = self._refuse(request, Outcome.ISSUER_INOPERATIVE)
            return refusal, zak, "refused", None
        message_key = f"{request.acquirer_id}|{request.transmitted}|{request.stan}|"
        message_key += message_class(mti)
        replay = None
        if financial:  # network management is simply done again
            block = message_class(mti).encode() + self.codec.mac_block(payload)[4:]
            digest = hashlib.blake2b(block, digest_size=16).digest()
            earlier = await self.replies.earlier(message_key, digest)
            if isinstance(earlier, bytes):
                return earlier
            if earlier is Outcome.DUPLICATE:
                return self._refuse(request, Outcome.DUPLICATE), zak, "duplicate", None
            self.replies.begin(message_key, digest)
            replay = (message_key, digest)
        processing = message.fields.get(3)
        network = message.fields.get(70)
        processing_code = processing if isinstance(processing, str) else None
        route = self.routes.match(
            "bank",
            message_class(mti),
            processing_code,
            None,
            network if isinstance(network, str) else None,
            processing_code[2:4] if processing_code else None,
            getattr(request, "pan", None) or "",
        )
        if route is None or route.handler is None:
            refusal = self._refuse(request, Outcome.FUNCTION_NOT_SUPPORTED)
            return refusal, zak, "unrouted", replay
        try:
            context = await self._context(request, message_key)
            reply: BankReply = await route.handler(request, context)
        except BaseException:
            if replay is not None:
                self.replies.finish(replay[0], replay[1], None)
            raise
        if reply.response_code == Outcome.APPROVED.code:
            if isinstance(request, BankSignOn):
                self.signed_on.add(request.acquirer_id)
            elif isinstance(request, BankSignOff):
                self.signed_on.discard(request.acquirer_id)
        return reply, zak, route.name, replay

    async def _context(self, request: BankMessage, message_key: str) -> BankContext:
        counter = TerminalRecord(
            request.terminal_id or "", request.acquirer_id, "bank_counter", "active", "000000"
        )
        base = RequestContext(
            counter,
            None,
            self.clock(),
            self.hsm,
            self.terminals,
            self.sessions,
            self.cards,
            self.ledger,
            f"bank|{message_key}",
            self.offline,
        )
        link = self.link
        zpk_in = None
        if isinstance(request, CardService | CounterEpLoad):  # PINs travel in these
            zpk_in = await self.sessions.latest(link.zpk_alias, KeyUsage.ZPK)
        return BankContext(
            base, self.card_status, link.acquirer_id, self.savings, zpk_in, self.keys
        )

    async def _mac_key(self, payload: bytes, mac: FieldValue | None) -> KeyRef | None:
        """The ZAK (current, or the previous within the overlap) the MAC verifies under."""
        if not isinstance(mac, bytes):
            return None
        block = self.codec.mac_block(payload)
        for zak in await self.keys.accepted():
            if await self.hsm.verify_mac(zak, MacAlgorithm.X9_19, block, mac):
                return zak
        return None

    def _refuse(self, request: BankMessage, outcome: Outcome) -> BankReply:
        return bank.reply_to(request, outcome.code, pan=getattr(request, "pan", None))

    async def _encode(self, reply: BankReply, zak: KeyRef | None) -> bytes:
        message = bank.build(reply)
        if zak is None:
            return self.codec.encode(message)
        fields = dict(message.fields)
        fields[128] = bytes(8)
        payload = self.codec.encode(Message(message.mti, fields))
        mac = await self.hsm.generate_mac(zak, MacAlgorithm.X9_19, self.codec.mac_block(payload))
        return self.codec.with_mac(payload, mac)

    def _format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """Answer 30, echoing what could be read of the envelope; nothing if not even that."""
        mti = payload[:4].decode("ascii", "replace")
        if not mti.isdigit() or mti[2] not in "02468":
            return None
        fields: dict[int, FieldValue] = {39: Outcome.FORMAT_ERROR.code}
        fields.update(err.envelope)
        reply = Message(f"{(int(mti) // 10) * 10 + 10:04d}", fields)
        try:
            return self.codec.encode(reply)
        except CodecError:
            return self.codec.encode(Message(reply.mti, {39: "30"}))

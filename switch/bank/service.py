"""The inbound bank link's profile of :mod:`switch.pipeline`: how a bank host's frame is read,
checked, routed and answered. The bank host is the acquirer for its counters.

Before anything, the peer must be allowed (else no answer). A frame that does not decode is
answered 30 with the envelope it could read when its MTI is a request the interface defines;
otherwise the connection is closed. A reply where a request belongs is not answered.

Admission, in order: acquirer F32 (03); MAC X9.19 under the link's ZAK on every financial
message, and on network management when it carries one (A0, moving nothing); link signed on
(91 before a 0800 F70 = 001). Then the pipeline's retransmission check by (F32, F7, F11, class)
→ the original reply byte for byte (94 for the same key with other content), and route (40).

The link's sign-on state lives in this process (one inbound link per bank; a bank that finds the
switch restarted signs on again, as bank hosts do after any reconnect).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

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
from messages.envelope import message_class, response_mti
from messages.errors import CodecError
from messages.outcome import Outcome
from routing.bank_context import BankContext, CardStatusRegister, SavingsLink
from routing.context import CardDirectory, OfflineLimits, RequestContext, TerminalRecord
from routing.table import Route, RouteTable
from switch.bank.keys import LinkKeys
from switch.config import BankConfig
from switch.pipeline import Admitted, Served
from switch.sessions import Sessions, SqlTerminals

#: The request MTIs the bank interface defines, each with its response's MTI: a format error
#: is answered only to these (specs/bank-interface.md).
RESPONSE_MTIS: Mapping[str, str] = MappingProxyType(
    {mti: response_mti(mti) for mti in {row.mti for row, _ in bank.TABLE} | {"0420", "0421"}}
)

BankAdmitted = Admitted[KeyRef, None]
BankServed = Served[BankReply, KeyRef]


class BankService:
    """One bank's inbound link (a :class:`switch.pipeline.Link`)."""

    name = "bank"
    log = logging.getLogger("medswitch.bank")

    def __init__(
        self,
        *,
        codec: Codec,
        hsm: Hsm,
        link: BankConfig,
        keys: LinkKeys,
        terminals: SqlTerminals,
        sessions: Sessions,
        cards: CardDirectory,
        card_status: CardStatusRegister,
        ledger: Ledger,
        offline: OfflineLimits,
        routes: RouteTable,
        clock: Callable[[], datetime],
        savings: SavingsLink | None,
    ) -> None:
        self.codec = codec
        self.hsm = hsm
        self.link = link
        self.keys = keys
        self.terminals = terminals
        self.sessions = sessions
        self.cards = cards
        self.card_status = card_status
        self.ledger = ledger
        self.offline = offline
        self.routes = routes
        self.clock = clock
        self.savings = savings
        self.signed_on: set[str] = set()  # acquirer ids (F32) whose link is signed on

    def peer_allowed(self, peer: str) -> bool:
        allowed = self.link.allowed_peers
        return not allowed or peer.rpartition(":")[0] in allowed

    def read(self, payload: bytes, peer: str) -> tuple[Message, BankMessage] | None:
        if not self.peer_allowed(peer):
            self.log.warning("bank link: %s is not an allowed peer; not answered", peer)
            return None
        message = self.codec.decode(payload)
        request = bank.parse(message)
        if isinstance(request, BankReply):
            self.log.warning("bank link: unexpected reply %s from %s", message.mti, peer)
            return None
        return message, request

    async def admit(
        self, request: BankMessage, message: Message, payload: bytes
    ) -> BankAdmitted | BankServed:
        mti = message.mti
        financial = not mti.startswith("08")
        if request.acquirer_id != self.link.acquirer_id:
            return Served(self.refuse(request, Outcome.INVALID_MERCHANT))
        mac = message.fields.get(128)
        zak = None  # the key the request's MAC verified under: the reply is MACed under it
        if financial or mac is not None:
            zak = await self._mac_key(payload, mac)
            if zak is None:
                return Served(self.refuse(request, Outcome.MAC_ERROR))
        if financial and request.acquirer_id not in self.signed_on:
            return Served(self.refuse(request, Outcome.ISSUER_INOPERATIVE), zak)
        kind = message_class(mti)
        message_key = f"{request.acquirer_id}|{request.transmitted}|{request.stan}|{kind}"
        digest = None
        if financial:  # network management is simply done again
            block = kind.encode() + self.codec.mac_block(payload)[4:]
            digest = hashlib.blake2b(block, digest_size=16).digest()
        return Admitted(zak, message_key, digest, None)

    def route(self, request: BankMessage, message: Message) -> Route | None:
        processing = message.fields.get(3)
        network = message.fields.get(70)
        processing_code = processing if isinstance(processing, str) else None
        return self.routes.match(
            "bank",
            message_class(message.mti),
            processing_code,
            None,
            network if isinstance(network, str) else None,
            processing_code[2:4] if processing_code else None,
            getattr(request, "pan", None) or "",
        )

    async def context(self, request: BankMessage, admitted: BankAdmitted) -> Any:
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
            f"bank|{admitted.message_key}",
            self.offline,
        )
        link = self.link
        zpk_in = None
        if isinstance(request, CardService | CounterEpLoad):  # PINs travel in these
            zpk_in = await self.sessions.latest(link.zpk_alias, KeyUsage.ZPK)
        return BankContext(
            base, self.card_status, link.acquirer_id, self.savings, zpk_in, self.keys
        )

    async def answered(
        self, request: BankMessage, reply: BankReply, admitted: BankAdmitted
    ) -> KeyRef | None:
        """An approved sign-on opens the link for financial messages; a sign-off closes it."""
        if reply.response_code == Outcome.APPROVED.code:
            if isinstance(request, BankSignOn):
                self.signed_on.add(request.acquirer_id)
            elif isinstance(request, BankSignOff):
                self.signed_on.discard(request.acquirer_id)
        return admitted.mac_key

    def envelope(self, request: BankMessage, message: Message) -> dict[str, str | None]:
        return {
            "acquirer": request.acquirer_id,
            "terminal": request.terminal_id,
            "mti": message.mti,
            "stan": request.stan,
            "transmitted": request.transmitted,
        }

    async def _mac_key(self, payload: bytes, mac: FieldValue | None) -> KeyRef | None:
        """The ZAK (current, or the previous within the overlap) the MAC verifies under."""
        if not isinstance(mac, bytes):
            return None
        block = self.codec.mac_block(payload)
        for zak in await self.keys.accepted():
            if await self.hsm.verify_mac(zak, MacAlgorithm.X9_19, block, mac):
                return zak
        return None

    def refuse(self, request: BankMessage, outcome: Outcome) -> BankReply:
        return bank.reply_to(request, outcome.code, pan=getattr(request, "pan", None))

    async def seal(self, reply: BankReply, mac_key: KeyRef | None) -> bytes:
        message = bank.build(reply)
        if mac_key is None:
            return self.codec.encode(message)
        fields = dict(message.fields)
        fields[128] = bytes(8)
        payload = self.codec.encode(Message(message.mti, fields))
        mac = await self.hsm.generate_mac(
            mac_key, MacAlgorithm.X9_19, self.codec.mac_block(payload)
        )
        return self.codec.with_mac(payload, mac)

    def format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """Answer 30 to a request the interface defines, echoing what could be read of the
        envelope; None (the connection is closed) when the MTI is not one of those."""
        reply_mti = RESPONSE_MTIS.get(payload[:4].decode("ascii", "replace"))
        if reply_mti is None:
            return None
        fields: dict[int, FieldValue] = {39: Outcome.FORMAT_ERROR.code}
        fields.update(err.envelope)
        reply = Message(reply_mti, fields)
        try:
            return self.codec.encode(reply)
        except CodecError:
            return self.codec.encode(Message(reply.mti, {39: "30"}))

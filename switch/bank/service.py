"""The inbound bank link's profile of :mod:`switch.pipeline`: how a bank host's frame is read,
checked, routed and answered. The bank host is the acquirer for its counters.

Before anything, the peer must be allowed (else no answer). A frame that does not decode, or
decodes but names no transaction the interface defines (an MTI such as 0600 included), is
answered 30 under its request MTI's response MTI with the envelope it could read, so the bank
can match the refusal, as the outbound connection answers the bank's requests; a frame with no
readable request MTI closes the connection. A reply where a request belongs is not answered.

Admission, in order: acquirer F32 (03); MAC X9.19 under the link's ZAK as the link's dialect
requires it (:mod:`switch.bank.dialect`: by default on every financial message, on a sign-off or
key change, and on other network management when it carries one; A0, moving nothing, the log
saying whether it was missing or wrong); link signed on (91 before a 0800 F70 = 001). Then the
pipeline's retransmission check by (F32, F7, F11, class)
→ the original reply byte for byte (94 for the same key with other content), and route (40).

The link's sign-on state lives in this process (one inbound link per bank; a bank that finds the
switch restarted signs on again, as bank hosts do after any reconnect).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hsm.interface import Hsm
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
from messages.codec import Message
from messages.envelope import message_class
from messages.errors import CodecError
from messages.outcome import Outcome
from routing.bank_context import BankContext, CardStatusRegister, SavingsLink
from routing.context import CardDirectory, OfflineLimits, RequestContext, TerminalRecord, Why
from routing.table import Route, RouteTable
from switch.bank.keys import LinkKeys
from switch.bank.wire import LinkWire
from switch.config import BankConfig
from switch.pipeline import Admitted, Served
from switch.sessions import Sessions, SqlTerminals

BankAdmitted = Admitted[KeyRef, None]
BankServed = Served[BankReply, KeyRef]


class BankService:
    """One bank's inbound link (a :class:`switch.pipeline.Link`)."""

    name = "bank"
    log = logging.getLogger("medswitch.bank")

    def __init__(
        self,
        *,
        wire: LinkWire,
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
        self.wire = wire
        self.codec = wire.codec
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
        try:
            request = bank.parse(message)
        except CodecError as err:  # decoded, but no transaction: echo what it carries
            envelope = err.envelope or self.wire.envelope(message)
            raise CodecError(
                err.reason, field=err.field, offset=err.offset, envelope=envelope
            ) from None
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
        # the key the request's MAC verified under: the reply is MACed under it
        check = await self.wire.check(payload, message, await self.keys.accepted())
        if not check.ok:
            self.log.warning(
                "bank link %s: %s stan=%s F70=%s: %s; refused A0",
                request.acquirer_id,
                mti,
                request.stan,
                message.fields.get(70, "-"),
                "no MAC (missing)" if check.reason == "missing_mac" else "the MAC fails",
            )
            return Served(self.refuse(request, Outcome.MAC_ERROR))
        zak = check.key
        if financial and request.acquirer_id not in self.signed_on:
            return Served(self.refuse(request, Outcome.ISSUER_INOPERATIVE), zak)
        kind = message_class(mti)
        message_key = f"{request.acquirer_id}|{request.transmitted}|{request.stan}|{kind}"
        digest = None
        if financial:  # network management is simply done again
            block = kind.encode() + self.wire.body_digest_block(payload, message)
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
            request.card_number() or "",
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

    def why(self, context: Any) -> Why | None:
        """None: the bank handlers note no reason (their refusals' codes say it)."""
        return None

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

    def refuse(self, request: BankMessage, outcome: Outcome) -> BankReply:
        return bank.reply_to(request, outcome.code, pan=request.card_number())

    async def seal(self, reply: BankReply, mac_key: KeyRef | None) -> bytes:
        return await self.wire.seal(reply, mac_key)

    def format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """Answer 30 to a request MTI (third digit even: a request, advice or notification,
        defined here or not), echoing what could be read of the envelope; None (the
        connection is closed) when the payload has no such MTI."""
        return self.wire.format_error(payload, err.envelope)

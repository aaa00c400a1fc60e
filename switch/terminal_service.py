"""The terminal interface's profile of :mod:`switch.pipeline`: how a POS or kiosk frame is read,
checked, routed and answered.

Admission, in order: registered terminal (97), institution (03), signed on (22), MAC (A0),
batch (77); then the pipeline's repeat check and route (40). A frame that does not decode is
answered 30 when its MTI is a request the interface defines (the reply's MTI is that request's
response); otherwise (no MTI, an MTI the interface does not define, a response) the connection
is closed, as it is when the frame's STAN and terminal (F11, F41) cannot be read. Replies are
MACed under the keys the request's MAC verified under (a sign-on's 0810 under the keys it
issues); refusals before that (30, 97, 03, 22, A0, a refused sign-on) carry no MAC.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType

from hsm.interface import Hsm, MacAlgorithm, SignOnKeys
from ledger.core import Ledger
from ledger.medical.service import MedicalService
from messages import terminal_table
from messages.codec import Codec, FieldValue, Message
from messages.envelope import message_class, response_mti
from messages.errors import CodecError, UnknownTransaction
from messages.outcome import Outcome
from messages.terminal import SignOn, TerminalMessage, TerminalReply
from routing.context import (
    CardDirectory,
    OfflineLimits,
    RequestContext,
    TerminalRecord,
    Why,
    host_stamps,
)
from routing.table import Route, RouteTable
from switch.pipeline import Admitted, Served
from switch.sessions import Sessions, SqlTerminals

_MAC_ERROR = Outcome.MAC_ERROR.code  # read once: an enum's value is two Python calls away
_MAC_PLACEHOLDER = bytes(8)  # field 64 while the MAC block is encoded

#: The request MTIs the interface defines, each with its response's MTI: a format error is
#: answered only to these (specs/terminal-interface.md).
RESPONSE_MTIS: Mapping[str, str] = MappingProxyType(
    {
        mti: response_mti(mti)
        for mti in {row.mti for row, _, _ in terminal_table.TABLE} | terminal_table.REVERSAL_MTIS
    }
)

TerminalAdmitted = Admitted[SignOnKeys, TerminalRecord]
TerminalServed = Served[TerminalReply, SignOnKeys]


class TerminalService:
    """The terminal link (a :class:`switch.pipeline.Link`)."""

    name = "terminal"
    log = logging.getLogger("medswitch.terminal")

    def __init__(
        self,
        *,
        codec: Codec,
        hsm: Hsm,
        terminals: SqlTerminals,
        sessions: Sessions,
        cards: CardDirectory,
        ledger: Ledger,
        offline: OfflineLimits,
        medical: MedicalService | None,
        routes: RouteTable,
        clock: Callable[[], datetime],
    ) -> None:
        self.codec = codec
        self.hsm = hsm
        self.terminals = terminals
        self.sessions = sessions
        self.cards = cards
        self.ledger = ledger
        self.offline = offline
        self.medical = medical
        self.routes = routes
        self.clock = clock
        self._classes: dict[str, tuple[str, bytes]] = {}

    def read(self, payload: bytes, peer: str) -> tuple[Message, TerminalMessage]:
        message = self.codec.decode(payload)
        try:
            request = terminal_table.parse(message)
        except CodecError as err:  # decoded, but not a request it defines: echo its envelope
            raise type(err)(
                err.reason,
                field=err.field,
                offset=err.offset,
                envelope=err.envelope or self.codec.envelope_of(message),
            ) from err
        if isinstance(request, TerminalReply):  # the switch sends no requests to terminals
            raise UnknownTransaction("a response where a request belongs", field="MTI")
        return message, request

    async def admit(
        self, request: TerminalMessage, message: Message, payload: bytes
    ) -> TerminalAdmitted | TerminalServed:
        terminal = self.terminals.kept(request.terminal_id) or await self.terminals.get(
            request.terminal_id
        )  # the cache's record without a coroutine, as nearly every message finds it
        if terminal is None or not terminal.active:
            reason = "terminal_unknown" if terminal is None else f"terminal_{terminal.status}"
            return Served(self.refuse(request, Outcome.TERMINAL_NOT_REGISTERED), reason=reason)
        if terminal.institution_id != request.institution_id.strip():
            refusal = self.refuse(request, Outcome.INVALID_MERCHANT)
            return Served(refusal, reason="institution_mismatch")
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
                    reason = (
                        "not_signed_on"
                        if proven is Outcome.RE_SIGN_ON
                        else "mac_mismatch"
                        if isinstance(mac, bytes)
                        else "mac_missing"
                    )
                    return Served(self.refuse(request, proven), reason=reason)
                session = proven
            if request.batch != terminal.batch:
                terminal = await self.terminals.get(terminal.terminal_id, refresh=True)
                if terminal is None or request.batch != terminal.batch:
                    refusal = self.refuse(request, Outcome.BATCH_MISMATCH)
                    return Served(refusal, session, reason="batch_mismatch")
        mti = message.mti
        kind, kind_bytes = self._class_of(mti)
        message_key = f"{terminal.terminal_id}|{request.batch}|{request.stan}|{kind}"
        digest = None
        if not mti.startswith("08"):  # network management is simply done again
            # The same request, with its MTI's repeat digit normalised (0401 repeats 0400).
            digest = hashlib.blake2b(kind_bytes + block[2:], digest_size=16).digest()
        return Admitted(session, message_key, digest, terminal)

    def route(self, request: TerminalMessage, message: Message) -> Route | None:
        mti, processing_code, _, txn_type, network_code = request.codes()
        return self.routes.match(
            "terminal",
            self._class_of(mti)[0],
            processing_code,
            txn_type,
            network_code,
            None,
            request.card_number() or "",
        )

    async def context(self, request: TerminalMessage, admitted: TerminalAdmitted) -> RequestContext:
        return RequestContext(
            admitted.party,
            admitted.mac_key,
            self.clock(),
            self.hsm,
            self.terminals,
            self.sessions,
            self.cards,
            self.ledger,
            admitted.message_key,
            self.offline,
            self.medical,
        )

    def why(self, context: RequestContext) -> Why | None:
        return context.why  # noted by routing.common.answer

    async def answered(
        self, request: TerminalMessage, reply: TerminalReply, admitted: TerminalAdmitted
    ) -> SignOnKeys | None:
        """A sign-on's reply is MACed under the session it opened."""
        if isinstance(request, SignOn):  # an 0810 with keys is MACed under them (pending)
            approved = reply.response_code == Outcome.APPROVED.code
            return self.sessions.issued(admitted.party.terminal_id) if approved else None
        return admitted.mac_key

    def envelope(self, request: TerminalMessage, message: Message) -> dict[str, str | None]:
        return {
            "terminal": request.terminal_id,
            "mti": message.mti,
            "stan": request.stan,
            "batch": request.batch,
        }

    def _class_of(self, mti: str) -> tuple[str, bytes]:
        """The MTI's message class, as text and as its two BCD bytes (kept: a few MTIs)."""
        found = self._classes.get(mti)
        if found is None:
            kind = message_class(mti)
            found = self._classes[mti] = (kind, bytes.fromhex(kind))
        return found

    def refuse(self, request: TerminalMessage, outcome: Outcome) -> TerminalReply:
        host_time, host_date = self.stamps()
        return terminal_table.reply_to(
            request, outcome.code, host_time=host_time, host_date=host_date
        )

    def stamps(self) -> tuple[str, str]:
        """Host time hhmmss and date MMDD: every reply carries them (they set the clock)."""
        return host_stamps(self.clock())

    async def seal(self, reply: TerminalReply, mac_key: SignOnKeys | None) -> bytes:
        if mac_key is None or reply.response_code == _MAC_ERROR:
            return self.codec.encode(terminal_table.build(reply))
        payload = self.codec.encode(terminal_table.build(reply, _MAC_PLACEHOLDER))
        mac = await self.hsm.generate_mac(
            mac_key.mak, MacAlgorithm.CUP_ECB, self.codec.mac_block(payload)
        )
        return self.codec.with_mac(payload, mac)

    def format_error(self, payload: bytes, err: CodecError) -> bytes | None:
        """Answer 30 to a request the interface defines, echoing what could be read of the
        envelope; None (the connection is closed) when the MTI is not one of those, or when
        the STAN (F11) and terminal (F41) the POS matches a reply by could not be read.
        No MAC: the centre does not know the sender holds any keys."""
        prefix = self.codec.prefix_bytes
        mti = payload[prefix : prefix + 2].hex()
        reply_mti = RESPONSE_MTIS.get(mti)
        envelope = err.envelope
        if reply_mti is None or 11 not in envelope or 41 not in envelope:
            return None
        tpdu, header = payload[:5], payload[5:prefix]
        fields: dict[int, FieldValue] = {39: Outcome.FORMAT_ERROR.code}
        fields.update(envelope)
        reply = Message(reply_mti, fields, tpdu[:1] + tpdu[3:5] + tpdu[1:3], header)
        try:
            return self.codec.encode(reply)
        except CodecError:  # an echoed field the reply cannot carry: the matching ones only
            fields = {39: "30", 11: envelope[11], 41: envelope[41]}
            return self.codec.encode(Message(reply.mti, fields, reply.tpdu, reply.header))

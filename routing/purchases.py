"""Card debits confirmed by their TAC: the online advice (0220) here, the batch upload (0320) in
:mod:`routing.batch`, both through the same core.

A TAC-valid debit always posts — the card has paid — once per (PSAM terminal number, PSAM
serial), whichever of the advice or the batch upload comes first, and is paid to the institution
owning the PSAM bound into the TAC. Anomalies go to review beside the posting; a TAC that does not
verify never posts and goes to review. Every record a terminal sends is kept on file
(``Ledger.record_offline``) with its terminal and batch: batch settlement (0500) totals the
verified ones.

The core comes in three steps so that a batch can verify many records and then post them
together: :func:`read_debit` (the card data checked and typed), :func:`verify_debit` (the TAC,
under the card's DTK of the record's key version), :func:`post_debit` (the ledger, the bill or
the accumulators, review notes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from hsm.interface import PurchaseRecord
from hsm.keys import KeyUsage
from hsm.pboc import TYPE_ED_PURCHASE, TYPE_EP_PURCHASE
from ledger import events as ev
from ledger.core import OfflineRecord
from ledger.medical.bills import BillStateError
from ledger.medical.service import MedicalError
from messages.outcome import Outcome
from messages.private import CardData, Purse
from messages.terminal import DebitAdvice, TerminalReply
from routing.cardkeys import card_key
from routing.common import answer, bill_data, note
from routing.context import CardRecord, RequestContext

_PURSES = {TYPE_ED_PURCHASE: (Purse.ED, ev.Purse.ED), TYPE_EP_PURCHASE: (Purse.EP, ev.Purse.EP)}


@dataclass(frozen=True, slots=True)
class Debit:
    """A card debit record as a terminal sent it, its card data checked (TAC not yet)."""

    card: CardRecord
    purse: ev.Purse
    record: PurchaseRecord
    tac: bytes
    key_version: int
    terminal_id: str  # the sending terminal
    batch_no: int  # the sending terminal's batch (field 60.2)

    @property
    def psam_no(self) -> str:
        return self.record.terminal_id.hex()

    @property
    def subject(self) -> str:
        return f"card-debit|{self.psam_no}|{self.record.term_serial}"

    def on_file(self, verified: bool) -> OfflineRecord:
        """The record as the ledger keeps it; verified ones name their card-debit transfer."""
        transfer = ev.card_debit_id(self.psam_no, self.record.term_serial) if verified else None
        return OfflineRecord(
            self.psam_no,
            self.record.term_serial,
            self.terminal_id,
            self.batch_no,
            self.card.application_serial,
            self.purse.value,
            self.record.amount_fen,
            self.tac.hex(),
            self.record.when.strftime("%Y%m%d%H%M%S"),
            transfer,
        )


def read_debit(
    context: RequestContext,
    pan: str,
    amount_fen: int,
    data: CardData,
    sender: tuple[str, str],
) -> Debit | Outcome:
    """The debit in field 58 sent by ``sender`` (its terminal id and batch, fields 41 and 60.2),
    or the outcome refusing it (an unknown card, missing elements)."""
    terminal_id, batch = sender
    card = context.cards.get(pan)
    purses = _PURSES.get(data.pboc_type or 0)
    if (
        card is None
        or purses is None
        or data.purse is not purses[0]
        or data.tac is None
        or data.psam_terminal is None
        or data.psam_serial is None
        or data.card_datetime is None
        or data.app_serial != card.serial_bytes
        or not batch.isdigit()
    ):
        return Outcome.FORMAT_ERROR if card else Outcome.INVALID_CARD
    try:
        when = datetime.strptime(data.card_datetime, "%Y%m%d%H%M%S")
    except ValueError:
        return Outcome.FORMAT_ERROR
    record = PurchaseRecord(
        data.pboc_type or 0, amount_fen, data.psam_terminal, data.psam_serial, when
    )
    version = card.key_version if data.key_version is None else data.key_version
    return Debit(card, purses[1], record, data.tac, version, terminal_id, int(batch))


async def verify_debit(context: RequestContext, debit: Debit) -> bool:
    """The TAC under the card's DTK of the record's key version (an older card generation
    uploads with its own version); a failure is noted for review."""
    card = replace(debit.card, key_version=debit.key_version)
    key = card_key(KeyUsage.MK_TAC, card)
    if await context.hsm.verify_purchase_tac(key, debit.record, debit.tac):
        return True
    detail = f"card debit whose TAC does not verify (key version {debit.key_version})"
    await note(context, "bad_tac", debit.subject, debit.record.amount_fen, detail)
    return False


async def post_debit(
    context: RequestContext, debit: Debit, bill_id: str | None = None
) -> ev.EventResult:
    """Post a verified debit (once per PSAM serial), then complete its bill, or count an ED
    purchase with no bill towards the person's accumulators."""
    owner = context.cards.psam_institution(debit.psam_no) or "unknown"
    amount_fen = debit.record.amount_fen
    posted = ev.CardDebit(
        debit.psam_no,
        debit.record.term_serial,
        debit.card.application_serial,
        debit.purse,
        amount_fen,
        owner,
        context.terminal.institution_id,
        bill_id,
    )
    result = await ev.post_card_debit(context.ledger, posted)
    if not result.ok or debit.purse is not ev.Purse.ED:
        return result
    if bill_id is not None:
        return await complete_bill(context, bill_id, amount_fen)
    await count_offline(context, debit, owner)
    return result


async def count_offline(context: RequestContext, debit: Debit, institution_id: str) -> None:
    medical = context.medical
    if medical is None:
        return
    record = debit.record
    try:
        await asyncio.to_thread(
            medical.post_offline_purchase,
            debit.psam_no,
            record.term_serial,
            debit.card.application_serial,
            institution_id,
            record.amount_fen,
            record.when.date(),
        )
    except MedicalError as error:  # the money is posted; the accumulators wait for a person
        await note(context, "offline_not_counted", debit.subject, record.amount_fen, error.code)


async def handle_debit_advice(request: DebitAdvice, context: RequestContext) -> TerminalReply:
    sender = (request.terminal_id, request.batch)
    debit = read_debit(context, request.pan, request.amount_fen, request.card, sender)
    if isinstance(debit, Outcome):
        return answer(request, context, debit)
    verified = await verify_debit(context, debit)
    await context.ledger.record_offline([debit.on_file(verified)])
    if not verified:
        return answer(request, context, Outcome.SECURITY_FAILURE)
    bill = await bill_data(context, request.bill)
    result = await post_debit(context, debit, bill.bill_id if bill is not None else None)
    return answer(request, context, Outcome.APPROVED if result.ok else Outcome.SYSTEM_FAULT)


async def complete_bill(context: RequestContext, bill_id: str, ed_fen: int) -> ev.EventResult:
    """The card paid the bill's personal-account share from its ED: the bill completes — the
    pooled share is owed to the institution and the accumulators are committed — once, however
    often or in whatever order its advices come. (Self-pay from the EP or in cash is the
    cardholder's own money, paid by its own debit; it does not hold the bill open.)"""
    medical = context.medical
    record = await asyncio.to_thread(medical.get_bill, bill_id) if medical else None
    if medical is None or record is None or record.split.personal_account_fen != ed_fen:
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    try:
        completed, _ = await asyncio.to_thread(medical.complete_bill, bill_id, context.now)
    except BillStateError:  # reversed or voided meanwhile: its debit is in the ledger, in review
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    completion = ev.BillCompletion(bill_id, completed.institution_id, completed.split.pooled_fen)
    return await ev.post_bill_completion(context.ledger, completion)

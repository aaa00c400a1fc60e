"""Medical settlement of a HIS bill (0200, 60.1 = 22): the bill the hospital's charging system
submitted, for the card presented, at the institution that owns it, is approved — its split
was computed and the person's accumulators reserved when it was submitted. Approval moves no
money: the card decides whether it can pay, and its debits arrive as TAC-confirmed advices.

A settled bill whose personal-account share is paid in cash instead (the card cannot pay it, or
the share is nil and the self-pay is taken in cash) is closed by a 0220 with 60.1 = 22 (DESIGN
§5: "closed with the rest paid in cash"): the bill completes — the pooled share owed to the
institution, the accumulators committed — once, as a card debit of that share would complete it.

The bill reference comes in field 63 under the session's TDK; the split goes back the same way,
with the receipt's explanation lines.
"""

from __future__ import annotations

from ledger import events as ev
from ledger.medical.bills import BillRecord, BillStateError
from ledger.medical.refusals import MedicalError
from ledger.medical.split import explain, explained_bytes_at_least
from messages.card_records import RecordFormatError
from messages.outcome import Outcome
from messages.private import BillData, construct
from messages.terminal import CashClose, Settlement, TerminalReply
from routing import health_contact, visit_records
from routing.common import answer, bill_data, note
from routing.context import RequestContext
from routing.loads import block_script, card_refusal

EXPLANATION_BYTES_MAX = 255  # one TLV element
F63_UNREADABLE = "format: field 63 absent or not readable under the TDK"
F63_NO_BILL = "format: field 63 names no bill_id"
MEDICAL_REFUSALS = {
    "not_found": Outcome.ORIGINAL_NOT_FOUND,  # no such bill at this institution
    "amount_mismatch": Outcome.INVALID_AMOUNT,
    "card_mismatch": Outcome.INVALID_CARD,
    "expired": Outcome.INVALID_TRANSACTION,
}


def medical_refusal(error: MedicalError | BillStateError) -> Outcome:
    """The answer to a bill the medical core would not move: by its refusal's code, or 12 for
    a bill in a state it cannot leave that way (reversed, voided, expired, completed)."""
    if isinstance(error, MedicalError):
        return MEDICAL_REFUSALS.get(error.code, Outcome.INVALID_TRANSACTION)
    return Outcome.INVALID_TRANSACTION


def refuse_bill(
    request: Settlement | CashClose,
    context: RequestContext,
    error: MedicalError | BillStateError,
    bill_id: str,
) -> TerminalReply:
    """The refusal of a bill the medical core would not move, its reason and bill logged:
    ``bill_not_found``, ``bill_amount_mismatch``, ``bill_card_mismatch``, ``bill_expired``, or
    ``bill_state: <state>`` (reversed, voided, completed, ...)."""
    if isinstance(error, MedicalError):
        reason = "bill_" + error.code
    else:
        reason = f"bill_state: {error.state.value}"
    return answer(request, context, medical_refusal(error), reason=reason, bill_id=bill_id)


async def handle_settlement(request: Settlement, context: RequestContext) -> TerminalReply:
    tdk = context.session.tdk if context.session is not None else None
    if tdk is None or context.medical is None:
        # Bill data travel only under a TDK: sign on with 60.3 = 004.
        outcome = Outcome.RE_SIGN_ON if tdk is None else Outcome.FUNCTION_NOT_SUPPORTED
        return answer(request, context, outcome)
    wanted = await bill_data(context, request.bill)
    if wanted is None:
        return answer(request, context, Outcome.FORMAT_ERROR, reason=F63_UNREADABLE)
    bill_id = wanted.bill_id or ""
    card = context.cards.get(request.pan)
    refusal = card_refusal(card, context.now)
    if refusal is Outcome.LOST_CARD and card is not None:
        script = await block_script(context, card, request.card.challenge)
        return answer(request, context, refusal, card=script, reason="card_lost", bill_id=bill_id)
    if refusal is not None:
        reason = "card_" + refusal.name.lower()
        return answer(request, context, refusal, reason=reason, bill_id=bill_id)
    if not bill_id:
        return answer(request, context, Outcome.FORMAT_ERROR, reason=F63_NO_BILL)
    try:
        visit_records.diagnoses_of(wanted)
    except RecordFormatError as bad:
        return answer(request, context, Outcome.FORMAT_ERROR, reason=f"format: field 63 {bad}")
    if wanted.card_visit is not None and card is not None:
        await visit_records.check_card_visit(context, card, wanted.card_visit)
    if wanted.card_visit_file is not None and card is not None:
        await visit_records.check_card_file(
            context, card, wanted.card_visit_file, wanted.card_visit
        )
    medical = context.medical
    institution = context.terminal.institution_id
    try:  # one round trip to the writer: the checks run inside the store's write (DESIGN §6)
        record = await medical.approve_bill_async(
            bill_id,
            institution,
            request.pan,
            context.now,
            request.amount_fen,
        )
    except (MedicalError, BillStateError) as refused:
        return refuse_bill(request, context, refused, bill_id)
    apdu, why = None, ""
    challenge = request.card.challenge
    if card is not None and challenge is not None:  # the visit for the card's record book
        append = await visit_records.visit_script(context, card, challenge, record, wanted)
        apdu, why = append.apdu, append.reason  # (routing.visit_records; none without a challenge)
    if card is not None and health_contact.reports_at_settlement(wanted):
        await health_contact.at_settlement(context, card, wanted)
    split = split_answer(record, apdu)
    cipher = await context.hsm.encrypt_data(tdk, split.build())
    return answer(request, context, Outcome.APPROVED, bill=cipher, reason=why)


async def handle_cash_close(request: CashClose, context: RequestContext) -> TerminalReply:
    tdk = context.session.tdk if context.session is not None else None
    if tdk is None or context.medical is None:
        outcome = Outcome.RE_SIGN_ON if tdk is None else Outcome.FUNCTION_NOT_SUPPORTED
        return answer(request, context, outcome)
    wanted = await bill_data(context, request.bill)
    if wanted is None or not wanted.bill_id:
        reason = F63_UNREADABLE if wanted is None else F63_NO_BILL
        return answer(request, context, Outcome.FORMAT_ERROR, reason=reason)
    try:
        record, changed = await context.medical.close_in_cash_async(
            wanted.bill_id,
            context.terminal.institution_id,
            request.pan,
            request.amount_fen,
            context.now,
        )
    except (MedicalError, BillStateError) as refused:
        return refuse_bill(request, context, refused, wanted.bill_id)
    if not changed:  # completed before: by the card's debit, or closed in cash already
        detail = "closed in cash after it had completed: the cardholder may have paid twice"
        await note(context, "cash_close_completed_bill", f"bill|{record.bill_id}",
                   request.amount_fen, detail)  # fmt: skip
    completion = ev.BillCompletion(record.bill_id, record.institution_id, record.split.pooled_fen)
    posted = await ev.post_bill_completion(context.ledger, completion)
    if not posted.ok:
        return answer(request, context, Outcome.SYSTEM_FAULT)
    card = context.cards.get(request.pan)
    if card is None:
        return answer(request, context, Outcome.APPROVED)
    challenge = request.card.challenge if request.card is not None else None
    health = await health_contact.at_advice(context, card, challenge, wanted)
    return answer(request, context, Outcome.APPROVED, bill=health.bill, reason=health.reason)


def split_answer(record: BillRecord, visit_script: bytes | None = None) -> BillData:
    """The split for the POS: the personal-account share from the ED, self-pay from the EP (or
    in cash, the cardholder's choice at the POS), and the receipt's lines; with the visit's
    APPEND RECORD for the card's record book, when there is one (given here: a
    `dataclasses.replace` of the answer afterwards cost 12 us a settlement)."""
    split = record.split
    if explained_bytes_at_least(split) > EXPLANATION_BYTES_MAX:  # not built to find it too long
        explanation = _compact(record)
    else:
        explanation = "\n".join(explain(split))
        if len(explanation.encode()) > EXPLANATION_BYTES_MAX:  # a long bill: every line, short
            explanation = _compact(record)
    # BillData(**values) without its frozen __init__, each field set through object.__setattr__
    return construct(
        BillData,
        {
            "bill_id": record.bill_id,
            "total_fen": split.total_fen,
            "personal_fen": split.personal_account_fen,
            "pooled_fen": split.pooled_fen,
            "self_pay_fen": split.self_pay_fen,
            "ed_fen": split.personal_account_fen,
            "ep_fen": split.self_pay_fen,
            "cash_fen": 0,
            "explanation": explanation,
            "visit_script": visit_script,
        },
    )


def _compact(record: BillRecord) -> str:
    """A receipt line per bill line, `number code amount` (ASCII, the names and parts left out),
    as many as fit in one TLV element; when some still do not, the last line says how many
    more there are and where to see them — a receipt never drops a line silently."""
    lines = [
        f"{line.number} {line.code} {line.amount_fen // 100}.{line.amount_fen % 100:02d}"
        for line in record.split.lines
    ]
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        more = len(lines) - index - 1
        tail = f"\n+{more} more lines: bill {record.bill_id} at the HIS" if more else ""
        if size + len(line) + 1 + len(tail.encode()) > EXPLANATION_BYTES_MAX + 1:
            rest = len(lines) - index
            kept.append(f"+{rest} more lines: bill {record.bill_id} at the HIS")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)

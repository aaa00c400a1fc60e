"""Card debits confirmed by their TAC: the online advice (0220) here, the batch upload (0320) in
:mod:`routing.batch`, both through the same core.

A TAC-valid debit always posts — the card has paid — once per (PSAM terminal number, PSAM
serial), whichever of the advice or the batch upload comes first, and is paid to the institution
owning the PSAM bound into the TAC. Anomalies go to review beside the posting; a TAC that does not
verify never posts and goes to review. Every record a terminal sends is kept on file
(``Ledger.record_offline``) with its terminal and batch: batch settlement (0500) totals the
verified ones.

The core comes in three steps so that a batch can verify many records and then post them
together: :func:`routing.debits.read_debit` (the card data checked and typed),
:func:`routing.debits.verify_debit` (the TAC, under the card's DTK of the record's key version),
:func:`post_debits` (the ledger and the records on file, the bill or the accumulators, review
notes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ledger import events as ev
from ledger.core import OfflineRecord, Transfer, TransferResult
from ledger.events.common import review
from ledger.kinds import AccountKind as K
from ledger.medical.bills import BillStateError
from ledger.medical.refusals import MedicalError
from messages.outcome import Outcome
from messages.terminal import DebitAdvice, TerminalReply
from routing import health_contact
from routing.common import answer, bill_data, note
from routing.context import RequestContext
from routing.debits import Debit, read_debit, verify_debit

_OUTCOMES = {
    TransferResult.CREATED: ev.Outcome.POSTED,
    TransferResult.EXISTS: ev.Outcome.ALREADY_POSTED,
    TransferResult.EXISTS_WITH_DIFFERENT_DATA: ev.Outcome.CONFLICT,
}


async def post_debits(
    context: RequestContext,
    debits: Sequence[Debit],
    bills: Sequence[str | None],
    on_file: Sequence[OfflineRecord] = (),
) -> list[bool]:
    """Post verified debits (with the bill each paid, if any) together — each True when its
    money is in the ledger (posted now or before) and its bill in order — in one submission, so
    a window of uploaded records shares one durable commit (DESIGN §6). Each posts once per PSAM
    serial (DESIGN §5's card-debit identity: a replay is ALREADY_POSTED), unlinked from the
    others; ``on_file`` (the records as received) is kept just behind the postings, in the same
    writer round and commit, so a record on file as verified always has its debit in the
    ledger. Then each new debit's review notes; each ED debit completes its bill (its advice
    names it: an advice sent again after an upload of the same debit still completes the bill,
    once), or, with no bill and posted now, counts towards the person's accumulators (an
    advised debit uploaded again counts nothing: its bill counted it)."""
    paid = _institutions(context, debits)  # the institution each debit pays
    transfers = [
        _card_debit_transfer(
            debit.transfer_id,
            debit.psam_no,
            debit.record.term_serial,
            debit.card.application_serial,
            debit.purse,
            debit.record.amount_fen,
            institution,
        )
        for debit, institution in zip(debits, paid, strict=True)
    ]
    if _one_paid_bill(context, debits, bills):  # an advice, bills in the ledger's commits
        bill_id = bills[0]
        assert bill_id is not None
        return [await _post_and_complete(context, debits[0], bill_id, transfers, paid, on_file)]
    outcomes, before = await _post(context, transfers, on_file)
    await _review(context, debits, transfers, paid, outcomes, before)
    done: list[bool] = []
    posted, already = ev.Outcome.POSTED, ev.Outcome.ALREADY_POSTED
    for debit, bill_id, institution, outcome in zip(debits, bills, paid, outcomes, strict=True):
        ok = outcome is posted or outcome is already
        if ok and bill_id is not None:
            counted = debit.purse is ev.Purse.ED and outcome is already
            ok = (await complete_bill(context, bill_id, debit, counted)).ok
        elif ok and debit.purse is ev.Purse.ED and outcome is posted:
            # An offline purchase counts when it posts (posted before: counted then, or its bill).
            await count_offline(context, debit, institution)
        done.append(ok)
    return done


def _institutions(context: RequestContext, debits: Sequence[Debit]) -> list[str]:
    """The institution owning each debit's PSAM, read once per PSAM (an advice has one)."""
    cards = context.cards
    if len(debits) == 1:
        return [cards.psam_institution(debits[0].psam_no) or "unknown"]
    owners: dict[str, str] = {}  # PSAM terminal number → its institution
    for debit in debits:
        if debit.psam_no not in owners:
            owners[debit.psam_no] = cards.psam_institution(debit.psam_no) or "unknown"
    return [owners[debit.psam_no] for debit in debits]


def _one_paid_bill(
    context: RequestContext, debits: Sequence[Debit], bills: Sequence[str | None]
) -> bool:
    """One ED debit paying a bill, with the bills in the ledger's transactions."""
    medical = context.medical
    return (
        len(debits) == 1
        and bills[0] is not None
        and debits[0].purse is ev.Purse.ED
        and medical is not None
        and medical.posts_with_ledger
    )


async def _post_and_complete(
    context: RequestContext,
    debit: Debit,
    bill_id: str,
    transfers: list[Transfer],
    paid: list[str],
    on_file: Sequence[OfflineRecord],
) -> bool:
    """An advice's ED debit of its bill's personal share, on the SQLite default and the
    daemon's PostgreSQL: the debit posted and kept on file, then — if it is in the ledger — the
    bill completed and its pooled share posted, in one writer round, one transaction and one
    commit (``SqliteLedger.post_and_call``, ``PgLedger.post_and_call``);
    then the debit's review notes, as :func:`post_debits` makes them."""
    medical = context.medical
    assert medical is not None
    amount = debit.record.amount_fen
    write = medical.paid_completion_write(bill_id, amount, context.now)
    # the pooled share it will likely post: the bill is the debit's institution's
    likely = ev.bill_completion_transfers(ev.BillCompletion(bill_id, paid[0], 1))
    (results, before), completed = await context.ledger.post_and_call(  # type: ignore[attr-defined]
        transfers,
        on_file,
        ev.debit_accounts,
        write,
        ev.bill_completion_postings,
        likely,
        ev.paid_bill,
    )
    outcomes = [_OUTCOMES.get(r, ev.Outcome.REFUSED) for r in results]
    await _review(context, [debit], transfers, paid, outcomes, before)
    if completed is None:  # the debit is not in the ledger: the bill waits
        return False
    if isinstance(completed, (MedicalError, BillStateError, KeyError)):
        # Unknown, not this debit's share, or reversed/voided meanwhile: its debit is in the
        # ledger (in review when the bill cannot complete), as complete_bill answers.
        return True
    if isinstance(completed, BaseException):
        raise completed
    (paid_bill, changed), posted = completed
    before = outcomes[0] is ev.Outcome.ALREADY_POSTED
    if changed == before:  # completed after its upload, or paid twice: else no note, no coroutine
        await _note_completion(context, bill_id, amount, changed, before)
    if not posted:  # no pooled share, nothing posted: outcome_of would say NOTHING_TO_POST
        return True
    completion = ev.bill_completion_transfers(paid_bill)
    return (await ev.outcome_of(context.ledger, f"bill|{bill_id}", completion, posted)).ok


def debit_transfer(debit: ev.CardDebit, transfer_id: str | None = None) -> Transfer:
    """ED shadow → institution payable (insurance); EP shadow → institution payable (EP): the
    very transfer :func:`ledger.events.post_card_debit` posts (a test holds them equal), so an
    advice and an upload of the same debit meet on one id with the same data."""
    return _card_debit_transfer(
        transfer_id or ev.card_debit_id(debit.psam_terminal_no, debit.psam_serial),
        debit.psam_terminal_no,
        debit.psam_serial,
        debit.application_serial,
        debit.purse,
        debit.amount_fen,
        debit.institution_id,
    )


def _card_debit_transfer(
    transfer_id: str,
    psam_no: str,
    psam_serial: int,
    application_serial: str,
    purse: ev.Purse,
    amount_fen: int,
    institution_id: str,
) -> Transfer:
    """:func:`debit_transfer` from the debit's fields (a window builds thousands: no
    ``CardDebit`` in between; the account ids are :func:`ledger.kinds.account_id`'s, from
    prefixes read once)."""
    shadow_prefix, payable_prefix = _PREFIXES[purse]
    return Transfer(
        transfer_id,
        f"{shadow_prefix}:{application_serial}",
        f"{payable_prefix}:{institution_id}",
        amount_fen,
        ev.TransferCode.CARD_DEBIT,
        # the debit, not its bill (see post_card_debit)
        f"card-debit|{psam_no}|{psam_serial}|{application_serial}",
    )


_PREFIXES = {
    ev.Purse.ED: (K.CARD_ED_SHADOW.value, K.INSTITUTION_PAYABLE_INSURANCE.value),
    ev.Purse.EP: (K.CARD_EP_SHADOW.value, K.INSTITUTION_PAYABLE_EP.value),
}


async def _post(
    context: RequestContext, transfers: Sequence[Transfer], on_file: Sequence[OfflineRecord]
) -> tuple[list[ev.Outcome], dict[str, int]]:
    """One submission (``Ledger.post_and_record``: one writer round, the records behind
    their postings), and the touched accounts' balances just before it. A card or
    institution without accounts gets them first, in the same round: the core remembers a
    refusal for a missing account under the id (only a failed linked batch leaves no trace),
    so a debit is never posted before its accounts exist."""
    ledger = context.ledger
    if not transfers:
        if on_file:
            await ledger.record_offline(on_file)
        return [], {}
    results, before = await ledger.post_and_record(transfers, on_file, opening=ev.debit_accounts)
    refused = ev.Outcome.REFUSED
    return [_OUTCOMES.get(r, refused) for r in results], before


async def _review(
    context: RequestContext,
    debits: Sequence[Debit],
    transfers: Sequence[Transfer],
    paid: Sequence[str],
    outcomes: Sequence[ev.Outcome],
    before: dict[str, int],
) -> None:
    """Anomalies beside the postings: a refusal; for new debits, a PSAM of another institution
    than the terminal's, a shadow below zero after the debit (from the balance read before the
    submission, less the new debits in order)."""
    ledger = context.ledger
    terminal_institution = context.terminal.institution_id
    running: dict[str, int] = {}
    for debit, transfer, institution, outcome in zip(
        debits, transfers, paid, outcomes, strict=True
    ):
        amount = debit.record.amount_fen
        if outcome is ev.Outcome.CONFLICT or outcome is ev.Outcome.REFUSED:
            reason = ev.ReviewReason.ID_CONFLICT
            if outcome is ev.Outcome.REFUSED:
                reason = ev.ReviewReason.LEDGER_REFUSED
            await review(ledger, reason, debit.subject, amount)
        if outcome is not ev.Outcome.POSTED:
            continue
        if institution != terminal_institution:
            detail = f"psam={institution} terminal={terminal_institution}"
            reason = ev.ReviewReason.PSAM_OTHER_INSTITUTION
            await review(ledger, reason, debit.subject, amount, detail)
        account = transfer.debit_account_id  # the card's shadow of the debit's purse
        left = running.get(account)
        if left is None:
            left = before.get(account, 0)
        running[account] = left = left - amount
        if left < 0:
            await review(ledger, ev.ReviewReason.SHADOW_BELOW_ZERO, debit.subject, left)


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
    if not await verify_debit(context, debit):
        await context.ledger.record_offline([debit.on_file(False)])
        return answer(request, context, Outcome.SECURITY_FAILURE, reason="tac_mismatch")
    bill = await bill_data(context, request.bill)
    bills = [bill.bill_id if bill is not None else None]
    (ok,) = await post_debits(context, [debit], bills, [debit.on_file(True)])
    if not ok:
        return answer(request, context, Outcome.SYSTEM_FAULT)
    # a settlement's advice: the card's pending health data (routing.health_contact)
    challenge = request.card.challenge
    if health_contact.quiet_advice(challenge, bill):
        health = health_contact.NO_ADVICE_REPLY
    else:
        health = await health_contact.at_advice(context, debit.card, challenge, bill)
    return answer(request, context, Outcome.APPROVED, bill=health.bill, reason=health.reason)


async def complete_bill(
    context: RequestContext, bill_id: str, debit: Debit, posted_before: bool = False
) -> ev.EventResult:
    """The card paid the bill's personal-account share from its ED: the bill completes — the
    pooled share is owed to the institution and the accumulators are committed — once, however
    often or in whatever order its advices come. (Self-pay from the EP or in cash is the
    cardholder's own money, paid by its own debit; it does not hold the bill open — but a bill
    with no personal-account share completes when its EP self-pay debit is confirmed.)

    A bill completed now by an ED debit ``posted_before`` (its upload came before its advice)
    had that debit counted as an offline purchase too: the bill completes, and a person checks
    the accumulators (review ``bill_after_upload``)."""
    medical = context.medical
    if medical is None:
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    amount = debit.record.amount_fen
    try:
        if debit.purse is ev.Purse.ED:  # one write, the amount checked inside it
            completed, changed = await medical.complete_paid_bill_async(
                bill_id, amount, context.now
            )
            await _note_completion(context, bill_id, amount, changed, posted_before)
            return await ev.post_bill_completion(context.ledger, ev.bill_completion(completed))
        else:
            record = await asyncio.to_thread(medical.get_bill, bill_id)
            split = record.split if record is not None else None
            if split is None or split.personal_account_fen or split.self_pay_fen != amount:
                return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
            completed, changed = await asyncio.to_thread(
                medical.complete_bill, bill_id, context.now
            )
    except (MedicalError, BillStateError):
        # Unknown, not this debit's share, or reversed/voided meanwhile: its debit is in the
        # ledger (in review when the bill cannot complete).
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    await _note_after_upload(context, bill_id, amount, changed and posted_before)
    return await ev.post_bill_completion(context.ledger, ev.bill_completion(completed))


async def _note_after_upload(
    context: RequestContext, bill_id: str, amount: int, after_upload: bool
) -> None:
    if after_upload:
        detail = "its debit was uploaded before its advice and counted as an offline purchase"
        await note(context, "bill_after_upload", f"bill|{bill_id}", amount, detail)


async def _note_completion(
    context: RequestContext, bill_id: str, amount: int, changed: bool, posted_before: bool
) -> None:
    """A person checks an ED debit of a bill's personal share that completed it after its
    upload (counted as an offline purchase too), or that is new while the bill was already
    complete: the share was paid twice (by another card debit, or in cash at the counter)."""
    await _note_after_upload(context, bill_id, amount, changed and posted_before)
    if not changed and not posted_before:
        detail = "a new card debit of the personal share of a bill already completed"
        await note(context, "bill_paid_twice", f"bill|{bill_id}", amount, detail)

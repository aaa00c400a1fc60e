"""The centre's half of the batch protocol: batch upload (0320, 60.3 = 201) of card-debit
records, end of upload (0320, 60.3 = 207), batch settlement (0500).

Upload intake: every record is checked, its TAC verified under the card's DTK of the record's key
version, kept on file with the sending terminal and batch, and — when its TAC verifies — posted
once per (PSAM terminal number, PSAM serial) through the same core as the online advice
(:mod:`routing.purchases`): an advice already posted, or the same batch uploaded twice, posts
nothing again. A TAC-valid record always posts; its anomalies (a date older than the offline age
limit, the PSAM of another institution, a shadow below zero) go to review beside it. A record whose
TAC does not verify never posts and goes to review. Each record keeps the card's offline counter:
at the end of an upload the counters of the batch's cards are checked across every record on
file, and a gap still open after the grace of later uploads goes to review.

:func:`intake` takes a window of records: it verifies them all, then posts them in one ledger
submission: the group-commit writer makes one durable commit of the window (DESIGN §6); a
single 0320 is a window of one, and concurrent terminals share commits the same way.
A record that paid a bill names it in field 63 (the advice's TLV under the session's TDK) and
completes it exactly as its advice would (:func:`routing.purchases.complete_bill`): once per bill,
whichever of the upload or the advice comes first, the accumulators counted by the bill only.

Batch settlement: the centre's totals are the TAC-confirmed debits on file for the terminal's
batch — uploaded records and online advices alike (both are kept by ``Ledger.record_offline``),
never approvals — compared with the terminal's field 48: result 1 balanced, 2 not balanced (the
POS then uploads every record of the batch and ends with 207, whose count is compared with every
record on file for that batch).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from hsm.keys import CardKeyPath
from ledger.core import OfflineRecord
from messages.outcome import Outcome
from messages.private import CardData, SettlementTotals
from messages.terminal import (
    BatchSettlement,
    BatchSettlementReply,
    BatchUploadEnd,
    BatchUploadRecord,
    TerminalReply,
)
from routing.common import answer, bill_data, note
from routing.context import RequestContext
from routing.debits import Debit, parse_card_datetime, read_debit, verify_debits
from routing.purchases import post_debits

# Records posted in one group-commit window: a bigger window shares its commit's index pages
# and its cards' account rows among more records (2048 → 16384: ~65 → ~47 µs a record on the
# upload bench); the writer is then busy ~0.5 s with it, which only a bulk intake ever asks
# (a 0320 over the wire is a window of one). The first windows grow from the smallest and the
# last ones shrink to it (:func:`windows`), so that the writer starts early and is left little
# to do alone at the end.
WINDOW_RECORDS_MAX = 16384
WINDOW_RECORDS_MIN = 2048
BALANCED, NOT_BALANCED = 1, 2


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One uploaded record, as fields 2, 4, 58, 41 and 60.2 of its 0320 give it."""

    pan: str
    amount_fen: int
    card: CardData
    terminal_id: str
    batch: str
    bill_id: str | None = None  # the bill the debit paid (field 63), if any


async def handle_batch_upload(request: BatchUploadRecord, context: RequestContext) -> TerminalReply:
    bill = await bill_data(context, request.bill)
    item = UploadItem(
        request.pan,
        request.amount_fen,
        request.card,
        request.terminal_id,
        request.batch,
        bill.bill_id if bill is not None else None,
    )
    (outcome,) = await intake(context, [item])
    return answer(request, context, outcome)


async def intake(context: RequestContext, items: Sequence[UploadItem]) -> list[Outcome]:
    """Take uploaded records: the outcome of each, in order (APPROVED: on file and posted, now
    or before; SECURITY_FAILURE: its TAC does not verify, in review, never posted).

    Windows are pipelined two deep: a window's postings are handed to the ledger's writer
    before the last window's results are taken and the next window's TACs verified, so the
    writer always has the next commit queued while this thread works."""
    outcomes: list[Outcome] = []
    in_flight: list[asyncio.Task[list[Outcome]]] = []
    paths: dict[tuple[str, int], CardKeyPath] = {}  # the cards' TAC key paths, made once
    try:
        for start, end in windows(len(items)):
            window = items[start:end]
            checked = await _check_window(context, window, paths)
            in_flight.append(asyncio.create_task(_post_window(context, checked)))
            await asyncio.sleep(0)  # let it hand its postings to the writer
            if len(in_flight) == 2:
                outcomes.extend(await in_flight.pop(0))
        for task in in_flight:
            outcomes.extend(await task)
    finally:
        for task in in_flight:
            task.cancel()
    return outcomes


def windows(count: int) -> list[tuple[int, int]]:
    """(start, end) of each window of ``count`` records: doubling from WINDOW_RECORDS_MIN up
    to WINDOW_RECORDS_MAX, and at the end never more than half of what is left (down to the
    minimum again).

    >>> [end - start for start, end in windows(40_000)]
    [2048, 4096, 8192, 12832, 6416, 3208, 2048, 1160]
    >>> windows(1), windows(0)
    ([(0, 1)], [])
    """
    bounds = []
    start, size = 0, WINDOW_RECORDS_MIN
    while start < count:
        left = count - start
        take = left if left <= WINDOW_RECORDS_MIN else max(WINDOW_RECORDS_MIN, min(size, left // 2))
        bounds.append((start, start + take))
        start += take
        size = min(size * 2, WINDOW_RECORDS_MAX)
    return bounds


@dataclass(slots=True)
class _Window:
    outcomes: list[Outcome]
    at: list[int]  # the readable records' indexes (parallel lists: no tuple per record)
    debits: list[Debit]
    verified: list[bool]  # their TACs
    bills: dict[int, str]  # index → the bill its debit paid


async def _check_window(
    context: RequestContext,
    items: Sequence[UploadItem],
    paths: dict[tuple[str, int], CardKeyPath],
) -> _Window:
    outcomes: list[Outcome] = []
    at: list[int] = []
    debits: list[Debit] = []
    for item in items:
        sender = (item.terminal_id, item.batch)
        debit = read_debit(context, item.pan, item.amount_fen, item.card, sender)
        if isinstance(debit, Outcome):
            outcomes.append(debit)
        else:
            at.append(len(outcomes))
            debits.append(debit)
            outcomes.append(Outcome.SECURITY_FAILURE)  # until its TAC verifies
    verified = await verify_debits(context, debits, paths)
    bills = {n: item.bill_id for n, item in enumerate(items) if item.bill_id is not None}
    return _Window(outcomes, at, debits, verified, bills)


async def _post_window(context: RequestContext, window: _Window) -> list[Outcome]:
    checked = zip(window.debits, window.verified, strict=True)
    on_file = [debit.on_file(ok) for debit, ok in checked]
    valid = [n for n, ok in enumerate(window.verified) if ok]
    debits = [window.debits[n] for n in valid]
    at = [window.at[n] for n in valid]
    bills = [window.bills.get(n) for n in at] if window.bills else [None] * len(at)
    posted = await post_debits(context, debits, bills, on_file)
    outcomes = window.outcomes
    for n, ok in zip(at, posted, strict=True):
        outcomes[n] = Outcome.APPROVED if ok else Outcome.SYSTEM_FAULT
    now = context.now.replace(tzinfo=None)
    late = now - timedelta(hours=context.offline.age_max_h)
    for debit in debits:
        if debit.record.when < late:
            await _note_late(context, debit, now)
    return outcomes


async def _note_late(context: RequestContext, debit: Debit, now: datetime) -> None:
    """A debit older than the offline age limit: posted all the same, and reviewed."""
    age = now - debit.record.when
    detail = f"card date {debit.record.when:%Y%m%d%H%M%S}, {age.days} days before upload"
    await note(context, "late_upload", debit.subject, debit.record.amount_fen, detail)


async def review_counter_gaps(context: RequestContext, cards: Iterable[tuple[str, str]]) -> int:
    """Each card purse's offline counters on file (verified records of every terminal, advices
    and uploads alike): a counter missing between two on file is a debit no terminal has sent.
    It is reviewed once the grace of later uploads is over — the debit after the gap is older
    than the offline age limit, by which any POS holding the missing debit had to upload it —
    and stays unreviewed until then (another POS may still bring it). The debits on file are
    posted whatever the gap. Returns the number of gaps reviewed."""
    found = await context.ledger.offline_counters(sorted(set(cards)))
    grace = timedelta(hours=context.offline.age_max_h)
    now = context.now.replace(tzinfo=None)
    reviewed = 0
    for (serial, purse), pairs in found.items():
        for (before, _), (after, when) in itertools.pairwise(pairs):
            dated = parse_card_datetime(when)
            if after - before > 1 and dated is not None and now - dated > grace:
                subject = f"counter-gap|{serial}|{purse}|{before}|{after}"
                detail = (
                    f"offline counters {before + 1}..{after - 1} on no record, the next"
                    f" debit dated {dated:%Y-%m-%d %H:%M}"
                )
                await note(context, "offline_counter_gap", subject, 0, detail)
                reviewed += 1
    return reviewed


async def handle_batch_upload_end(
    request: BatchUploadEnd, context: RequestContext
) -> TerminalReply:
    """The terminal's count of records sent against the records on file for its batch."""
    if not request.count.isdigit() or not request.batch.isdigit():
        return answer(request, context, Outcome.FORMAT_ERROR)
    held = await context.ledger.offline_records(request.terminal_id, int(request.batch))
    if int(request.count) != len(held):
        subject = f"upload|{request.terminal_id}|{request.batch}"
        detail = f"terminal sent {int(request.count)}, centre holds {len(held)}"
        await note(context, "upload_count_mismatch", subject, 0, detail)
    await review_counter_gaps(context, ((r.application_serial, r.purse) for r in held))
    return answer(request, context, Outcome.APPROVED)


def centre_totals(held: Sequence[OfflineRecord]) -> SettlementTotals:
    """TAC-confirmed debits on file (records whose TAC did not verify count for nothing).

    >>> row = OfflineRecord("000000000001", 1, "P1", 1, "31", "ED", 250, "00", "2026", "t")
    >>> centre_totals([row, replace(row, psam_serial=2, transfer_id=None)])
    SettlementTotals(debit_fen=250, debit_count=1, credit_fen=0, credit_count=0, result=0)
    """
    confirmed = [r for r in held if r.transfer_id is not None]
    return SettlementTotals(sum(r.amount_fen for r in confirmed), len(confirmed), 0, 0)


async def handle_batch_settlement(
    request: BatchSettlement, context: RequestContext
) -> BatchSettlementReply:
    """Field 48 of the reply: the terminal's totals with the result, 1 balanced / 2 not."""
    if not request.batch.isdigit():
        return _settled(request, context, Outcome.FORMAT_ERROR, None)
    held = await context.ledger.offline_records(request.terminal_id, int(request.batch))
    centre = centre_totals(held)
    sent = request.totals
    agree = (sent.debit_fen, sent.debit_count, sent.credit_fen, sent.credit_count) == (
        centre.debit_fen,
        centre.debit_count,
        centre.credit_fen,
        centre.credit_count,
    )
    totals = replace(sent, result=BALANCED if agree else NOT_BALANCED)
    return _settled(request, context, Outcome.APPROVED, totals)


def _settled(
    request: BatchSettlement,
    context: RequestContext,
    outcome: Outcome,
    totals: SettlementTotals | None,
) -> BatchSettlementReply:
    reply = answer(request, context, outcome, BatchSettlementReply, totals=totals)
    assert isinstance(reply, BatchSettlementReply)
    return reply

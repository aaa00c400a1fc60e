"""The visit a settlement leaves in the card's record book (specs/card-layout.md), and the check
of the visit the card already holds.

An approved settlement whose request carried the card's GET CHALLENGE gets, in its reply's
field 63 (under the session's TDK), an APPEND RECORD of EF 001A MACed by the HSM under the
card's record key (MK_RECORD diversified by the application serial) for that challenge: only
the centre can make a record the card accepts, and only once. The record is the centre's facts
about the bill — its service date, institution, total and split — with the department and the
ICD-10 diagnoses the POS sent beside the bill reference.

Before the reply carries the script, the centre keeps its own copy of the record, sealed
(ledger.medical.card_copies): no copy, no script — a card never holds a record the centre
cannot show again.

The card's newest visit, when the POS sent it (`card_visit`), must be one the centre wrote:
a bill of this card (or of an earlier card of the same person: a replacement card is written
with the visits the centre kept), at the institution and for the amounts the record says, and
byte for byte the centre's copy — department and diagnoses too. Otherwise the card goes to review
(`card_visit_mismatch`); the settlement itself is answered as ever.

The card's whole visit file, when the POS sent it (`card_visit_file`: each record's bill id and
the first 8 bytes of its SHA-256), is checked the same way record by record against the copies:
an older record altered on the chip goes to review as well.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import NamedTuple

from hsm.errors import HsmError
from hsm.keys import KeyUsage
from ledger.medical.bills import BillRecord
from ledger.medical.card_copies import VisitCopies
from ledger.medical.service import micros
from messages.card_records import (
    VISIT_RECORD_BYTES,
    FileEntry,
    RecordFormatError,
    Visit,
    append_visit_command,
    parse_visit_file,
    record_digest,
)
from messages.private import BillData
from routing.cardkeys import card_key
from routing.common import note
from routing.context import CardRecord, RequestContext

MISMATCH = "card_visit_mismatch"
SCRIPT_UNAVAILABLE = "visit_script_unavailable"
COPY_UNAVAILABLE = "visit_copy_unavailable"
FILE_DIFFERS = "the card's visit file differs from the centre's copies"


def diagnoses_of(wanted: BillData) -> tuple[str, ...]:
    """The request's ICD-10 codes ("J45.9,I10"); RecordFormatError when they do not fit.
    Neither codes nor a department (a settlement without a card book): nothing to check."""
    if not wanted.diagnoses and not wanted.department:
        return ()
    codes = tuple(c.strip() for c in (wanted.diagnoses or "").split(",") if c.strip())
    Visit("20000101", "X", wanted.department or "", codes, "00" * 8, 0, 0, 0, 0).encode()
    return codes


def visit_of(record: BillRecord, wanted: BillData) -> Visit:
    split = record.split
    return Visit(
        record.service_date.strftime("%Y%m%d"),
        record.institution_id,
        wanted.department or "",
        diagnoses_of(wanted),
        record.bill_id,
        split.total_fen,
        split.personal_account_fen,
        split.pooled_fen,
        split.self_pay_fen,
    )


class VisitScript(NamedTuple):
    apdu: bytes | None  # the APPEND RECORD with its MAC; None: no record this time
    reason: str  # why not, for the request's log line ("" when made or not asked for)


async def visit_script(
    context: RequestContext,
    card: CardRecord,
    challenge: bytes | None,
    record: BillRecord,
    wanted: BillData,
) -> VisitScript:
    """The line-protected APPEND RECORD for the card's challenge; none without a challenge, or
    when the HSM cannot make it (no MK_RECORD of the card's key version: the reason says so) —
    the settlement stands either way."""
    if challenge is None:
        return VisitScript(None, "")
    visit = visit_of(record, wanted)
    command = append_visit_command(visit)
    try:
        mac = await context.hsm.script_mac(card_key(KeyUsage.MK_RECORD, card), challenge, command)
    except HsmError as error:
        return VisitScript(None, f"{SCRIPT_UNAVAILABLE}: {type(error).__name__}")
    copies = None if context.medical is None else context.medical.visit_copies
    if copies is None:
        return VisitScript(None, f"{COPY_UNAVAILABLE}: no copy store")
    try:
        await copies.keep(
            card.application_serial, record.bill_id, visit.encode(), micros(context.now)
        )
    except (HsmError, LookupError, ValueError, OSError, sqlite3.Error) as error:
        return VisitScript(None, f"{COPY_UNAVAILABLE}: {type(error).__name__}")
    return VisitScript(command + mac, "")


async def check_card_visit(context: RequestContext, card: CardRecord, reported: bytes) -> None:
    """The card's newest visit against the centre's bill; a disagreement goes to review."""
    subject = f"card|{card.application_serial}"
    try:
        visit = Visit.decode(reported)
    except RecordFormatError:
        await note(context, MISMATCH, subject, 0, "the card's newest visit record is unreadable")
        return
    medical = context.medical
    found, serial = await _bill_of(context, card, visit.bill_id)
    why = _disagreement(card, visit, found, serial != card.application_serial)
    if not why and medical is not None and medical.visit_copies is not None:
        why = await _against_copy(medical.visit_copies, serial, visit.bill_id, reported)
    if why:
        await note(context, MISMATCH, f"{subject}|bill|{visit.bill_id}", visit.total_fen, why)


async def check_card_file(
    context: RequestContext, card: CardRecord, reported: bytes, newest: bytes | None
) -> None:
    """Every record of the card's visit file (``card_visit_file``: each record's bill id and
    digest) against the centre's copy of that bill's record: one that is not a copy kept for
    this card (or an earlier card of its person), or whose digest is not the copy's, goes to
    review. The record the request also carries whole (``newest``) was checked by
    `check_card_visit`; a copy the card does not hold (a lost or refused script) is no
    difference: the check runs from the card to the centre."""
    subject = f"card|{card.application_serial}"
    try:
        entries = parse_visit_file(reported)
    except RecordFormatError:
        await note(context, MISMATCH, subject, 0, "the card's visit file report is unreadable")
        return
    medical = context.medical
    copies = None if medical is None else medical.visit_copies
    if copies is None:
        return  # no copies to compare with (a centre without a medical store)
    checked = None
    if newest is not None and len(newest) == VISIT_RECORD_BYTES:
        checked = FileEntry.of(newest)
    others = [entry for entry in dict.fromkeys(entries) if entry != checked]
    # at most 10 openings (9 beside the newest), at once: pipelined over a network HSM
    found = await asyncio.gather(*(_entry_against_copy(context, card, copies, e) for e in others))
    for entry, (why, fen) in zip(others, found, strict=True):
        if why:
            await note(context, MISMATCH, f"{subject}|bill|{entry.bill_id}", fen, why)


class EntryCheck(NamedTuple):
    why: str  # "" when the record is the centre's copy
    total_fen: int  # the bill's total, for the review item (0: no such bill)


async def _entry_against_copy(
    context: RequestContext, card: CardRecord, copies: VisitCopies, entry: FileEntry
) -> EntryCheck:
    found, serial = await _bill_of(context, card, entry.bill_id)
    fen = 0 if found is None else found.split.total_fen
    try:
        kept = await copies.find(serial, entry.bill_id)
    except (HsmError, LookupError, ValueError) as error:
        return EntryCheck(
            f"the centre's copy of the visit cannot be opened ({type(error).__name__})", fen
        )
    differs = kept is None or record_digest(kept) != entry.digest
    return EntryCheck(FILE_DIFFERS if differs else "", fen)


async def _bill_of(
    context: RequestContext, card: CardRecord, bill_id: str
) -> tuple[BillRecord | None, str]:
    """The centre's bill and the application serial of the card it was settled with: this
    card's, or an earlier card's of the same person (a replacement card holds its person's
    visits); this card's when the bill is unknown or another person's."""
    medical = context.medical
    found = None if medical is None else await asyncio.to_thread(medical.get_bill, bill_id)
    serial = card.application_serial
    if found is not None and medical is not None and found.card_no != card.card_no:
        earlier = await asyncio.to_thread(medical.directory.cardholder, found.card_no)
        if earlier is not None and earlier.person_id == card.cardholder_id:
            serial = earlier.application_serial
    return found, serial


async def _against_copy(copies: VisitCopies, serial: str, bill_id: str, reported: bytes) -> str:
    """Why the card's record is not the centre's copy kept for the bill's card ("" when it
    is)."""
    try:
        kept = await copies.find(serial, bill_id)
    except (HsmError, LookupError, ValueError) as error:
        return f"the centre's copy of the visit cannot be opened ({type(error).__name__})"
    if kept is None:
        return "the centre keeps no copy of the card's visit"
    if kept != reported:
        return "the card's visit record differs from the centre's copy (department or diagnoses)"
    return ""


def _disagreement(
    card: CardRecord, visit: Visit, found: BillRecord | None, earlier_card: bool
) -> str:
    """``earlier_card``: the bill is of an earlier card of the same person (the replacement
    card was written with the visits the centre kept)."""
    if found is None:
        return "the card holds a visit for a bill the centre does not know"
    if found.card_no != card.card_no and not earlier_card:
        return "the card holds a visit for another card's bill"
    split = found.split
    expected = (
        found.service_date.strftime("%Y%m%d"),
        found.institution_id,
        split.total_fen,
        split.personal_account_fen,
        split.pooled_fen,
        split.self_pay_fen,
    )
    held = (
        visit.date,
        visit.institution_id,
        visit.total_fen,
        visit.personal_fen,
        visit.pooled_fen,
        visit.self_pay_fen,
    )
    if held != expected:
        return "the card's visit record differs from the centre's bill (date, place or amounts)"
    return ""

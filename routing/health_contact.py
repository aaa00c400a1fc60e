"""The card's health data at its next contact, the cardholder's consent, and the scripts a card
refused (specs/card-layout.md "Next contact", specs/terminal-interface.md).

A settlement's POS reads EF 0019 after the cardholder's VERIFY and sends it (field 63
``card_health``). The centre compares its 92 data bytes with its own copy of the person's health
data (``card_health``): equal, the copy is on the card (no longer pending); different while an
update is pending, the POS gets the update in the 0230 to the settlement's next 0220 (the
card's challenge in its field 58 tag 06, the script in field 63 ``health_script``); different
with nothing pending, the card holds health data the centre did not send: review
``card_health_mismatch``. Reading past byte 47 needs the PIN, so ``card_health`` also opens the
cardholder's consent window: for 30 minutes the institution's HIS may read the centre's copy of
the card's book (``GET /his/v1/cards/{card_no}/book``).

A POS reports a centre script the card refused (field 63 ``script_refused``: the script's
tag and the card's status word) in its next message with field 63 for that card: review
``card_script_refused``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import NamedTuple

from hsm.errors import HsmError
from ledger.medical.card_copies import Consent, VisitCopies
from ledger.medical.service import micros
from messages.card_records import HEALTH_BYTES, HEALTH_DATA_BYTES, RecordFormatError, pack_script
from messages.private import BillData
from routing.common import note
from routing.context import CardRecord, RequestContext

MISMATCH = "card_health_mismatch"
SCRIPT_REFUSED = "card_script_refused"
SCRIPT_UNAVAILABLE = "health_script_unavailable"
CONSENT_WINDOW = dt.timedelta(minutes=30)
SCRIPT_NAMES = {0x0D: "visit", 0x0F: "health"}


def _copies(context: RequestContext) -> VisitCopies | None:
    return None if context.medical is None else context.medical.visit_copies


async def _person(context: RequestContext, card: CardRecord) -> str | None:
    medical = context.medical
    if medical is None:
        return None
    holder = await asyncio.to_thread(medical.directory.cardholder, card.card_no)
    return None if holder is None else holder.person_id


async def card_health_seen(context: RequestContext, card: CardRecord, reported: bytes) -> None:
    """At an approved settlement: the card's EF 0019 (96 bytes, read after VERIFY) against the
    centre's copy; and the institution's consent window for the card opens."""
    copies = _copies(context)
    if copies is None:
        return
    now_us = micros(context.now)
    until = now_us + int(CONSENT_WINDOW.total_seconds() * 1_000_000)
    consent = Consent(context.terminal.institution_id, card.application_serial, now_us, until)
    await copies.open_consent(consent)
    person = await _person(context, card)
    if person is None or len(reported) != HEALTH_BYTES:
        return
    try:
        kept = await copies.health(person)
    except (HsmError, LookupError, ValueError) as error:
        why = f"the centre's copy of the health data cannot be opened ({type(error).__name__})"
        await note(context, MISMATCH, f"card|{card.application_serial}", 0, why)
        return
    on_card = reported[:HEALTH_DATA_BYTES]
    if kept is None:
        if reported[0] != 0:  # a file never written is all zeros
            why = "the card holds health data the centre keeps no copy of"
            await note(context, MISMATCH, f"card|{card.application_serial}", 0, why)
        return
    row, data = kept
    if data == on_card:
        if row.pending:
            await copies.health_written(person, row.updated_at_us)
        return
    if not row.pending:
        why = "the card's health data differ from the centre's copy, and no update is pending"
        await note(context, MISMATCH, f"card|{card.application_serial}", 0, why)


class HealthScript(NamedTuple):
    value: bytes | None  # field 63 health_script: each command as 1-byte length ‖ command
    reason: str  # why none, for the log line ("" when made or nothing pending)


async def health_script(
    context: RequestContext, card: CardRecord, challenge: bytes | None
) -> HealthScript:
    """The pending health data's script for the card's challenge (a settlement's 0220); none
    when nothing is pending for the person, or without a challenge or a script maker."""
    if challenge is None:  # first: the copies are read through the medical core's timing proxy
        return HealthScript(None, "")
    copies = _copies(context)
    if copies is None or copies.scripts is None:
        return HealthScript(None, "")
    person = await _person(context, card)
    try:
        kept = None if person is None else await copies.health(person)
        if kept is None or not kept[0].pending:
            return HealthScript(None, "")
        serial, version = card.application_serial, card.key_version
        commands = await copies.scripts(serial, version, kept[1], challenge)
        value = pack_script(commands)
    except (HsmError, LookupError, ValueError, RecordFormatError) as error:
        return HealthScript(None, f"{SCRIPT_UNAVAILABLE}: {type(error).__name__}")
    return HealthScript(value, "")


async def script_refused(context: RequestContext, card: CardRecord, reported: bytes) -> None:
    """A POS reports that the card refused one of the centre's scripts: review."""
    name = SCRIPT_NAMES.get(reported[0], f"tag {reported[0]:02X}")
    sw = reported[1:].hex().upper()
    detail = f"the card refused the centre's {name} script ({sw})"
    subject = f"card|{card.application_serial}|{name}|{context.now:%Y%m%d}"  # once a day
    await note(context, SCRIPT_REFUSED, subject, 0, detail)


def reports_at_settlement(wanted: BillData) -> bool:
    """Whether :func:`at_settlement` has anything to do (most settlements: not; the caller
    skips the coroutine)."""
    return wanted.script_refused is not None or wanted.card_health is not None


async def at_settlement(context: RequestContext, card: CardRecord, wanted: BillData) -> None:
    """An approved settlement's field 63: a refusal the POS reports, the card's health data."""
    if wanted.script_refused is not None:
        await script_refused(context, card, wanted.script_refused)
    if wanted.card_health is not None:
        await card_health_seen(context, card, wanted.card_health)


class AdviceReply(NamedTuple):
    bill: bytes | None  # the 0230's field 63 under the TDK: health_script; None: no field 63
    reason: str  # why no script, for the log line


NO_ADVICE_REPLY = AdviceReply(None, "")


def quiet_advice(challenge: bytes | None, wanted: BillData | None) -> bool:
    """Whether :func:`at_advice` would only answer `NO_ADVICE_REPLY`: no refusal reported and no
    challenge to make a script for (the caller skips the coroutine)."""
    return challenge is None and (wanted is None or wanted.script_refused is None)


async def at_advice(
    context: RequestContext, card: CardRecord, challenge: bytes | None, wanted: BillData | None
) -> AdviceReply:
    """A settlement's 0220 (debit advice or cash close) answered 00: a refusal the POS reports,
    and the pending health data's script for the challenge of its field 58."""
    if wanted is not None and wanted.script_refused is not None:
        await script_refused(context, card, wanted.script_refused)
    tdk = context.session.tdk if context.session is not None else None
    if tdk is None or wanted is None or not wanted.bill_id:
        return AdviceReply(None, "")
    script = await health_script(context, card, challenge)
    if script.value is None:
        return AdviceReply(None, script.reason)
    plain = BillData(bill_id=wanted.bill_id, health_script=script.value).build()
    return AdviceReply(await context.hsm.encrypt_data(tdk, plain), "")

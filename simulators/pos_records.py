"""The POS and the card's record book (specs/card-layout.md): before a settlement it reads the
card's visit file (the newest record whole, every record's bill id and digest) and its health
data file (all reported to the centre) and takes the card's
challenge; after the approval it hands the centre's visit script to the card as it came; before
each 0220 of the settlement it takes a challenge again, and hands the card the centre's health
script when the 0230 carries one; a script the card refuses is reported to the centre
(``script_refused``). It shows the hospital the cardholder's recent visits and health data once
the cardholder has entered the PIN, with whether the holder and health data carry the centre's
signature (simulators.pos_signatures), and the emergency block without it.

The POS makes no record itself: it cannot — only the centre's HSM holds the record key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from messages.card_records import (
    DONOR_NO,
    DONOR_UNKNOWN,
    DONOR_YES,
    HEALTH_BYTES,
    HEALTH_OPEN_BYTES,
    VISIT_RECORDS_MAX,
    Emergency,
    HealthData,
    RecordFormatError,
    Visit,
    read_health_command,
    read_visit_command,
    unpack_script,
    visit_file,
)
from messages.card_signatures import PublishedKey
from messages.private import BillData
from simulators import pos_signatures, terminal_card
from simulators.card import terminal as card_terminal
from simulators.terminal_link import yuan
from switch.card_io.connection import ApduError, CardConnection, expect

GET_CHALLENGE = bytes.fromhex("0084000004")
DONOR_NAMES = {DONOR_UNKNOWN: "not recorded", DONOR_YES: "yes", DONOR_NO: "no"}
SW_OK = 0x9000
SW_RECORD_NOT_FOUND = 0x6A83
SW_FILE_NOT_FOUND = 0x6A82


TAG_VISIT_SCRIPT = 0x0D  # field 63 tags, as script_refused names the script refused
TAG_HEALTH_SCRIPT = 0x0F


class BeforeSettlement(NamedTuple):
    challenge: bytes  # the card's GET CHALLENGE: the centre MACs the visit script for it
    newest: bytes | None  # the card's newest visit record (None: the book is empty)
    health: bytes | None  # EF 0019, all 96 bytes (None: a card without the file)
    visit_file: bytes | None  # field 63 card_visit_file: each record's bill id and digest


def before_settlement(card: CardConnection) -> BeforeSettlement:
    """In the application, after VERIFY: READ RECORD 1…10 of EF 001A (until none), READ BINARY
    of EF 0019, then GET CHALLENGE last (the script must be the next protected command the card
    sees)."""
    records = _records(card)
    data, sw = card.transmit(read_health_command(0, HEALTH_BYTES))
    health = data if sw == SW_OK and len(data) == HEALTH_BYTES else None
    newest = records[0] if records else None
    whole = visit_file(records) if records else None
    return BeforeSettlement(expect(card, GET_CHALLENGE, "GET CHALLENGE"), newest, health, whole)


class Applied(NamedTuple):
    line: str  # the receipt's line
    refused: bytes | None  # field 63 script_refused: the script's tag and the card's SW


def apply_visit_script(card: CardConnection, script: bytes | None) -> Applied:
    """The centre's APPEND RECORD to the card, as it came."""
    if not script:
        return Applied("  no visit record from the centre", None)
    _, sw = card.transmit(script)
    if sw != SW_OK:
        refused = bytes([TAG_VISIT_SCRIPT]) + sw.to_bytes(2, "big")
        return Applied(f"  the card refused the visit record ({sw:04X})", refused)
    return Applied("  visit recorded on the card", None)


def apply_health_script(card: CardConnection, script: bytes) -> Applied:
    """The centre's health script (field 63 ``health_script``): its commands in order, stopping
    at the first status word that is not 9000."""
    try:
        commands = unpack_script(script)
    except RecordFormatError:
        return Applied("  the centre's health data script is unreadable", None)
    for command in commands:
        _, sw = card.transmit(command)
        if sw != SW_OK:
            refused = bytes([TAG_HEALTH_SCRIPT]) + sw.to_bytes(2, "big")
            return Applied(f"  the card refused the health data update ({sw:04X})", refused)
    return Applied("  health data updated on the card", None)


def _visit(card: CardConnection, number: int) -> bytes | None:
    data, sw = card.transmit(read_visit_command(number))
    if sw in (SW_RECORD_NOT_FOUND, SW_FILE_NOT_FOUND):  # no such record; a card with no book
        return None
    if sw != SW_OK:
        raise ApduError(f"READ RECORD {number} of EF 001A", sw)
    return data


def _records(card: CardConnection, count: int = VISIT_RECORDS_MAX) -> list[bytes]:
    """The records of EF 001A as read, newest first, until the card has no more."""
    found = []
    for number in range(1, min(count, VISIT_RECORDS_MAX) + 1):
        raw = _visit(card, number)
        if raw is None:
            break
        found.append(raw)
    return found


def recent_visits(card: CardConnection, count: int = VISIT_RECORDS_MAX) -> list[Visit]:
    """Newest first; in the application after VERIFY (the card refuses otherwise: 6982)."""
    return [Visit.decode(raw) for raw in _records(card, count)]


def emergency(card: CardConnection) -> Emergency | None:
    """The emergency block of EF 0019: no PIN needed."""
    return Emergency.decode(expect(card, read_health_command(0, HEALTH_OPEN_BYTES), "READ 0019"))


async def emergency_lines(card: CardConnection) -> list[str]:
    """The POS's `emergency` command: SELECT, no PIN, the emergency block as shown."""
    card_terminal.select(card)
    found = emergency(card)
    if found is None:
        return ["emergency block: none on the card"]
    return [
        f"emergency block: blood {found.blood_type or '?'},"
        f" allergies {','.join(found.allergies) or '-'},"
        f" implants {','.join(found.implants) or '-'}, donor {DONOR_NAMES[found.donor]},"
        f" emergency contact {found.emergency_phone or '-'}"
    ]


def health(card: CardConnection) -> HealthData | None:
    """The whole health data file, after VERIFY; None when never written."""
    raw = expect(card, read_health_command(0, HEALTH_BYTES), "READ 0019")
    return None if raw[0] == 0 else HealthData.decode(raw)


def visit_lines(visits: list[Visit]) -> list[str]:
    """What the POS shows the hospital: one line a visit."""
    return [
        f"{v.date} {v.institution_id} {v.department or '-'} {','.join(v.diagnoses) or '-'}"
        f" bill {v.bill_id} total {yuan(v.total_fen)} (personal {yuan(v.personal_fen)},"
        f" pooled {yuan(v.pooled_fen)}, self-pay {yuan(v.self_pay_fen)})"
        for v in visits
    ]


async def book(card: CardConnection, pin: str, keys: Sequence[PublishedKey] = ()) -> list[str]:
    """The POS's `book` command: SELECT and VERIFY (the cardholder's consent), then the book."""
    terminal_card.open_application(card, pin)
    return book_lines(card, keys)


def book_lines(card: CardConnection, keys: Sequence[PublishedKey] = ()) -> list[str]:
    """The card's record book as the POS shows it, in the application after VERIFY: the health
    data (or that there are none), the recent visits, newest first, then whether the holder
    and health data are signed by the centre (checked with ``keys``, its published keys)."""
    raw = expect(card, read_health_command(0, HEALTH_BYTES), "READ 0019")
    found = None if raw[0] == 0 else HealthData.decode(raw)
    lines = ["health data: none on the card"]
    if found is not None:
        lines = [
            f"health data (updated {found.updated_at} by {found.updated_by}):"
            f" blood {found.blood_type or '?'}, allergies {','.join(found.allergies) or '-'},"
            f" implants {','.join(found.implants) or '-'},"
            f" chronic {','.join(found.chronic) or '-'}, donor {DONOR_NAMES[found.donor]},"
            f" emergency {found.emergency_phone or '-'}"
        ]
    visits = recent_visits(card)
    lines.append(f"visits on the card: {len(visits)}")
    lines += [f"  {line}" for line in visit_lines(visits)]
    lines.append(pos_signatures.check_holder(card, keys).line("holder data"))
    if found is not None:
        lines.append(pos_signatures.check_health(card, keys, raw).line("health data"))
    return lines


class Contact:
    """The card's contact during one settlement: a refused script still to report (field 63
    ``script_refused`` of the next 0220), and whether the centre's health script came. Before
    each 0220 the POS takes a challenge (field 58 ``challenge``) until one 0230 has brought a
    health script."""

    def __init__(self, card: CardConnection, refused: bytes | None) -> None:
        self.card = card
        self.refused = refused
        self.health_done = False
        self.lines: list[str] = []  # the receipt's lines of the health script

    def challenge(self) -> bytes | None:
        if self.health_done:
            return None
        data, sw = self.card.transmit(GET_CHALLENGE)
        return data if sw == SW_OK and len(data) == 4 else None

    def answered(self, reply: BillData | None) -> None:
        """A 0230 answered 00 (the refusal it carried is reported): its health script, if any,
        to the card."""
        self.refused = None
        if reply is None or reply.health_script is None:
            return
        self.health_done = True
        applied = apply_health_script(self.card, reply.health_script)
        self.lines.append(applied.line)
        self.refused = applied.refused

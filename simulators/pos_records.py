"""The POS and the card's record book (specs/card-layout.md): before a settlement it reads the
card's newest visit (reported to the centre) and takes the card's challenge; after the approval
it hands the centre's visit script to the card as it came; and it shows the hospital the
cardholder's recent visits and health data, once the cardholder has entered the PIN, with
whether the holder and health data carry the centre's signature (simulators.pos_signatures).

The POS makes no record itself: it cannot — only the centre's HSM holds the record key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from messages.card_records import (
    HEALTH_BYTES,
    HEALTH_OPEN_BYTES,
    VISIT_RECORDS_MAX,
    Emergency,
    HealthData,
    Visit,
    read_health_command,
    read_visit_command,
)
from messages.card_signatures import PublishedKey
from simulators import pos_signatures, terminal_card
from simulators.terminal_link import yuan
from switch.card_io.connection import ApduError, CardConnection, expect

GET_CHALLENGE = bytes.fromhex("0084000004")
SW_OK = 0x9000
SW_RECORD_NOT_FOUND = 0x6A83
SW_FILE_NOT_FOUND = 0x6A82


class BeforeSettlement(NamedTuple):
    challenge: bytes  # the card's GET CHALLENGE: the centre MACs the visit script for it
    newest: bytes | None  # the card's newest visit record (None: the book is empty)


def before_settlement(card: CardConnection) -> BeforeSettlement:
    """In the application, after VERIFY: READ RECORD 1 of EF 001A, then GET CHALLENGE last
    (the script must be the next protected command the card sees)."""
    newest = _visit(card, 1)
    return BeforeSettlement(expect(card, GET_CHALLENGE, "GET CHALLENGE"), newest)


def apply_visit_script(card: CardConnection, script: bytes | None) -> str:
    """The centre's APPEND RECORD to the card, as it came; the receipt line."""
    if not script:
        return "  no visit record from the centre"
    _, sw = card.transmit(script)
    if sw != SW_OK:
        return f"  the card refused the visit record ({sw:04X})"
    return "  visit recorded on the card"


def _visit(card: CardConnection, number: int) -> bytes | None:
    data, sw = card.transmit(read_visit_command(number))
    if sw in (SW_RECORD_NOT_FOUND, SW_FILE_NOT_FOUND):  # no such record; a card with no book
        return None
    if sw != SW_OK:
        raise ApduError(f"READ RECORD {number} of EF 001A", sw)
    return data


def recent_visits(card: CardConnection, count: int = VISIT_RECORDS_MAX) -> list[Visit]:
    """Newest first; in the application after VERIFY (the card refuses otherwise: 6982)."""
    found = []
    for number in range(1, min(count, VISIT_RECORDS_MAX) + 1):
        raw = _visit(card, number)
        if raw is None:
            break
        found.append(Visit.decode(raw))
    return found


def emergency(card: CardConnection) -> Emergency | None:
    """The emergency block of EF 0019: no PIN needed."""
    return Emergency.decode(expect(card, read_health_command(0, HEALTH_OPEN_BYTES), "READ 0019"))


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
            f" chronic {','.join(found.chronic) or '-'}, donor {found.donor},"
            f" emergency {found.emergency_phone or '-'}"
        ]
    visits = recent_visits(card)
    lines.append(f"visits on the card: {len(visits)}")
    lines += [f"  {line}" for line in visit_lines(visits)]
    lines.append(pos_signatures.check_holder(card, keys).line("holder data"))
    if found is not None:
        lines.append(pos_signatures.check_health(card, keys, raw).line("health data"))
    return lines

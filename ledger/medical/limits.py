"""Plausibility limits on a submitted bill, and the rule that keeps a bill from holding a
person's benefits hostage. Pure: `check_bill` looks at the bill, the institution's level and the
catalogue in force; the service refuses a bill it finds implausible before anything is stored.

Why: any institution with a HIS credential can bill any card, and a bill reserves the person's
yearly accumulators (deductible, pooled cap, personal-account share) from its submission. With
only the structural bounds of `ledger.medical.split` (500 lines × 100 000 × 100 000 000 fen) one
bill could reserve a person's whole annual pooled cap. So, configurable, with defaults for an
ordinary outpatient and inpatient practice:

- lines per bill (`lines_max`), quantity per line (`quantity_max`), unit price per line
  (`unit_price_max_fen`);
- a unit price at most `ceiling_multiple_max` times the catalogue's price ceiling, for an item
  the catalogue knows with a ceiling (above the ceiling is legitimate — the excess is self-pay —
  but not by orders of magnitude; 0 turns the check off);
- the bill's total by the institution's level (`total_max_fen_by_level`: level 1, community
  clinics and pharmacies; level 2, district hospitals; level 3, the large hospitals).

Reservations a bill cannot hold hostage (the rule; `ledger.medical.service` applies it):

1. A bill is *open* from its submission until the POS's settlement (0200) references it. An
   open bill holds its accumulator reservation for `open_ttl` (default 2 h, its `expires_at`),
   not the 24 h of a settled bill: past it, the POS's settlement is refused (`expired`) and the
   daemon's expiry sweep (every minute, `switch.his_api`) moves it to *expired*, releasing the
   reservation, so a later bill — from any institution — is split against the person's year
   without it.
2. Once the POS has approved it (the card is at the counter), the bill holds its reservation
   until it completes, is reversed or voided, or 24 h after its submission (`bill_ttl`).
3. The level's total applies to one institution's open bills for one person together, and
   it may have at most `open_bills_max` of them (`check_held`): an institution without the
   card holds at most one level-capped total of the person's year, for at most `open_ttl` plus
   one sweep after its latest submission.
4. A later bill is never refused because of another bill's reservation: it is split against
   the person's year as reserved (above the annual pooled cap, self-pay) until the hold ends.

>>> from ledger.medical.split import BillLine
>>> from ledger.medical.catalogue import CatalogueVersion, CatalogueItem, Coverage
>>> import datetime as dt
>>> catalogue = CatalogueVersion(1, dt.date(2026, 1, 1),
...     {"X01": CatalogueItem("X01", "x", "box", 1000, Coverage.A)})
>>> limits = BillLimits()
>>> check_bill(Bill((BillLine("X01", 2, 1200),)), 1, catalogue, limits) is None
True
>>> check_bill(Bill((BillLine("X01", 1, 20_000),)), 1, catalogue, limits)
'line 1: unit price 20000 fen is more than 10 times the catalogue ceiling of 1000 fen'
>>> check_bill(Bill((BillLine("Z99", 10_000, 1_000_000),)), 1, catalogue, limits)
'the bill total 10000000000 fen is over the limit of 2000000 fen for a level 1 institution'
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.medical.bills import BillRecord, BillState, Held
from ledger.medical.catalogue import CatalogueVersion
from ledger.medical.split import Bill

#: The bill's total at most, by institution level 1, 2, 3 (20 000, 200 000, 1 000 000 yuan).
TOTAL_MAX_FEN_BY_LEVEL = (2_000_000, 20_000_000, 100_000_000)


@dataclass(frozen=True, slots=True)
class BillLimits:
    lines_max: int = 300
    quantity_max: int = 10_000
    unit_price_max_fen: int = 10_000_000  # 100 000 yuan for one unit
    ceiling_multiple_max: int = 10  # a unit price above this many times the ceiling; 0: off
    total_max_fen_by_level: tuple[int, int, int] = TOTAL_MAX_FEN_BY_LEVEL
    open_bills_max: int = 50  # one institution's open bills for one card

    def __post_init__(self) -> None:
        figures = (self.lines_max, self.quantity_max, self.unit_price_max_fen, self.open_bills_max)
        if min(figures) < 1 or self.ceiling_multiple_max < 0:
            raise ValueError("bill limits are positive (ceiling_multiple_max: 0 turns it off)")
        if len(self.total_max_fen_by_level) != 3 or min(self.total_max_fen_by_level) < 1:
            raise ValueError("total_max_fen_by_level has three positive totals, levels 1, 2, 3")

    def total_max_fen(self, level: int) -> int:
        if level not in (1, 2, 3):
            raise ValueError(f"institution level is 1, 2 or 3, not {level}")
        return self.total_max_fen_by_level[level - 1]


def check_bill(
    bill: Bill, level: int, catalogue: CatalogueVersion, limits: BillLimits
) -> str | None:
    """Why `bill` from an institution of `level` is implausible, or None when it is not (the
    first limit it breaks, in the order: lines, each line in the bill's order, the total)."""
    if len(bill.lines) > limits.lines_max:
        return f"the bill has {len(bill.lines)} lines, more than {limits.lines_max}"
    for number, line in enumerate(bill.lines, start=1):
        if line.quantity > limits.quantity_max:
            return f"line {number}: quantity {line.quantity} is over {limits.quantity_max}"
        if line.unit_price_fen > limits.unit_price_max_fen:
            return (
                f"line {number}: unit price {line.unit_price_fen} fen is over"
                f" {limits.unit_price_max_fen} fen"
            )
        item = catalogue.get(line.code)
        ceiling_fen = 0 if item is None else item.ceiling_fen  # 0: no ceiling to compare
        multiple = limits.ceiling_multiple_max
        if 0 < ceiling_fen * multiple < line.unit_price_fen:
            return (
                f"line {number}: unit price {line.unit_price_fen} fen is more than"
                f" {multiple} times the catalogue ceiling of {ceiling_fen} fen"
            )
    total_max_fen = limits.total_max_fen(level)
    if bill.total_fen > total_max_fen:
        return (
            f"the bill total {bill.total_fen} fen is over the limit of {total_max_fen} fen"
            f" for a level {level} institution"
        )
    return None


def check_held(held: Held, bill: Bill, level: int, limits: BillLimits) -> str | None:
    """Why `bill` cannot join the institution's open bills for the person (`held`, those not
    expired), or None: at most `open_bills_max` of them, and the level's total applies to them
    together, so that many bills cannot hold more than one may.

    >>> from ledger.medical.split import BillLine
    >>> bill = Bill((BillLine("X01", 1, 600_000),))
    >>> check_held(Held(1, 1_500_000), bill, 1, BillLimits())[-74:]
    'total 2100000 fen, over the limit of 2000000 fen for a level 1 institution'
    >>> check_held(Held(50, 0), bill, 3, BillLimits())
    'the institution has 50 open bills for this card already'
    """
    if held.bills >= limits.open_bills_max:
        return f"the institution has {held.bills} open bills for this card already"
    total_max_fen = limits.total_max_fen(level)
    if held.total_fen + bill.total_fen <= total_max_fen:
        return None
    return (
        f"the institution's open bills for this card would total"
        f" {held.total_fen + bill.total_fen} fen, over the limit of {total_max_fen} fen for a"
        f" level {level} institution"
    )


@dataclass(frozen=True, slots=True)
class HoldExpiry:
    """Whether an in-flight bill's hold is over at `now_us` (rule 1 and 2 above): an open one
    past its expiry (`open_ttl` after submission), an approved one `approved_ttl_us` after its
    submission. The state to move it to — its own when it is not due (nothing changes). An
    object, not a closure: the store may run it in the ledger's writer process."""

    now_us: int
    approved_ttl_us: int

    def __call__(self, record: BillRecord) -> BillState:
        if record.state is BillState.OPEN and record.expires_at_us < self.now_us:
            return BillState.EXPIRED
        due_us = record.created_at_us + self.approved_ttl_us
        if record.state is BillState.APPROVED and due_us < self.now_us:
            return BillState.EXPIRED
        return record.state

"""The split of a priced, itemised bill into personal-account, pooled-fund and self-pay shares
(费用结算), with a line-by-line explanation. Pure and deterministic.

Rules (SPLIT_RULES_VERSION 1; the policy passed in is the service date's year):

1. Each line is priced against the catalogue version in force on the service date:
   an unknown item or a class 丙 item is self-pay in full; a unit price above the ceiling puts the
   excess, (price − ceiling) × quantity, in self-pay; for class 乙 the item's self-pay ratio of the
   recognised amount is self-pay. What remains is the line's *eligible* amount.
2. Lines are taken in the bill's order. The eligible amount first fills what is left of the
   person's deductible (起付标准, by category and institution level) — paid from the personal
   account; above it the pooled fund pays its share (by category, level and class) and the
   patient the rest (self-pay). With `class_b_self_pay` counted, a 乙 self-pay share also fills
   the deductible first (still paid by the patient).
3. A bill for a special-expense category the person is authorised for skips the deductible: the
   pooled fund pays the category's share from the first fen, the personal account the rest.
   An unauthorised or unknown category is ignored (ordinary rules) with a note.
4. The pooled fund never pays beyond the annual cap less what it has paid or reserved this year;
   the excess is self-pay.
5. Rounding: every ratio is applied to the line's amount in fen and rounded half up to the fen,
   `(amount × bp + 5000) // 10000`; the complementary part is the difference, so every line's
   parts add up to the line exactly and the shares add up to the bill.

>>> from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
>>> from ledger.medical.policy import EXAMPLE, Category, parse_policy
>>> import datetime as dt
>>> catalogue = CatalogueVersion(1, dt.date(2026, 1, 1),
...     {"X01": CatalogueItem("X01", "阿莫西林胶囊", "盒", 1250, Coverage.A)})
>>> bill = Bill((BillLine("X01", 40, 1250),))
>>> s = split_bill(bill, catalogue, parse_policy(EXAMPLE), Person(Category.EMPLOYED), 1, ZERO)
>>> s.total_fen, s.personal_account_fen, s.pooled_fen, s.self_pay_fen
(50000, 30000, 18000, 2000)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.catalogue import BP, CatalogueVersion, Coverage
from ledger.medical.policy import Category, Counted, Policy

SPLIT_RULES_VERSION = 1
LINES_MAX = 500
QUANTITY_MAX = 100_000
UNIT_PRICE_MAX_FEN = 100_000_000  # one million yuan

__all__ = ["ZERO", "Bill", "BillError", "BillLine", "Person", "Split", "explain", "split_bill"]


class Share(enum.Enum):
    PERSONAL_ACCOUNT = "personal_account"
    POOLED = "pooled"
    SELF_PAY = "self_pay"


class Reason(enum.Enum):
    """Why a part of a line went to its share; the value is what a receipt prints."""

    UNKNOWN_ITEM = "目录外项目 unknown item"
    CLASS_C = "丙类自费 class 丙"
    ABOVE_CEILING = "超限价自付 above the price ceiling"
    CLASS_B_SELF_PAY = "乙类先行自付 class 乙 self-pay ratio"
    DEDUCTIBLE = "起付标准内 within the deductible"
    POOLED = "统筹支付 pooled share"
    COINSURANCE = "统筹外自付 patient's share above the deductible"
    ANNUAL_CAP = "超年度统筹限额 above the annual pooled cap"
    SPECIAL_POOLED = "特殊病种统筹支付 special category, pooled share"
    SPECIAL_PERSONAL = "特殊病种个人账户 special category, personal account"


class BillError(ValueError):
    pass


@dataclass(frozen=True)
class BillLine:
    code: str
    quantity: int
    unit_price_fen: int

    @property
    def amount_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass(frozen=True)
class Bill:
    lines: tuple[BillLine, ...]
    special_category: str | None = None

    def validate(self) -> None:
        if not 1 <= len(self.lines) <= LINES_MAX:
            raise BillError(f"a bill has 1 to {LINES_MAX} lines")
        for number, line in enumerate(self.lines, start=1):
            if not 1 <= line.quantity <= QUANTITY_MAX:
                raise BillError(f"line {number}: quantity 1 to {QUANTITY_MAX}")
            if not 0 <= line.unit_price_fen <= UNIT_PRICE_MAX_FEN:
                raise BillError(f"line {number}: unit price 0 to {UNIT_PRICE_MAX_FEN} fen")

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


@dataclass(frozen=True)
class Person:
    category: Category
    authorised: frozenset[str] = frozenset()  # special categories authorised for the year


@dataclass(frozen=True)
class Part:
    share: Share
    amount_fen: int
    reason: Reason


@dataclass(frozen=True)
class LineSplit:
    number: int  # 1-based, the bill's order
    code: str
    name: str  # the catalogue's name, "" for an unknown item
    coverage: Coverage | None
    quantity: int
    unit_price_fen: int
    ceiling_fen: int | None
    amount_fen: int
    parts: tuple[Part, ...]

    def share_fen(self, share: Share) -> int:
        return sum(part.amount_fen for part in self.parts if part.share is share)


@dataclass(frozen=True)
class Split:
    rules_version: int
    policy_year: int
    catalogue_version: int
    institution_level: int
    category: Category
    special_category: str | None  # applied (authorised) special category
    total_fen: int
    personal_account_fen: int
    pooled_fen: int
    self_pay_fen: int
    lines: tuple[LineSplit, ...]
    delta: Totals  # what the bill adds to the person's year
    notes: tuple[str, ...]


def ratio(amount_fen: int, bp: int) -> int:
    """`amount × bp / 10000` rounded half up to the fen.

    >>> ratio(15, 5000), ratio(13, 5000), ratio(1, 4999)
    (8, 7, 0)
    """
    return (amount_fen * bp + BP // 2) // BP


class _Running:
    """The room left this year while the lines are walked."""

    def __init__(self, deductible_left_fen: int, cap_left_fen: int) -> None:
        self.deductible_left_fen = deductible_left_fen
        self.cap_left_fen = cap_left_fen
        self.deductible_used_fen = 0
        self.eligible_fen = 0

    def fill_deductible(self, amount_fen: int) -> int:
        used = min(amount_fen, self.deductible_left_fen)
        self.deductible_left_fen -= used
        self.deductible_used_fen += used
        return used

    def pooled(self, parts: list[Part], amount_fen: int, bp: int, reason: Reason) -> int:
        """Add the pooled share of `amount_fen` (capped) to `parts`; return the uncapped share."""
        wanted = ratio(amount_fen, bp)
        paid = min(wanted, self.cap_left_fen)
        self.cap_left_fen -= paid
        parts.append(Part(Share.POOLED, paid, reason))
        parts.append(Part(Share.SELF_PAY, wanted - paid, Reason.ANNUAL_CAP))
        return wanted


def _line(
    number: int,
    line: BillLine,
    catalogue: CatalogueVersion,
    policy: Policy,
    person: Person,
    level: int,
    special_bp: int | None,
    running: _Running,
) -> LineSplit:
    item = catalogue.get(line.code)
    parts: list[Part] = []
    amount = line.amount_fen
    if item is None or item.coverage is Coverage.C:
        reason = Reason.UNKNOWN_ITEM if item is None else Reason.CLASS_C
        parts.append(Part(Share.SELF_PAY, amount, reason))
    else:
        recognised_unit = min(line.unit_price_fen, item.ceiling_fen)
        recognised = recognised_unit * line.quantity
        parts.append(Part(Share.SELF_PAY, amount - recognised, Reason.ABOVE_CEILING))
        class_b = ratio(recognised, item.self_pay_bp)
        parts.append(Part(Share.SELF_PAY, class_b, Reason.CLASS_B_SELF_PAY))
        eligible = recognised - class_b
        running.eligible_fen += eligible
        if special_bp is not None:
            wanted = running.pooled(parts, eligible, special_bp, Reason.SPECIAL_POOLED)
            parts.append(Part(Share.PERSONAL_ACCOUNT, eligible - wanted, Reason.SPECIAL_PERSONAL))
        else:
            if policy.counts(Counted.CLASS_B_SELF_PAY):
                running.fill_deductible(class_b)
            in_deductible = running.fill_deductible(eligible)
            parts.append(Part(Share.PERSONAL_ACCOUNT, in_deductible, Reason.DEDUCTIBLE))
            above = eligible - in_deductible
            bp = policy.pooled_bp(person.category, level, item.coverage)
            wanted = running.pooled(parts, above, bp, Reason.POOLED)
            parts.append(Part(Share.SELF_PAY, above - wanted, Reason.COINSURANCE))
    return LineSplit(
        number=number,
        code=line.code,
        name=item.name if item else "",
        coverage=item.coverage if item else None,
        quantity=line.quantity,
        unit_price_fen=line.unit_price_fen,
        ceiling_fen=item.ceiling_fen if item else None,
        amount_fen=amount,
        parts=tuple(part for part in parts if part.amount_fen),
    )


def _special(bill: Bill, policy: Policy, person: Person, level: int) -> tuple[int | None, str]:
    code = bill.special_category
    if code is None:
        return None, ""
    bp = policy.special_pooled_bp(code, level)
    if bp is None:
        return None, f"special category {code} is not in the {policy.year} policy: ordinary rules"
    if code not in person.authorised:
        return None, f"not authorised for special category {code}: ordinary rules"
    return bp, ""


def split_bill(
    bill: Bill,
    catalogue: CatalogueVersion,
    policy: Policy,
    person: Person,
    level: int,
    accumulators: Totals,
) -> Split:
    """Split `bill` for `person` at an institution of `level`, given the year's accumulators
    (committed plus reserved)."""
    bill.validate()
    deductible = policy.deductible_fen(person.category, level)
    running = _Running(
        max(0, deductible - accumulators.deductible_fen),
        max(0, policy.annual_pooled_cap_fen - accumulators.pooled_fen),
    )
    special_bp, note = _special(bill, policy, person, level)
    lines = tuple(
        _line(n, line, catalogue, policy, person, level, special_bp, running)
        for n, line in enumerate(bill.lines, start=1)
    )
    personal = sum(line.share_fen(Share.PERSONAL_ACCOUNT) for line in lines)
    pooled = sum(line.share_fen(Share.POOLED) for line in lines)
    self_pay = sum(line.share_fen(Share.SELF_PAY) for line in lines)
    delta = Totals(running.eligible_fen, running.deductible_used_fen, pooled, personal, self_pay)
    return Split(
        rules_version=SPLIT_RULES_VERSION,
        policy_year=policy.year,
        catalogue_version=catalogue.number,
        institution_level=level,
        category=person.category,
        special_category=bill.special_category if special_bp is not None else None,
        total_fen=bill.total_fen,
        personal_account_fen=personal,
        pooled_fen=pooled,
        self_pay_fen=self_pay,
        lines=lines,
        delta=delta,
        notes=(note,) if note else (),
    )


def offline_delta(
    policy: Policy, person: Person, level: int, amount_fen: int, accumulators: Totals
) -> Totals:
    """What a posted offline purchase (personal-account money, no bill) adds to the year: it is
    eligible spending paid from the personal account, and fills the deductible when the policy
    counts offline purchases."""
    used = 0
    if policy.counts(Counted.OFFLINE_PURCHASES):
        left = max(0, policy.deductible_fen(person.category, level) - accumulators.deductible_fen)
        used = min(amount_fen, left)
    return Totals(eligible_fen=amount_fen, deductible_fen=used, personal_account_fen=amount_fen)


def yuan(fen: int) -> str:
    """Fen as yuan with two decimals.

    >>> yuan(123456), yuan(-5)
    ('1234.56', '-0.05')
    """
    if fen < 0:
        return "-" + yuan(-fen)
    return f"{fen // 100}.{fen % 100:02d}"


def explain(split: Split) -> tuple[str, ...]:
    """Lines a receipt or a statement prints (amounts in yuan, two decimals); the enums'
    ``_value_``, as ``.value`` (a Python property on 3.11) gives it: a receipt per settlement."""
    out = [
        f"policy {split.policy_year} rules v{split.rules_version} catalogue v"
        f"{split.catalogue_version} level {split.institution_level} {split.category._value_}"
    ]
    for line in split.lines:
        coverage = line.coverage._value_ if line.coverage else "-"
        out.append(
            f"{line.number:>3} {line.code} {line.name} [{coverage}] {line.quantity} x "
            f"{yuan(line.unit_price_fen)} = {yuan(line.amount_fen)}"
        )
        for part in line.parts:  # loops, not extend(generator): a receipt per settlement
            out.append(
                f"      {part.share._value_:<16} {yuan(part.amount_fen):>10}  {part.reason._value_}"
            )
    for note in split.notes:
        out.append(f"note: {note}")
    out.append(
        f"total {yuan(split.total_fen)}: personal account {yuan(split.personal_account_fen)}, "
        f"pooled fund {yuan(split.pooled_fen)}, self-pay {yuan(split.self_pay_fen)}"
    )
    return tuple(out)


_REASON_BYTES = {reason: len(reason._value_.encode()) for reason in Reason}


def explained_bytes_at_least(split: Split) -> int:
    """A lower bound of the UTF-8 size of `explain`'s lines joined by newlines, from their fixed
    text, each number at its fewest characters and the reasons' known sizes, without formatting
    them: a settlement's answer that cannot hold the receipt (most cannot: a one-line bill's is
    over 255 bytes) prints a short form without building it (issue 25).

    >>> split = Split(1, 2026, 7, 2, Category.EMPLOYED, None, 100, 30, 70, 0, (), Totals(), ())
    >>> explained_bytes_at_least(split) <= len("\\n".join(explain(split)).encode())
    True
    """
    # the header's 35 characters and 4 numbers, the total line's 50 and 4 amounts ("0.00"),
    # a newline after each line but the last (the bill lines' and parts' counted with them)
    size = 39 + 66 + 1 + len(split.notes)
    for line in split.lines:
        # "  1 code name [-] 1 x 0.00 = 0.00" and a newline; a part "{6}{16} {10}  reason\\n"
        size += 26 + len(line.code) + len(line.name) + len(line.parts) * 36
        for part in line.parts:
            size += _REASON_BYTES[part.reason]
    for note in split.notes:
        size += 6 + len(note)  # "note: "; characters are at least a byte each
    return size

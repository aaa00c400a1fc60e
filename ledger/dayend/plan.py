"""The payout plan of a business date (pure): each payable with money at the cut-over becomes one
payout line — institutions' insurance payables from the fund bank account, their EP payables and
cardholders' refunds from the EP float — grouped into one file per (bank, source, kind). What
cannot be paid (no settlement account, no bank known, a returned payout's account not corrected)
is held, with the reason.

Ids derive from the date, the source and the party, so a second run plans the same payouts and
the same transfers (``transfer_id("payout", payout id)``, as ``ledger.events.post_payout``).

>>> import datetime as dt
>>> from ledger.dayend.snapshot import Institution
>>> snap = Snapshot(dt.date(2026, 11, 25), 0, 1, (), {"payins:h1": 500, "payep:h1": 0},
...                 {"h1": Institution("h1", "hospital", "H", "b1", "62")}, (), (), {}, (0, 0))
>>> p = plan(snap)
>>> [(f.name, [(x.payout_id, x.amount_fen) for x in f.lines]) for f in p.files]
[('PAYOUT_20261125_b1_INS.txt', [('20261125-I-h1', 500)])]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ledger.core import Transfer, transfer_id
from ledger.dayend import payout_file as pf
from ledger.dayend.returned_hold import hold_reason
from ledger.dayend.snapshot import Snapshot
from ledger.events.common import TransferCode, centre
from ledger.kinds import AccountKind as K

_SOURCE = {
    "payins": (pf.INSURANCE, pf.PAYOUT, "I"),
    "payep": (pf.EP, pf.PAYOUT, "E"),
    "refund": (pf.EP, pf.REFUND, "R"),
}


@dataclass(frozen=True, slots=True)
class Payout:
    payout_id: str
    payable_account: str
    source: str
    kind: str  # institution | refund
    party_id: str
    bank_id: str
    account_no: str
    account_name: str
    amount_fen: int

    @property
    def transfer(self) -> Transfer:
        """payable → payouts in flight: the same transfer ``ledger.events.post_payout`` posts."""
        in_flight = (
            K.INSURANCE_PAYOUTS_IN_FLIGHT
            if self.source == pf.INSURANCE
            else (K.EP_PAYOUTS_IN_FLIGHT)
        )
        return Transfer(
            transfer_id("payout", self.payout_id),
            self.payable_account,
            centre(in_flight),
            self.amount_fen,
            TransferCode.PAYOUT,
            f"payout|{self.payout_id}",
        )

    def line(self) -> pf.PayoutLine:
        return pf.PayoutLine(
            self.payout_id, self.party_id, self.account_no, self.account_name, self.amount_fen
        )


@dataclass(frozen=True, slots=True)
class PlannedFile:
    name: str
    file: pf.PayoutFile
    lines: tuple[Payout, ...]


@dataclass(frozen=True, slots=True)
class Held:
    account: str
    amount_fen: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    files: tuple[PlannedFile, ...]
    held: tuple[Held, ...]

    @property
    def payouts(self) -> tuple[Payout, ...]:
        return tuple(p for f in self.files for p in f.lines)


def plan(snapshot: Snapshot) -> Plan:
    date = snapshot.business_date.strftime("%Y%m%d")
    payouts, held = [], []
    for account, amount in sorted(snapshot.payables.items()):
        if amount <= 0:
            if amount < 0:
                held.append(Held(account, amount, "owes: carried forward"))
            continue
        prefix, _, party = account.partition(":")
        source, kind, letter = _SOURCE[prefix]
        payout_id = f"{date}-{letter}-{party}"
        target = _target(snapshot, prefix, party)
        if isinstance(target, str):
            held.append(Held(account, amount, target))
            continue
        bank, number, name = target
        hold = hold_reason(snapshot.returned.get(account, ()), bank, number)
        if hold is not None:  # never again to the account the bank returned it from
            held.append(Held(account, amount, hold))
            continue
        payouts.append(
            Payout(
                payout_id,
                account,
                source,
                "refund" if letter == "R" else "institution",
                party,
                bank,
                number,
                name,
                amount,
            )
        )
    groups: dict[tuple[str, str, str], list[Payout]] = defaultdict(list)
    for p in payouts:
        groups[(p.bank_id, p.source, pf.REFUND if p.kind == "refund" else pf.PAYOUT)].append(p)
    files = []
    for (bank, source, kind), lines in sorted(groups.items()):
        lines.sort(key=lambda p: p.party_id)
        f = pf.PayoutFile(
            kind, snapshot.business_date.isoformat(), bank, source, tuple(p.line() for p in lines)
        )
        files.append(PlannedFile(pf.file_name(f), f, tuple(lines)))
    files.sort(key=lambda f: f.name)
    return Plan(tuple(files), tuple(held))


def _target(snapshot: Snapshot, prefix: str, party: str) -> tuple[str, str, str] | str:
    """(bank, account, name) to pay, or why not."""
    if prefix == "refund":
        found = snapshot.refund_targets.get(party)
        if found is None or found.bank_id is None or found.card_no is None:
            return "no EP load on record: the cardholder's savings bank is unknown"
        return found.bank_id, found.card_no, found.name
    institution = snapshot.institutions.get(party)
    if institution is None:
        return "not an institution on file"
    if not institution.bank_id or not institution.account_no:
        return "no settlement bank account on file"
    return institution.bank_id, institution.account_no, institution.name

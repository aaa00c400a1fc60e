"""The clearing (清分) of a business date (pure): per institution its TAC-confirmed card shares
(ED, EP) and pooled-fund shares by category and class, net of voids; per bank its savings debits
and what day-end pays through it; loads and unloads; what is still in doubt, with its age; late
offline uploads; payables held. Rendered as a deterministic CSV report (specs/dayend-files.md).

>>> r = clearing(Snapshot(dt.date(2026, 11, 25), 0, 10**6, (Flow(301, "ed:", "payins:h1", 2,
...     700),), {}, {}, (), (), {}, (0, 0)), Plan((), ()))
>>> r.institutions["h1"]["card_ed"], r.institutions["h1"]["net"]
((2, 700), (2, 700))
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from dataclasses import dataclass

from ledger.dayend.plan import Plan
from ledger.dayend.snapshot import Flow, Snapshot
from ledger.events.common import TransferCode as C
from ledger.medical.split import yuan

FORMAT = "MEDSWITCH-CLEARING"
VERSION = "01"

#: (code, debit kind or account prefix, credit prefix) → (section, item, side that names the party)
_INSTITUTION: dict[tuple[int, str, str], tuple[str, str, int]] = {
    (C.CARD_DEBIT, "ed:", "payins:"): ("card_ed", "credit", 1),
    (C.CARD_DEBIT, "ep:", "payep:"): ("card_ep", "credit", 1),
    (C.BILL_POOLED_SHARE, "pool:", "payins:"): ("pooled", "credit", 1),
    (C.VOID_POOLED, "payins:", "pool:"): ("void_pooled", "debit", -1),
    (C.VOID_PERSONAL, "payins:", "pf:"): ("void_personal", "debit", -1),
    (C.VOID_EP_REFUND, "payep:", "refund:"): ("void_ep", "debit", -1),
    (C.PAYOUT_RETURNED, "payoutins:", "payins:"): ("returned_insurance", "credit", 0),
    (C.PAYOUT_RETURNED, "payoutep:", "payep:"): ("returned_ep", "credit", 0),
}
_LOADS: dict[tuple[int, str], tuple[str, str]] = {
    (C.LOAD_INTO_DOUBT, "edload:"): ("ED", "loads_into_doubt"),
    (C.LOAD_INTO_DOUBT, "epload:"): ("EP", "loads_into_doubt"),
    (C.LOAD_TO_SHADOW, "ed:"): ("ED", "loads_confirmed"),
    (C.LOAD_TO_SHADOW, "ep:"): ("EP", "loads_confirmed"),
    (C.LOAD_UNDONE, "pf:"): ("ED", "loads_undone"),
    (C.LOAD_UNDONE, "clearing:"): ("EP", "loads_undone"),
    (C.UNLOAD_INTO_DOUBT, "unload:"): ("ED", "unloads_into_doubt"),
    (C.UNLOAD_TO_FUND, "pf:"): ("ED", "unloads_confirmed"),
    (C.UNLOAD_UNDONE, "ed:"): ("ED", "unloads_undone"),
}
_BANK = {
    (C.LOAD_INTO_DOUBT, "debit"): "savings_debits",
    (C.LOAD_UNDONE, "credit"): "savings_debits_undone",
    (C.SAVINGS_DEBITS_SETTLED, "credit"): "savings_debits_settled",
}
Totals = dict[str, tuple[int, int]]  # item → (count, fen)


@dataclass
class Clearing:
    snapshot: Snapshot
    plan: Plan
    institutions: dict[str, Totals]
    banks: dict[str, Totals]
    loads: dict[str, Totals]


def _add(totals: Totals, item: str, count: int, amount: int) -> None:
    was = totals.get(item, (0, 0))
    totals[item] = (was[0] + count, was[1] + amount)


def _prefix(account: str) -> str:
    return account.partition(":")[0] + ":"


def _party(account: str) -> str:
    return account.partition(":")[2]


def clearing(snapshot: Snapshot, plan: Plan) -> Clearing:
    institutions: dict[str, Totals] = defaultdict(dict)
    banks: dict[str, Totals] = defaultdict(dict)
    loads: dict[str, Totals] = defaultdict(dict)
    for flow in snapshot.flows:
        _institution_flow(institutions, flow)
        _load_flow(loads, flow)
        for (code, side), item in _BANK.items():
            account = flow.debit if side == "debit" else flow.credit
            if flow.code == code and account.startswith("clearing:"):
                _add(banks[_party(account)], item, flow.count, flow.amount_fen)
    for p in plan.payouts:
        item = "refunds" if p.kind == "refund" else f"payouts_{p.source}"
        _add(banks[p.bank_id], item, 1, p.amount_fen)
    return Clearing(snapshot, plan, dict(institutions), dict(banks), dict(loads))


def _institution_flow(institutions: dict[str, Totals], flow: Flow) -> None:
    key = (flow.code, _prefix(flow.debit), _prefix(flow.credit))
    found = _INSTITUTION.get(key)
    if found is None:
        return
    item, side, sign = found
    party = _party(flow.credit if side == "credit" else flow.debit)
    _add(institutions[party], item, flow.count, flow.amount_fen)
    if sign:
        _add(institutions[party], "net", flow.count, sign * flow.amount_fen)


def _load_flow(loads: dict[str, Totals], flow: Flow) -> None:
    found = _LOADS.get((flow.code, _prefix(flow.credit)))
    if found is not None:
        purse, item = found
        _add(loads[purse], item, flow.count, flow.amount_fen)


def _iso(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(report: Clearing) -> bytes:
    """The clearing report: CSV (LF line ends), one row per (section, party, item, detail)."""
    snap, out = report.snapshot, io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [FORMAT, VERSION, snap.business_date.isoformat(), _iso(snap.start_us), _iso(snap.end_us)]
    )
    w.writerow(["section", "party", "item", "detail", "count", "amount_fen"])
    for party, totals in sorted(report.institutions.items()):
        for item, (count, amount) in sorted(totals.items()):
            w.writerow(["institution", party, item, "", count, amount])
        for part in (p for p in snap.pooled if p.institution_id == party):
            w.writerow(
                [
                    "institution",
                    party,
                    "pooled_by_class",
                    f"{part.category}/{part.coverage}",
                    part.bills,
                    part.amount_fen,
                ]
            )
    for account, amount in sorted(snap.payables.items()):
        if amount:
            w.writerow(["payable", _party(account), _prefix(account)[:-1], "at_cutover", 1, amount])
    for party, totals in sorted(report.banks.items()):
        for item, (count, amount) in sorted(totals.items()):
            w.writerow(["bank", party, item, "", count, amount])
    for purse, totals in sorted(report.loads.items()):
        for item, (count, amount) in sorted(totals.items()):
            w.writerow(["loads", purse, item, "", count, amount])
    for doubt in snap.in_doubt:
        age_s = (snap.end_us - doubt.since_us) // 1_000_000
        w.writerow(["in_doubt", doubt.account, "age_s", age_s, 1, doubt.amount_fen])
    w.writerow(
        ["late_uploads", "", "offline_records", "card_date_before_window", *snap.late_uploads]
    )
    for f in report.plan.files:
        w.writerow(
            ["file", f.file.bank_id, f.file.kind.lower(), f.name, len(f.lines), f.file.total_fen]
        )
    for held in report.plan.held:
        w.writerow(["held", held.account, "not_paid", held.reason, 1, held.amount_fen])
    for note in snap.notes:
        w.writerow(["note", "", "", note, 0, 0])
    return out.getvalue().encode("utf-8")


def summary(report: Clearing) -> list[str]:
    """A few lines for the operator (amounts in yuan; the report file keeps fen)."""
    lines = [
        f"business date {report.snapshot.business_date}: "
        f"{sum(f.count for f in report.snapshot.flows)} transfers cleared"
    ]
    for party, totals in sorted(report.institutions.items()):
        net = totals.get("net", (0, 0))[1]
        ed, ep = totals.get("card_ed", (0, 0))[1], totals.get("card_ep", (0, 0))[1]
        pooled = totals.get("pooled", (0, 0))[1]
        lines.append(
            f"  {party}: card ED {yuan(ed)} EP {yuan(ep)} pooled {yuan(pooled)}"
            f" net {yuan(net)} yuan"
        )
    for f in report.plan.files:
        lines.append(f"  {f.name}: {len(f.lines)} payments, {yuan(f.file.total_fen)} yuan")
    for held in report.plan.held:
        lines.append(f"  held {held.account} {yuan(held.amount_fen)} yuan: {held.reason}")
    if report.snapshot.in_doubt:
        lines.append(f"  {len(report.snapshot.in_doubt)} loads/unloads still in doubt")
    return lines

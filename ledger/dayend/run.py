"""Day-end for one business date: the maker's run, the checker's approval (DESIGN §5).

``run`` (the maker) reads the date's snapshot, clears it, plans the payouts, builds the clearing
report and the payout and refund files (MACed through the HSM) into ``<out>/staging/<date>/``,
and stores the batch with a pending approval — it posts nothing. ``approve`` (a *different*
operator) checks the staged files against their recorded digests, posts every payable → payouts
in flight in one linked ledger batch, releases the files to ``<out>/outbox/`` and marks the rows.

Resume and redo: files are written to a temporary name and renamed; a date's rows are written in
one transaction. A run that crashed is simply run again (same snapshot, same bytes). An approval
that crashed after posting is approved again: the ledger answers the same transfer ids with
"exists", the files are copied again, the rows are marked. A second run of a stored date writes
identical bytes and stores and posts nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.core import Ledger, TransferResult
from ledger.dayend import clearing as cl
from ledger.dayend import payout_file as pf
from ledger.dayend import snapshot as snap
from ledger.dayend import store
from ledger.dayend.calendar import Cutover, parse_date
from ledger.dayend.plan import Payout, Plan, plan
from ledger.dayend.recon_returns import link_reissues
from ledger.personal import PersonalKeys, people

KeyFor = Callable[[str], Awaitable[KeyRef]]
Progress = Callable[[str], None]


class DayendError(Exception):
    """A day-end that must not go on; the message says why and what to do."""


@dataclass
class RunResult:
    date: str
    status: str  # prepared | closed | unchanged
    report: Path
    files: list[Path]
    plan: Plan
    summary: list[str]
    timings_s: dict[str, float] = field(default_factory=dict)


def paths(out_dir: Path, date: str) -> tuple[Path, Path, Path]:
    """(reports, staging for the date, outbox)."""
    compact = date.replace("-", "")
    return out_dir / "reports", out_dir / "staging" / compact, out_dir / "outbox"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, flush to disk, rename: the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Clock:
    def __init__(self, progress: Progress | None) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.at = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.at, 3)
        self.at = now
        if self.progress is not None:
            self.progress(name)


async def run(
    engine: Engine,
    hsm: Hsm,
    key_for: KeyFor,
    date: str,
    cutover: Cutover,
    out_dir: Path,
    operator: str,
    now_us: int,
    *,
    settle_s: int = 60,
    progress: Progress | None = None,
    personal: PersonalKeys | None = None,
) -> RunResult:
    """The maker's day-end run for `date` (yyyy-mm-dd). Refunds name their cardholders, whose
    names are sealed at rest: a day with refunds needs ``personal``, the keys to open them."""
    day = parse_date(date)
    date = day.isoformat()
    end_us = cutover.instant_us(day)
    if now_us < end_us + settle_s * 1_000_000:
        raise DayendError(
            f"business date {date} has not closed: its cut-over is at "
            f"{cutover.instant(day).isoformat()} (run at least {settle_s} s after)"
        )
    stored = store.day(engine, date)
    _check_order(engine, date, stored)
    clock = _Clock(progress)
    snapshot = snap.read(engine, day, cutover)
    if snapshot.refund_targets:
        if personal is None:
            raise DayendError(
                "refunds name their cardholders: the personal-data keys "
                "(PERSONAL_DATA, PERSONAL_INDEX) are needed to open the names"
            )
        found = await people(engine, personal, snapshot.refund_targets)
        snapshot = snap.with_names(snapshot, {i: p.name for i, p in found.items()})
    clock.step("snapshot")
    payout_plan = plan(snapshot)
    report = cl.clearing(snapshot, payout_plan)
    report_bytes = cl.render(report)
    clock.step("clearing")
    reports, staging, _ = paths(out_dir, date)
    report_path = reports / f"CLEARING_{day:%Y%m%d}.csv"
    built, staged = [], []
    for planned in payout_plan.files:
        data, mac = await pf.build(hsm, await key_for(planned.file.bank_id), planned.file)
        built.append((staging / planned.name, data))
        staged.append(
            store.StagedFile(
                planned.name,
                planned.file.kind,
                planned.file.bank_id,
                planned.file.source,
                len(planned.lines),
                planned.file.total_fen,
                mac,
                sha256(data),
            )
        )
    prepared = store.Prepared(
        date,
        end_us,
        cutover.zone.key,
        operator,
        now_us,
        now_us,
        report_path.name,
        sha256(report_bytes),
        payout_plan,
        tuple(staged),
    )
    _refuse_changed_approval(engine, prepared, stored)
    write_atomic(report_path, report_bytes)
    for path, data in built:
        write_atomic(path, data)
    written = [path for path, _ in built]
    if staging.exists():  # what an earlier, superseded run staged and this one does not
        for stale in set(staging.iterdir()) - set(written):
            stale.unlink()
    clock.step("files")
    status = _store(engine, prepared, stored, operator, now_us)
    clock.step("store")
    return RunResult(
        date, status, report_path, written, payout_plan, cl.summary(report), clock.timings
    )


def _check_order(engine: Engine, date: str, stored: dict[str, object] | None) -> None:
    """Dates are prepared in order, each once its predecessors are decided."""
    earlier = store.pending_before(engine, date)
    if earlier and (stored is None or stored["status"] != "approved"):
        raise DayendError(
            f"the payouts of {', '.join(earlier)} await approval: approve or "
            "reject them first (medswitch dayend approve|reject --date ...)"
        )
    later = store.runs_after(engine, date)
    if later and (stored is None or stored["status"] == "rejected"):
        raise DayendError(
            f"{later[0]} was run already and paid what {date} owed: an earlier "
            "date cannot be prepared after a later one"
        )


def _same(stored: dict[str, object], files: list[dict[str, object]], p: store.Prepared) -> bool:
    mine = sorted((f.name, f.sha256) for f in p.files)
    return stored["report_sha256"] == p.report_sha256 and mine == sorted(
        (str(f["name"]), str(f["sha256"])) for f in files
    )


def _refuse_changed_approval(
    engine: Engine, p: store.Prepared, stored: dict[str, object] | None
) -> None:
    """An approved date is never prepared again: a run that now computes other bytes writes
    and stores nothing."""
    if (
        stored is not None
        and stored["status"] == "approved"
        and not _same(stored, store.files_of(engine, p.date), p)
    ):
        raise DayendError(
            f"{p.date} was approved by {stored['approved_by']}, and a run now "
            "computes other files: the ledger changed before the cut-over; "
            "nothing written or stored (investigate; the approved files stand)"
        )


def _store(
    engine: Engine, p: store.Prepared, stored: dict[str, object] | None, operator: str, now_us: int
) -> str:
    if (
        stored is not None
        and stored["status"] != "rejected"
        and _same(stored, store.files_of(engine, p.date), p)
    ):
        store.count_rerun(engine, p.date, operator, now_us)
        return "unchanged"
    if stored is not None and stored["status"] == "prepared" and stored["approval_id"]:
        store.supersede(engine, p.date, int(str(stored["approval_id"])), operator, now_us)
    store.save_prepared(engine, p)
    return "prepared" if p.files else "closed"


@dataclass
class ApproveResult:
    date: str
    made_by: str
    posted: int
    already: int
    released: list[Path]
    reissued: int = 0  # earlier returned payouts this approval's payouts re-issue


async def approve(
    engine: Engine, ledger: Ledger, date: str, operator: str, out_dir: Path, now_us: int
) -> ApproveResult:
    """The checker's approval: post and release the date's prepared payouts."""
    stored = store.day(engine, date)
    if stored is None:
        raise DayendError(f"no day-end run for {date}: run `medswitch dayend run --date {date}`")
    if stored["status"] == "approved":
        raise DayendError(f"{date} was already approved by {stored['approved_by']}")
    if stored["status"] != "prepared" or stored["approval_id"] is None:
        raise DayendError(f"{date} has nothing to approve (status {stored['status']})")
    request = store.approval(engine, int(stored["approval_id"]))
    assert request is not None
    if _same_person(str(request["made_by"]), operator):
        raise DayendError(
            f"{operator} prepared the payouts of {date} and cannot also approve "
            "them: a second operator must (maker-checker)"
        )
    _, staging, outbox = paths(out_dir, date)
    files = store.files_of(engine, date)
    contents = {}
    for f in files:
        path = staging / f["name"]
        if not path.exists():
            raise DayendError(f"staged file {path} is missing: run day-end again, then approve")
        data = path.read_bytes()
        if sha256(data) != f["sha256"]:
            raise DayendError(
                f"staged file {path} differs from what was prepared (altered?): "
                "nothing posted or released"
            )
        contents[f["name"]] = data
    posted, already = await _post(engine, ledger, date)
    released = []
    for name, data in sorted(contents.items()):
        write_atomic(outbox / name, data)
        released.append(outbox / name)
    store.mark_approved(engine, date, int(stored["approval_id"]), operator, now_us)
    # the returned payouts these released ones pay again are `reissued` now, not at the next
    # return import (specs/dayend-files.md, "Return file")
    reissued = link_reissues(engine, now_us)
    return ApproveResult(date, str(request["made_by"]), posted, already, released, reissued)


def _same_person(maker: str, operator: str) -> bool:
    if not operator.strip():
        raise DayendError("an operator must be named")
    return maker.strip().casefold() == operator.strip().casefold()


async def _post(engine: Engine, ledger: Ledger, date: str) -> tuple[int, int]:
    """Every prepared payout's transfer, all or none (linked)."""
    rows = store.payouts_of(engine, date)
    transfers = [
        Payout(
            r["id"], _payable(r), r["source"], r["kind"], "", "", "", "", int(r["amount_fen"])
        ).transfer
        for r in rows
    ]
    for row, transfer in zip(rows, transfers, strict=True):
        if transfer.id != row["transfer_id"]:
            raise DayendError(f"payout {row['id']}: its transfer id does not match the stored one")
    if not transfers:
        return 0, 0
    results = await ledger.post(transfers, linked=True)
    refused = [(t.id, r.name) for t, r in zip(transfers, results, strict=True) if not r.ok]
    if refused:
        raise DayendError(f"the ledger refused the payouts (nothing posted): {refused[:3]}")
    already = sum(1 for r in results if r is TransferResult.EXISTS)
    return len(results) - already, already


def _payable(row: dict[str, object]) -> str:
    if row["kind"] == "refund":
        return f"refund:{row['cardholder_id']}"
    prefix = "payins" if row["source"] == pf.INSURANCE else "payep"
    return f"{prefix}:{row['institution_id']}"


def reject(engine: Engine, date: str, operator: str, reason: str, now_us: int) -> str:
    """The checker refuses the batch: nothing posts, nothing is released; a new run prepares
    another."""
    stored = store.day(engine, date)
    if stored is None or stored["status"] != "prepared" or stored["approval_id"] is None:
        raise DayendError(f"{date} has no prepared payouts to reject")
    request = store.approval(engine, int(stored["approval_id"]))
    assert request is not None
    if _same_person(str(request["made_by"]), operator):
        raise DayendError(f"{operator} prepared the payouts of {date}: a second operator rejects")
    store.mark_rejected(engine, date, int(stored["approval_id"]), operator, now_us, reason)
    return str(request["made_by"])

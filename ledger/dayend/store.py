"""Day-end rows (ledger.schema: business_days, payouts, payout_files, approvals, audit_log): what
a run prepared, what a second operator approved. Each function is one SQL transaction, so a date's
rows are all there or none are."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from ledger import schema as s
from ledger.dayend.plan import Plan
from ledger.medical.sql_store import write_transaction

BATCH = "payout_batch"  # approvals.subject_kind of a date's payouts


@dataclass(frozen=True, slots=True)
class StagedFile:
    name: str
    kind: str
    bank_id: str
    source: str
    count: int
    total_fen: int
    mac: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a run computed for a date, ready to store."""

    date: str
    cutover_us: int
    timezone: str
    operator: str
    started_us: int
    finished_us: int
    report_name: str
    report_sha256: str
    plan: Plan
    files: tuple[StagedFile, ...]

    def payload(self) -> str:
        """What the checker approves: every file's name and digest, the totals."""
        files = [
            {
                "name": f.name,
                "count": f.count,
                "total_fen": f.total_fen,
                "mac": f.mac,
                "sha256": f.sha256,
            }
            for f in self.files
        ]
        return json.dumps(
            {"business_date": self.date, "report_sha256": self.report_sha256, "files": files},
            sort_keys=True,
            ensure_ascii=False,
        )


def day(engine: Engine, date: str) -> dict[str, Any] | None:
    with engine.connect() as c:
        row = c.execute(select(s.business_days).where(s.business_days.c.business_date == date))
        found = row.mappings().first()
        return dict(found) if found else None


def pending_before(engine: Engine, date: str) -> list[str]:
    """Earlier dates whose payouts are prepared and not yet approved."""
    t = s.business_days
    with engine.connect() as c:
        rows = c.execute(
            select(t.c.business_date).where(t.c.business_date < date, t.c.status == "prepared")
        )
        return sorted(r[0] for r in rows)


def runs_after(engine: Engine, date: str) -> list[str]:
    """Later dates that were run (and not rejected): their payables included this date's."""
    t = s.business_days
    with engine.connect() as c:
        rows = c.execute(
            select(t.c.business_date).where(t.c.business_date > date, t.c.status != "rejected")
        )
        return sorted(r[0] for r in rows)


def files_of(engine: Engine, date: str) -> list[dict[str, Any]]:
    t = s.payout_files
    with engine.connect() as c:
        rows = c.execute(select(t).where(t.c.business_date == date).order_by(t.c.name))
        return [dict(r) for r in rows.mappings()]


def payouts_of(engine: Engine, date: str) -> list[dict[str, Any]]:
    t = s.payouts
    with engine.connect() as c:
        rows = c.execute(select(t).where(t.c.business_date == date).order_by(t.c.id))
        return [dict(r) for r in rows.mappings()]


def approval(engine: Engine, approval_id: int) -> dict[str, Any] | None:
    with engine.connect() as c:
        row = c.execute(select(s.approvals).where(s.approvals.c.id == approval_id))
        found = row.mappings().first()
        return dict(found) if found else None


def audit(c: Connection, at_us: int, actor: str, action: str, subject: str, detail: str) -> None:
    c.execute(
        insert(s.audit_log).values(
            at_us=at_us, actor=actor, action=action, subject=subject, detail=detail
        )
    )


def save_prepared(engine: Engine, p: Prepared) -> None:
    """Store a run's batch (replacing an earlier prepared or rejected one) with a pending
    approval, or, without payouts, close the date. One transaction."""
    status = "prepared" if p.files else "closed"
    with write_transaction(engine) as c:
        c.execute(delete(s.payouts).where(s.payouts.c.business_date == p.date))
        c.execute(delete(s.payout_files).where(s.payout_files.c.business_date == p.date))
        c.execute(delete(s.business_days).where(s.business_days.c.business_date == p.date))
        approval_id = None
        if p.files:
            inserted = c.execute(
                insert(s.approvals).values(
                    subject_kind=BATCH,
                    subject_id=p.date,
                    payload=p.payload(),
                    made_by=p.operator,
                    made_at_us=p.finished_us,
                    status="pending",
                )
            ).inserted_primary_key
            assert inserted is not None
            approval_id = inserted[0]
        c.execute(
            insert(s.business_days).values(
                business_date=p.date,
                status=status,
                cutover_at_us=p.cutover_us,
                timezone=p.timezone,
                run_by=p.operator,
                run_started_at_us=p.started_us,
                run_finished_at_us=p.finished_us,
                runs=1,
                approval_id=approval_id,
                report_name=p.report_name,
                report_sha256=p.report_sha256,
            )
        )
        by_name = {f.name: f for f in p.files}
        for planned in p.plan.files:
            f = by_name[planned.name]
            c.execute(
                insert(s.payout_files).values(
                    name=f.name,
                    business_date=p.date,
                    bank_id=f.bank_id,
                    source=f.source,
                    kind=f.kind,
                    record_count=f.count,
                    total_fen=f.total_fen,
                    mac=f.mac,
                    sha256=f.sha256,
                    status="staged",
                    created_at_us=p.finished_us,
                )
            )
            for number, x in enumerate(planned.lines, 1):
                c.execute(
                    insert(s.payouts).values(
                        id=x.payout_id,
                        business_date=p.date,
                        bank_id=x.bank_id,
                        source=x.source,
                        kind=x.kind,
                        institution_id=x.party_id if x.kind == "institution" else None,
                        cardholder_id=x.party_id if x.kind == "refund" else None,
                        account_no=x.account_no,
                        account_name=x.account_name,
                        amount_fen=x.amount_fen,
                        status="prepared",
                        file_name=f.name,
                        line_no=number,
                        transfer_id=x.transfer.id,
                        created_at_us=p.finished_us,
                        updated_at_us=p.finished_us,
                    )
                )
        audit(c, p.finished_us, p.operator, "dayend.run", p.date, p.payload())


def count_rerun(engine: Engine, date: str, operator: str, now_us: int) -> None:
    """A run that found the same batch already stored: only counted and audited."""
    t = s.business_days
    with write_transaction(engine) as c:
        c.execute(update(t).where(t.c.business_date == date).values(runs=t.c.runs + 1))
        audit(c, now_us, operator, "dayend.rerun", date, "identical: nothing stored or posted")


def supersede(engine: Engine, date: str, approval_id: int, operator: str, now_us: int) -> None:
    """A pending approval whose batch a new run replaced."""
    with write_transaction(engine) as c:
        c.execute(
            update(s.approvals)
            .where(s.approvals.c.id == approval_id, s.approvals.c.status == "pending")
            .values(
                status="rejected",
                approved_by=operator,
                approved_at_us=now_us,
                reason="superseded by a new run",
            )
        )


def mark_approved(engine: Engine, date: str, approval_id: int, operator: str, now_us: int) -> None:
    """After the payouts posted and the files were released: every row says so. One
    transaction."""
    with write_transaction(engine) as c:
        c.execute(
            update(s.approvals)
            .where(s.approvals.c.id == approval_id)
            .values(status="approved", approved_by=operator, approved_at_us=now_us)
        )
        c.execute(
            update(s.payouts)
            .where(s.payouts.c.business_date == date, s.payouts.c.status == "prepared")
            .values(status="released", updated_at_us=now_us)
        )
        c.execute(
            update(s.payout_files)
            .where(s.payout_files.c.business_date == date)
            .values(status="released", released_at_us=now_us)
        )
        c.execute(
            update(s.business_days)
            .where(s.business_days.c.business_date == date)
            .values(status="approved", approved_by=operator, approved_at_us=now_us)
        )
        audit(c, now_us, operator, "dayend.approve", date, f"approval {approval_id}")


def mark_rejected(
    engine: Engine, date: str, approval_id: int, operator: str, now_us: int, reason: str
) -> None:
    with write_transaction(engine) as c:
        c.execute(
            update(s.approvals)
            .where(s.approvals.c.id == approval_id)
            .values(status="rejected", approved_by=operator, approved_at_us=now_us, reason=reason)
        )
        c.execute(
            update(s.business_days)
            .where(s.business_days.c.business_date == date)
            .values(status="rejected")
        )
        audit(c, now_us, operator, "dayend.reject", date, reason)

"""A returned payout is not paid again to the account the bank returned it from
(specs/dayend-files.md, "Return file", *Re-issue after a return*).

While a payout is ``returned`` (not yet re-issued), day-end holds its payable when the payee's
current target — an institution's settlement bank and account, a cardholder's savings bank and
card — is still the one the payout went to. It is paid again by the first day-end after either

- the account is corrected (:func:`set_settlement_account`, `medswitch dayend settlement-account`):
  the target differs, so the re-issue goes to the new account; or
- an operator confirms the same account may be paid again (:func:`confirm_reissue`, `medswitch
  dayend confirm-reissue`: the bank's reason has gone, e.g. an account unfrozen).

Both steps are in the audit log; the confirmation *is* its audit entry
(``payout.reissue_confirmed``, subject the returned payout's id).

>>> r = ReturnedPayout("20261125-I-h1", "payins:h1", "b1", "620000000023", "R002", False)
>>> hold_reason((r,), "b1", "620000000023")
'returned payout 20261125-I-h1 (R002): the account is not corrected'
>>> hold_reason((r,), "b1", "620000000099") is None
True
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from ledger import schema as s
from ledger.medical.sql_store import write_transaction

CONFIRMED = "payout.reissue_confirmed"
ACCOUNT_SET = "institution.settlement_account"
_PAYABLE = {
    ("insurance", "institution"): "payins",
    ("ep", "institution"): "payep",
    ("ep", "refund"): "refund",
}


def audit(c: Connection, at_us: int, actor: str, action: str, subject: str, detail: str) -> None:
    c.execute(
        insert(s.audit_log).values(
            at_us=at_us, actor=actor, action=action, subject=subject, detail=detail
        )
    )


class HoldError(ValueError):
    """A correction or confirmation that cannot be made; the message says why."""


@dataclass(frozen=True, slots=True)
class ReturnedPayout:
    payout_id: str
    payable_account: str
    bank_id: str
    account_no: str
    reason: str  # the bank's reason code and text, as the return file gave it
    confirmed: bool  # an operator confirmed the same account may be paid again


def hold_reason(returned: tuple[ReturnedPayout, ...], bank: str, account_no: str) -> str | None:
    """Why a payable must not be paid to (bank, account) now, or None."""
    for r in returned:
        if (r.bank_id, r.account_no) == (bank, account_no) and not r.confirmed:
            code = r.reason.split(" ", 1)[0]
            return f"returned payout {r.payout_id} ({code}): the account is not corrected"
    return None


def outstanding(connection: Connection) -> dict[str, tuple[ReturnedPayout, ...]]:
    """Returned payouts not yet re-issued, by the payable they came from."""
    confirmed = {
        row[0]
        for row in connection.execute(
            select(s.audit_log.c.subject).where(s.audit_log.c.action == CONFIRMED)
        )
    }
    p = s.payouts.c
    rows = connection.execute(
        select(
            p.id,
            p.source,
            p.kind,
            p.institution_id,
            p.cardholder_id,
            p.bank_id,
            p.account_no,
            p.reason,
        )
        .where(p.status == "returned")
        .order_by(p.id)
    )
    found: dict[str, list[ReturnedPayout]] = defaultdict(list)
    for pid, source, kind, institution, holder, bank, account, reason in rows:
        prefix = _PAYABLE.get((source, kind))
        if prefix is None:
            continue
        party = holder if kind == "refund" else institution
        payable = f"{prefix}:{party}"
        found[payable].append(
            ReturnedPayout(pid, payable, bank, account, reason or "", pid in confirmed)
        )
    return {account: tuple(items) for account, items in found.items()}


def set_settlement_account(
    engine: Engine, institution: str, bank: str, account_no: str, operator: str, now_us: int
) -> list[str]:
    """Correct (or confirm) an institution's settlement account; returns the returned payouts
    the next day-end re-issues to it. Re-entering the account a payout was returned from
    confirms that account for those payouts (as :func:`confirm_reissue`)."""
    if not account_no or len(account_no) > 40 or not account_no.isascii():
        raise HoldError("the account number must be 1 to 40 ASCII characters")
    i = s.institutions.c
    with write_transaction(engine) as c:
        row = c.execute(
            select(i.kind, i.settlement_bank_id, i.settlement_account_no).where(i.id == institution)
        ).first()
        if row is None or row[0] in ("bank", "centre"):
            raise HoldError(f"{institution} is not an institution the centre pays")
        kind = c.execute(select(i.kind).where(i.id == bank)).scalar()
        if kind != "bank":
            raise HoldError(f"{bank} is not a bank on file")
        c.execute(
            update(s.institutions)
            .where(i.id == institution)
            .values(settlement_bank_id=bank, settlement_account_no=account_no)
        )
        detail = json.dumps({"before": [row[1], row[2]], "after": [bank, account_no]})
        audit(c, now_us, operator, ACCOUNT_SET, institution, detail)
        mine = [
            r
            for key, items in outstanding(c).items()
            if key.partition(":")[2] == institution and not key.startswith("refund:")
            for r in items
        ]
        for r in mine:
            if (r.bank_id, r.account_no) == (bank, account_no) and not r.confirmed:
                audit(c, now_us, operator, CONFIRMED, r.payout_id, "the same account")
    return [r.payout_id for r in mine]


def confirm_reissue(engine: Engine, payout_id: str, operator: str, now_us: int) -> str:
    """Allow a returned payout to be paid again to the same account; returns that account's
    bank and a description for the operator."""
    p = s.payouts.c
    with write_transaction(engine) as c:
        row = c.execute(select(p.status, p.bank_id).where(p.id == payout_id)).first()
        if row is None:
            raise HoldError(f"no payout {payout_id}")
        if row[0] != "returned":
            raise HoldError(f"payout {payout_id} is {row[0]}, not returned")
        if c.execute(
            select(s.audit_log.c.seq).where(
                s.audit_log.c.action == CONFIRMED, s.audit_log.c.subject == payout_id
            )
        ).first():
            return f"payout {payout_id}: confirmed before, nothing changed"
        audit(c, now_us, operator, CONFIRMED, payout_id, "the same account")
    return f"payout {payout_id}: the next day-end pays it again through {row[1]}"

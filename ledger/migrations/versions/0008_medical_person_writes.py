"""The medical store's writes on PostgreSQL as functions, each one statement and one
transaction, serialised per person and year instead of by one global lock
(ledger/medical/pg_store.py):

- ``medical_view(person, year)``: committed + reserved accumulators, in one snapshot;
- ``medical_submit(...)``: under the person's lock, store a bill whose split the caller computed
  from the view it read, if that view is still the person's view (else: the new view, to split
  again) and the bill id is new (else: ``known``);
- ``medical_transition(...)``: move a bill from the state the caller decided on, with its
  accumulator effect (commit, void, release) under the person's lock; false when the bill had
  moved meanwhile;
- ``medical_post_offline(...)``: count an offline purchase once per key, as ``medical_submit``.

The person's lock is a transaction-scoped advisory lock in a key space of its own (class
0x6D656473, hash of person and year); every write that changes a person's view takes it, and the
bill's row lock orders its transitions. The functions keep their plans cached
(``plan_cache_mode = auto``; the daemon's sessions force custom plans): their statements are key
lookups, and planning each of them again on every call cost ~0.1 ms of server CPU per call.
Nothing on SQLite (one writer there).

Revision ID: 0008_medical_person_writes
Revises: 0007_directory_version
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0008_medical_person_writes"
down_revision = "0007_directory_version"
branch_labels = None
depends_on = None

_TOTALS = ("eligible_fen", "deductible_fen", "pooled_fen", "personal_account_fen", "self_pay_fen")
_RESERVED = ", ".join(f"coalesce(sum(d_{name}), 0)::bigint AS {name}" for name in _TOTALS)
_VIEW = ", ".join(f"coalesce(c.{name}, 0) + r.{name}" for name in _TOTALS)
_DELTA = ", ".join(f"d_{name}" for name in _TOTALS)
_SIGNED = ", ".join(f"p_sign * p_delta[{n}]" for n in range(1, len(_TOTALS) + 1))
_ADD = ", ".join(f"{name} = a.{name} + excluded.{name}" for name in _TOTALS)
_COLUMNS = ", ".join(_TOTALS)

_LOCK = """
CREATE FUNCTION medical_person_lock(p_person varchar, p_year integer) RETURNS void
LANGUAGE sql AS $$
SELECT pg_advisory_xact_lock(1835361395, hashtext(p_person || '/' || p_year))
$$
"""
_VIEW_FUNCTION = f"""
CREATE FUNCTION medical_view(p_person varchar, p_year integer) RETURNS bigint[]
LANGUAGE sql STABLE AS $$
SELECT ARRAY[{_VIEW}]
FROM (SELECT {_RESERVED} FROM medical_bills
      WHERE person_id = p_person AND year = p_year AND state IN ('approved', 'open')) AS r
LEFT JOIN medical_accumulators AS c ON c.person_id = p_person AND c.year = p_year
$$
"""
_ADD_FUNCTION = f"""
CREATE FUNCTION medical_add(p_person varchar, p_year integer, p_delta bigint[], p_sign integer)
RETURNS void LANGUAGE sql AS $$
INSERT INTO medical_accumulators AS a (person_id, year, {_COLUMNS})
VALUES (p_person, p_year, {_SIGNED})
ON CONFLICT (person_id, year) DO UPDATE SET {_ADD}, lock_version = a.lock_version + 1
$$
"""
_SUBMIT = f"""
CREATE FUNCTION medical_submit(
    p_bill_id varchar, p_institution_id varchar, p_his_bill_no varchar, p_card_no varchar,
    p_person varchar, p_year integer, p_service_date date, p_request_digest varchar,
    p_bill_json text, p_split_json text, p_state varchar, p_created_at_us bigint,
    p_expires_at_us bigint, p_updated_at_us bigint, p_delta bigint[], p_view bigint[],
    OUT outcome text, OUT current_view bigint[])
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
BEGIN
    PERFORM medical_person_lock(p_person, p_year);
    IF EXISTS (SELECT 1 FROM medical_bills WHERE bill_id = p_bill_id) THEN
        outcome = 'known';
        RETURN;
    END IF;
    SELECT medical_view(p_person, p_year) INTO current_view;
    IF current_view IS DISTINCT FROM p_view THEN
        outcome = 'stale';
        RETURN;
    END IF;
    INSERT INTO medical_bills (bill_id, institution_id, his_bill_no, card_no, person_id, year,
        service_date, request_digest, bill_json, split_json, state, created_at_us, expires_at_us,
        updated_at_us, {_DELTA})
    VALUES (p_bill_id, p_institution_id, p_his_bill_no, p_card_no, p_person, p_year,
        p_service_date, p_request_digest, p_bill_json, p_split_json, p_state, p_created_at_us,
        p_expires_at_us, p_updated_at_us, p_delta[1], p_delta[2], p_delta[3], p_delta[4],
        p_delta[5])
    ON CONFLICT DO NOTHING;
    outcome = CASE WHEN FOUND THEN 'created' ELSE 'known' END;
END $$
"""
_TRANSITION = f"""
CREATE FUNCTION medical_transition(
    p_bill_id varchar, p_from varchar, p_to varchar, p_now_us bigint, p_effect text,
    p_person varchar, p_year integer) RETURNS boolean
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    delta bigint[];
BEGIN
    IF p_effect <> 'none' THEN
        PERFORM medical_person_lock(p_person, p_year);
    END IF;
    UPDATE medical_bills SET state = p_to, updated_at_us = p_now_us
    WHERE bill_id = p_bill_id AND state = p_from
    RETURNING ARRAY[{_DELTA}] INTO delta;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_effect = 'commit' THEN
        PERFORM medical_add(p_person, p_year, delta, 1);
    ELSIF p_effect = 'void' THEN
        PERFORM medical_add(p_person, p_year, delta, -1);
    END IF;
    RETURN true;
END $$
"""
_POST_OFFLINE = f"""
CREATE FUNCTION medical_post_offline(
    p_key varchar, p_person varchar, p_year integer, p_delta bigint[], p_view bigint[],
    OUT outcome text, OUT current_view bigint[])
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
BEGIN
    PERFORM medical_person_lock(p_person, p_year);
    IF EXISTS (SELECT 1 FROM medical_offline_counts WHERE key = p_key) THEN
        outcome = 'known';
        RETURN;
    END IF;
    SELECT medical_view(p_person, p_year) INTO current_view;
    IF current_view IS DISTINCT FROM p_view THEN
        outcome = 'stale';
        RETURN;
    END IF;
    INSERT INTO medical_offline_counts (key, person_id, year, {_DELTA})
    VALUES (p_key, p_person, p_year, p_delta[1], p_delta[2], p_delta[3], p_delta[4], p_delta[5])
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        outcome = 'known';
        RETURN;
    END IF;
    PERFORM medical_add(p_person, p_year, p_delta, 1);
    outcome = 'created';
END $$
"""
_FUNCTIONS = (
    "medical_post_offline(varchar, varchar, integer, bigint[], bigint[])",
    "medical_transition(varchar, varchar, varchar, bigint, text, varchar, integer)",
    "medical_submit(varchar, varchar, varchar, varchar, varchar, integer, date, varchar, text,"
    " text, varchar, bigint, bigint, bigint, bigint[], bigint[])",
    "medical_add(varchar, integer, bigint[], integer)",
    "medical_view(varchar, integer)",
    "medical_person_lock(varchar, integer)",
)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for statement in (_LOCK, _VIEW_FUNCTION, _ADD_FUNCTION, _SUBMIT, _TRANSITION, _POST_OFFLINE):
        op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for signature in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")

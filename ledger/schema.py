"""The database schema, one definition for SQLite and PostgreSQL (SQLAlchemy 2 Core).

Migrations live in ``ledger/migrations`` (Alembic) and are checked against these tables by a test.
Amounts are integer fen (BIGINT); times are integer microseconds since the epoch, UTC.
The hot path (ledger.sqlite_ledger, ledger.pg_ledger) uses the raw drivers on these same tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

#: INTEGER PRIMARY KEY on SQLite (the rowid, autoincrementing), BIGINT identity elsewhere.
Seq = BigInteger().with_variant(Integer(), "sqlite")

institutions = Table(
    "institutions",
    metadata,
    Column("id", String(32), primary_key=True),
    # hospital | pharmacy | bank | employer_unit | centre
    Column("kind", String(16), nullable=False),
    Column("name", String(120), nullable=False),
    Column("level", SmallInteger),  # hospital/pharmacy level 1..3, for the policy
    Column("settlement_bank_id", String(32), ForeignKey("institutions.id")),
    Column("settlement_account_no", String(40)),
    Column("status", String(16), nullable=False, server_default="active"),
    # may send cardholders' health data (HIS PUT …/health); NULL: by kind, a hospital only
    Column("health_writer", Boolean),
)

terminals = Table(
    "terminals",
    metadata,
    Column("id", String(8), primary_key=True),  # CUP terminal id (F41)
    Column("institution_id", String(32), ForeignKey("institutions.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # pos | kiosk | bank_counter
    Column("status", String(16), nullable=False, server_default="active"),
    Column("batch_no", Integer, nullable=False, server_default="1"),
    Column("stan", Integer, nullable=False, server_default="0"),
    Column("param_group", String(32)),  # the terminal_parameters group it belongs to, if any
)

psams = Table(
    "psams",
    metadata,
    Column("serial", String(20), primary_key=True),  # PSAM serial number
    Column("psam_terminal_no", String(12), nullable=False, unique=True),  # bound into each TAC
    Column("institution_id", String(32), ForeignKey("institutions.id"), nullable=False),
    Column("terminal_id", String(8), ForeignKey("terminals.id")),  # binding
    Column("key_version", SmallInteger, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False, server_default="active"),
)

cardholders = Table(
    "cardholders",
    metadata,
    Column("id", String(20), primary_key=True),
    # The ID number and name in clear: NULL since they are sealed (ledger/personal.py); only
    # rows written before revision 0009 hold them until sealed.
    Column("ssn", String(20), unique=True),  # social-security number
    Column("name", String(60)),
    Column("category", String(10), nullable=False),  # employed | retired
    Column("birth_date", Date),
    Column("unit_id", String(32), ForeignKey("institutions.id"), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("ssn_index", String(32), unique=True),  # keyed hash of the ID number (hex)
    Column("personal", LargeBinary),  # ID number and name sealed under PERSONAL_DATA
    Column("personal_key_version", SmallInteger),  # the PERSONAL_DATA key's version
)

cards = Table(
    "cards",
    metadata,
    Column("card_no", String(19), primary_key=True),  # PAN with Luhn digit
    Column("application_serial", String(20), nullable=False, unique=True),
    Column("cardholder_id", String(20), ForeignKey("cardholders.id"), nullable=False),
    Column("key_version", SmallInteger, nullable=False, server_default="1"),
    # active | lost | cancelled | replaced
    Column("status", String(16), nullable=False, server_default="active"),
    Column("expiry", Date, nullable=False),
    Column("replaced_by", String(19), ForeignKey("cards.card_no")),
    Column("cancelled_at_us", BigInteger),
    Index(None, "cardholder_id"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),  # ledger.kinds.account_id(kind, owner)
    Column("kind", String(16), nullable=False),
    Column("owner", String(40), nullable=False),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("debits_posted", BigInteger, nullable=False, server_default="0"),
    Column("credits_posted", BigInteger, nullable=False, server_default="0"),
    Column("closed", Boolean, nullable=False, server_default=false()),
    CheckConstraint("debits_posted >= 0 AND credits_posted >= 0", name="posted_not_negative"),
)

transfers = Table(
    "transfers",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),  # the idempotency key
    Column("debit_account_id", String(64), nullable=False),
    Column("credit_account_id", String(64), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("code", Integer, nullable=False),
    Column("reference", String(240), nullable=False, server_default=""),
    Column("result", SmallInteger, nullable=False),  # 0 posted, else a remembered refusal
    Column("posted_at_us", BigInteger, nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    Index(None, "debit_account_id"),
    Index(None, "credit_account_id"),
)

response_cache = Table(
    "response_cache",
    metadata,
    Column("message_key", String(80), primary_key=True),  # (terminal, batch, stan, class)
    Column("response", LargeBinary, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    Index(None, "expires_at_us"),
)

blacklist = Table(
    "blacklist",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("application_serial", String(20), nullable=False),
    Column("reason", String(16), nullable=False),  # lost | cancelled | replaced | fraud
    Column("version", Integer, nullable=False),  # the list version that added it
    Column("removed_version", Integer),  # the list version that removed it (unloss)
    Column("added_at_us", BigInteger, nullable=False),
    Column("note", String(200)),  # an operator's reason (switch/estate/blacklist.py)
    Index(None, "application_serial"),
    Index(None, "version"),
)

offline_records = Table(
    "offline_records",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("psam_terminal_no", String(12), nullable=False),
    Column("psam_serial", BigInteger, nullable=False),  # PSAM transaction serial
    Column("terminal_id", String(8), nullable=False),
    Column("batch_no", Integer, nullable=False),
    Column("application_serial", String(20), nullable=False),
    Column("purse", String(2), nullable=False),  # ED | EP
    Column("amount_fen", BigInteger, nullable=False),
    Column("tac", String(8), nullable=False),
    Column("card_datetime", String(14), nullable=False),  # yyyymmddhhmmss the TAC covers
    Column("transfer_id", String(64)),
    Column("received_at_us", BigInteger, nullable=False),
    Column("card_counter", Integer),  # the card's offline counter of the purse, before the debit
    UniqueConstraint("psam_terminal_no", "psam_serial"),
    Index(None, "application_serial", "purse"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("reason", String(40), nullable=False),
    Column("reference", String(240), nullable=False),
    Column("amount_fen", BigInteger, nullable=False, server_default="0"),
    Column("detail", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("created_at_us", BigInteger, nullable=False),
    Column("resolved_at_us", BigInteger),
    Column("resolved_by", String(40)),
)

reversal_queue = Table(
    "reversal_queue",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("bank_id", String(32), nullable=False),
    Column("reference", String(240), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at_us", BigInteger, nullable=False),
    Column("stan", String(6)),  # F11 and F7 of its first sending: a repeat carries them again
    Column("transmitted", String(10)),
    Column("next_at_us", BigInteger, nullable=False, server_default="0"),  # its next attempt
    Column("last_at_us", BigInteger),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", String(40), nullable=False),
    Column("action", String(40), nullable=False),
    Column("subject", String(120), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
)

# --- day-end (revision 0003_dayend; DESIGN §5, specs/dayend-files.md) -------------------------
# Dates are ISO text (yyyy-mm-dd), the same on SQLite and PostgreSQL and easy for raw drivers.

business_days = Table(
    "business_days",
    metadata,
    Column("business_date", String(10), primary_key=True),
    # prepared (maker ran, files staged) | approved (posted, files released) | rejected
    Column("status", String(16), nullable=False),
    Column("cutover_at_us", BigInteger, nullable=False),  # the instant that closes the date
    Column("timezone", String(40), nullable=False),
    Column("run_by", String(40), nullable=False),
    Column("run_started_at_us", BigInteger, nullable=False),
    Column("run_finished_at_us", BigInteger, nullable=False),
    Column("runs", Integer, nullable=False, server_default="1"),
    Column("approval_id", BigInteger),
    Column("approved_by", String(40)),
    Column("approved_at_us", BigInteger),
    Column("report_name", String(120), nullable=False, server_default=""),
    Column("report_sha256", String(64), nullable=False, server_default=""),
)

payouts = Table(
    "payouts",
    metadata,
    # payout:<date>:<source>:<party>, or …:r<n> for a re-issue
    Column("id", String(96), primary_key=True),
    Column("business_date", String(10), nullable=False),
    Column("bank_id", String(32), nullable=False),
    Column("source", String(10), nullable=False),  # insurance | ep
    Column("kind", String(12), nullable=False),  # institution | refund
    Column("institution_id", String(32)),
    Column("cardholder_id", String(20)),
    Column("account_no", String(40), nullable=False),
    Column("account_name", String(120), nullable=False, server_default=""),
    Column("amount_fen", BigInteger, nullable=False),
    # prepared | released | paid | returned | reissued
    Column("status", String(12), nullable=False),
    Column("reason", String(120), nullable=False, server_default=""),
    Column("file_name", String(120), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("transfer_id", String(64), nullable=False),  # payable → payouts in flight
    Column("reissue_of", String(96)),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    CheckConstraint("source IN ('insurance', 'ep')", name="source_known"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    Index(None, "business_date"),
    Index(None, "file_name"),
)

payout_files = Table(
    "payout_files",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("business_date", String(10), nullable=False),
    Column("bank_id", String(32), nullable=False),
    Column("source", String(10), nullable=False),  # insurance | ep
    Column("kind", String(12), nullable=False),  # payout | refund
    Column("record_count", Integer, nullable=False),
    Column("total_fen", BigInteger, nullable=False),
    Column("mac", String(16), nullable=False),  # hex, X9.19 under the bank's file key
    Column("sha256", String(64), nullable=False),  # of the file's bytes as written
    Column("status", String(12), nullable=False),  # staged | released
    Column("created_at_us", BigInteger, nullable=False),
    Column("released_at_us", BigInteger),
    Index(None, "business_date"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("subject_kind", String(32), nullable=False),  # payout_batch | review_adjustment | …
    Column("subject_id", String(120), nullable=False),
    Column("payload", Text, nullable=False, server_default=""),
    Column("made_by", String(40), nullable=False),
    Column("made_at_us", BigInteger, nullable=False),
    Column("approved_by", String(40)),  # the checker, whether approving or rejecting
    Column("approved_at_us", BigInteger),
    Column("status", String(12), nullable=False),  # pending | approved | rejected
    Column("reason", Text, nullable=False, server_default=""),
    CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status_known"),
    Index(None, "subject_kind", "subject_id"),
)

bank_statement_lines = Table(
    "bank_statement_lines",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("bank_id", String(32), nullable=False),
    Column("statement_date", String(10), nullable=False),
    Column("line_ref", String(64), nullable=False),
    # savings_debit | contribution | payout_paid | other
    Column("kind", String(16), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("counterparty", String(120), nullable=False, server_default=""),
    Column("status", String(12), nullable=False),  # unmatched | matched | review
    Column("matched_transfer_id", String(64)),
    Column("file_name", String(120), nullable=False, server_default=""),
    Column("imported_at_us", BigInteger, nullable=False),
    UniqueConstraint("bank_id", "line_ref"),
    Index(None, "statement_date"),
)

#: Terminals' working keys, shared by every worker (wrapped key blocks, never clear keys).
session_keys = Table(
    "session_keys",
    metadata,
    Column("alias", String(80), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("usage", String(8), nullable=False),
    Column("kcv", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("block", Text, nullable=False),
)

#: Terminals' working-key sets (specs/terminal-interface.md, sign-on): `pending` from the sign-on
#: until a request MACed under the set arrives, then `current`; at most one current and a bounded
#: number of pending sets per terminal (older ones are deleted with their key blocks).
session_sets = Table(
    "session_sets",
    metadata,
    Column("terminal_id", String(8), primary_key=True),
    Column("mak_version", Integer, primary_key=True, autoincrement=False),
    Column("state", String(8), nullable=False),  # current | pending
    Column("mak_kcv", String(16), nullable=False),
    Column("pik_version", Integer, nullable=False),
    Column("pik_kcv", String(16), nullable=False),
    Column("tdk_version", Integer),
    Column("tdk_kcv", String(16)),
    Column("batch_no", Integer, nullable=False),  # the batch the set opens once promoted
)

#: Change counts kept by triggers from the migrations: row 1 every change of cards, psams and
#: blacklist (a daemon forgets the card records it keeps when it moves); row 2 the estate's
#: (terminals' institution, kind and status, institutions: the terminal records it keeps).
directory_version = Table(
    "directory_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

#: Versioned offline limits and category tables (switch/estate/parameters.py): scope ``all``,
#: ``institution:ID`` or ``group:NAME``; a terminal downloads the newest version of the
#: narrowest scope that has one (specs/terminal-interface.md, parameter download).
terminal_parameters = Table(
    "terminal_parameters",
    metadata,
    Column("version", Seq, primary_key=True, autoincrement=True),
    Column("scope", String(48), nullable=False),
    Column("floor_fen", BigInteger, nullable=False),
    Column("count_max", Integer, nullable=False),
    Column("age_max_h", Integer, nullable=False),
    Column("categories", Text, nullable=False),  # "code=name" lines
    Column("created_at_us", BigInteger, nullable=False),
    Column("created_by", String(40), nullable=False),
    Index(None, "scope"),
)

#: Back-office and key-ceremony operators (switch/operators/): roles, a memory-hard password
#: hash (scrypt), status; and the SHA-256 of the short-lived tokens `operators login` issues.
operators = Table(
    "operators",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("roles", String(80), nullable=False),  # comma-separated: maker,checker,...
    Column("password_hash", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at_us", BigInteger, nullable=False),
    Column("created_by", String(40), nullable=False),
    Column("password_changed_at_us", BigInteger, nullable=False),
)

operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("operator", String(40), ForeignKey("operators.name"), nullable=False),
    Column("issued_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
)

#: Numbers that never repeat across restarts (SQLite; PostgreSQL uses sequences of those names).
counters = Table(
    "counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("next_value", BigInteger, nullable=False),
)

#: Tables whose rows are never updated nor deleted (enforced by triggers from the migration).
APPEND_ONLY = ("transfers", "audit_log")

"""SQL tables of the medical rules, on the ledger's MetaData (ledger.schema.metadata), created by
the Alembic revision ``0002_medical``. Amounts in fen (BIGINT); times in µs since the epoch, UTC.

- catalogue versions and their items (each version a complete list);
- policy years (the TOML text as imported, parsed again on read);
- special-category authorisations per person and year (written to the card later);
- committed accumulators per person and year (reservations are the in-flight bills' deltas);
- bills from the HIS with their split (JSON) and accumulator delta columns;
- offline purchases counted into the accumulators, once per PSAM terminal number and serial;
- HIS credentials per institution (token hashes, never tokens);
- imported fee-record files and their records;
- the centre's copy of each visit record it wrote to a card (specs/card-layout.md), sealed under
  the PERSONAL_DATA key (``ledger.medical.card_copies``): department and diagnoses never in clear;
  and each person's health data as an authorised institution last sent it, sealed the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from ledger.schema import metadata


def _totals(prefix: str = "") -> list[Column[int]]:
    names = ("eligible_fen", "deductible_fen", "pooled_fen", "personal_account_fen", "self_pay_fen")
    return [Column(prefix + name, BigInteger, nullable=False, server_default="0") for name in names]


medical_catalogue_versions = Table(
    "medical_catalogue_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("effective_from", Date, nullable=False),
    Column("file_digest", String(64), nullable=False),
    Column("imported_at_us", BigInteger, nullable=False),
    Column("imported_by", String(40), nullable=False),
)

medical_catalogue_items = Table(
    "medical_catalogue_items",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("code", String(20), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("unit", String(20), nullable=False),
    Column("ceiling_fen", BigInteger, nullable=False),
    Column("coverage", String(2), nullable=False),  # 甲 | 乙 | 丙
    Column("self_pay_bp", Integer, nullable=False),
)

medical_policies = Table(
    "medical_policies",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("text", Text, nullable=False),
    Column("imported_at_us", BigInteger, nullable=False),
    Column("imported_by", String(40), nullable=False),
)

medical_authorisations = Table(
    "medical_authorisations",
    metadata,
    Column("person_id", String(20), primary_key=True),
    Column("category", String(32), primary_key=True),  # a special category of the policy
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("granted_at_us", BigInteger, nullable=False),
    Column("granted_by", String(40), nullable=False),
    Column("revoked_at_us", BigInteger),
    Column("written_to_card", Boolean, nullable=False, server_default=false()),
)

medical_accumulators = Table(
    "medical_accumulators",
    metadata,
    Column("person_id", String(20), primary_key=True),
    Column("year", Integer, primary_key=True, autoincrement=False),
    *_totals(),
    Column("lock_version", BigInteger, nullable=False, server_default="0"),
)

medical_bills = Table(
    "medical_bills",
    metadata,
    Column("bill_id", String(16), primary_key=True),
    Column("institution_id", String(32), nullable=False),
    Column("his_bill_no", String(40), nullable=False),
    Column("card_no", String(19), nullable=False),
    Column("person_id", String(20), nullable=False),
    Column("year", Integer, nullable=False),
    Column("service_date", Date, nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("bill_json", Text, nullable=False),
    Column("split_json", Text, nullable=False),
    Column("state", String(12), nullable=False),
    *_totals("d_"),
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    UniqueConstraint("institution_id", "his_bill_no"),
    Index(None, "person_id", "year", "state"),
    Index(None, "state", "expires_at_us"),
)

medical_offline_counts = Table(
    "medical_offline_counts",
    metadata,
    Column("key", String(64), primary_key=True),  # offline:<PSAM terminal no>:<serial>
    Column("person_id", String(20), nullable=False),
    Column("year", Integer, nullable=False),
    *_totals("d_"),
)

his_credentials = Table(
    "his_credentials",
    metadata,
    Column("institution_id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False),  # hex SHA-256 of salt || token
    Column("salt", String(32), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
)

medical_fee_files = Table(
    "medical_fee_files",
    metadata,
    Column("file_digest", String(64), primary_key=True),
    Column("institution_id", String(32), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("amount_total_fen", BigInteger, nullable=False),
    Column("imported_at_us", BigInteger, nullable=False),
    UniqueConstraint("institution_id", "business_date"),
)

medical_fee_records = Table(
    "medical_fee_records",
    metadata,
    Column("file_digest", String(64), primary_key=True),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),  # bill | offline
    Column("reference", String(40), nullable=False),  # bill id, or PSAM terminal no:serial
    Column("card_no", String(19), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("fund_fen", BigInteger, nullable=False),  # personal account + pooled (bill) or card
    Column("charged_at", String(14), nullable=False),
    Index(None, "reference"),
)

card_visits = Table(
    "card_visits",
    metadata,
    Column("bill_id", String(16), primary_key=True),  # one visit per settled bill
    Column("application_serial", String(20), nullable=False),  # hex, as cards.application_serial
    Column("sealed", LargeBinary, nullable=False),  # the 72-byte record, context visit|serial|bill
    Column("key_version", SmallInteger, nullable=False),  # the PERSONAL_DATA version that sealed it
    Column("written_at_us", BigInteger, nullable=False),
    Index(None, "application_serial", "written_at_us"),
)

card_health = Table(
    "card_health",
    metadata,
    Column("person_id", String(20), primary_key=True),  # the cardholder: every card of theirs
    Column("sealed", LargeBinary, nullable=False),  # EF 0019's 92 data bytes, health|<person id>
    Column("key_version", SmallInteger, nullable=False),
    Column("updated_by", String(32), nullable=False),  # the institution
    Column("updated_at_us", BigInteger, nullable=False),
    Column("pending", Boolean, nullable=False, server_default=false()),  # not on a card yet
)

card_consents = Table(  # the cardholder's PIN at an institution's POS: its HIS may read the book
    "card_consents",
    metadata,
    Column("institution_id", String(32), primary_key=True),
    Column("application_serial", String(20), primary_key=True),
    Column("opened_at_us", BigInteger, nullable=False),
    Column("until_us", BigInteger, nullable=False),
)

MEDICAL_TABLES = (
    medical_catalogue_versions,
    medical_catalogue_items,
    medical_policies,
    medical_authorisations,
    medical_accumulators,
    medical_bills,
    medical_offline_counts,
    his_credentials,
    medical_fee_files,
    medical_fee_records,
    card_visits,
    card_health,
    card_consents,
)

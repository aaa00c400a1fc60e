"""Reference data in SQL (SQLAlchemy Core, a cold path): `SqlDirectory` reads cards,
cardholders and institutions from the ledger's tables and catalogue versions, policies and
authorisations from the medical ones; `ReferenceData` writes the back office's imports
(catalogue versions, policy years, authorisations, HIS credentials)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage, effective_on
from ledger.medical.directory import Cardholder, health_writer
from ledger.medical.policy import Category, Policy, parse_policy
from ledger.medical.sql_store import write_transaction
from ledger.medical.tables import (
    his_credentials,
    medical_authorisations,
    medical_catalogue_items,
    medical_catalogue_versions,
    medical_policies,
)
from ledger.schema import cardholders, cards, institutions


class SqlDirectory:
    """Reference data from the ledger's tables (cards, cardholders, institutions) and the medical
    ones. Catalogue versions and policies are parsed once per instance and cached."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._catalogues: dict[int, CatalogueVersion] = {}
        self._policies: dict[int, Policy] = {}

    def _one(self, statement: Any) -> Any:
        with self.engine.connect() as connection:
            row = connection.execute(statement).first()
            connection.rollback()
        return row

    def _holder(self, condition: Any) -> Cardholder | None:
        row = self._one(
            select(
                cards.c.card_no,
                cards.c.application_serial,
                cards.c.status,
                cardholders.c.id,
                cardholders.c.category,
            )
            .join(cardholders, cards.c.cardholder_id == cardholders.c.id)
            .where(condition)
        )
        if row is None:
            return None
        return Cardholder(
            row.card_no, row.application_serial, row.id, Category(row.category), row.status
        )

    def cardholder(self, card_no: str) -> Cardholder | None:
        return self._holder(cards.c.card_no == card_no)

    def cardholder_by_serial(self, application_serial: str) -> Cardholder | None:
        return self._holder(cards.c.application_serial == application_serial)

    def institution_level(self, institution_id: str) -> int | None:
        row = self._one(select(institutions.c.level).where(institutions.c.id == institution_id))
        return None if row is None or row.level is None else int(row.level)

    def institution_kind(self, institution_id: str) -> str | None:
        row = self._one(select(institutions.c.kind).where(institutions.c.id == institution_id))
        return None if row is None else str(row.kind)

    def may_write_health(self, institution_id: str) -> bool:
        row = self._one(
            select(institutions.c.kind, institutions.c.health_writer).where(
                institutions.c.id == institution_id
            )
        )
        if row is None:
            return False
        return health_writer(row.health_writer, str(row.kind))

    def authorised(self, person_id: str, year: int) -> frozenset[str]:
        a = medical_authorisations.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.category).where(
                    a.person_id == person_id, a.year == year, a.revoked_at_us.is_(None)
                )
            ).all()
            connection.rollback()
        return frozenset(row.category for row in rows)

    def catalogue(self, version: int) -> CatalogueVersion | None:
        if version not in self._catalogues:
            loaded = load_catalogue(self.engine, version)
            if loaded is None:
                return None
            self._catalogues[version] = loaded
        return self._catalogues[version]

    def catalogue_on(self, day: dt.date) -> CatalogueVersion | None:
        v = medical_catalogue_versions.c
        with self.engine.connect() as connection:
            rows = connection.execute(select(v.version, v.effective_from)).all()
            connection.rollback()
        headers = [CatalogueVersion(row.version, row.effective_from) for row in rows]
        chosen = effective_on(headers, day)
        return None if chosen is None else self.catalogue(chosen.number)

    def policy(self, year: int) -> Policy | None:
        if year not in self._policies:
            row = self._one(select(medical_policies.c.text).where(medical_policies.c.year == year))
            if row is None:
                return None
            self._policies[year] = parse_policy(row.text)
        return self._policies[year]


def load_catalogue(engine: Engine, version: int) -> CatalogueVersion | None:
    v, i = medical_catalogue_versions.c, medical_catalogue_items.c
    with engine.connect() as connection:
        head = connection.execute(select(v.effective_from).where(v.version == version)).first()
        rows = connection.execute(select(medical_catalogue_items).where(i.version == version))
        items = {
            row.code: CatalogueItem(
                row.code,
                row.name,
                row.unit,
                row.ceiling_fen,
                Coverage(row.coverage),
                row.self_pay_bp,
            )
            for row in rows
        }
        connection.rollback()
    return None if head is None else CatalogueVersion(version, head.effective_from, items)


def catalogue_versions(engine: Engine) -> list[tuple[int, dt.date]]:
    v = medical_catalogue_versions.c
    with engine.connect() as connection:
        rows = connection.execute(select(v.version, v.effective_from).order_by(v.version)).all()
        connection.rollback()
    return [(row.version, row.effective_from) for row in rows]


class ReferenceData:
    """Writes of the back office: each import in one transaction, refused when already there."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_catalogue(
        self, version: CatalogueVersion, digest: str, now_us: int, operator: str
    ) -> bool:
        """Store a catalogue version; False when that version number is already stored."""
        v = medical_catalogue_versions.c
        with write_transaction(self.engine) as connection:
            if connection.execute(select(v.version).where(v.version == version.number)).first():
                return False
            connection.execute(
                insert(medical_catalogue_versions).values(
                    version=version.number,
                    effective_from=version.effective_from,
                    file_digest=digest,
                    imported_at_us=now_us,
                    imported_by=operator,
                )
            )
            rows = [
                {
                    "version": version.number,
                    "code": item.code,
                    "name": item.name,
                    "unit": item.unit,
                    "ceiling_fen": item.ceiling_fen,
                    "coverage": item.coverage.value,
                    "self_pay_bp": item.self_pay_bp,
                }
                for item in version.items.values()
            ]
            if rows:
                connection.execute(insert(medical_catalogue_items), rows)
        return True

    def set_policy(self, text: str, now_us: int, operator: str) -> Policy:
        """Store a year's policy (parsed first, so a bad file stores nothing); a year whose
        policy exists is refused (ValueError): policies are versioned by year, not edited."""
        policy = parse_policy(text)
        p = medical_policies.c
        with write_transaction(self.engine) as connection:
            if connection.execute(select(p.year).where(p.year == policy.year)).first():
                raise ValueError(f"the {policy.year} policy is already stored")
            connection.execute(
                insert(medical_policies).values(
                    year=policy.year, text=text, imported_at_us=now_us, imported_by=operator
                )
            )
        return policy

    def authorise(
        self, person_id: str, category: str, year: int, now_us: int, operator: str
    ) -> bool:
        """Authorise a person for a special category for a year; False when already."""
        a = medical_authorisations.c
        key = and_(a.person_id == person_id, a.category == category, a.year == year)
        with write_transaction(self.engine) as connection:
            row = connection.execute(select(a.revoked_at_us).where(key)).first()
            if row is not None and row.revoked_at_us is None:
                return False
            if row is not None:
                connection.execute(
                    update(medical_authorisations)
                    .where(key)
                    .values(
                        revoked_at_us=None,
                        granted_at_us=now_us,
                        granted_by=operator,
                        written_to_card=False,
                    )
                )
            else:
                connection.execute(
                    insert(medical_authorisations).values(
                        person_id=person_id,
                        category=category,
                        year=year,
                        granted_at_us=now_us,
                        granted_by=operator,
                    )
                )
        return True

    def revoke(self, person_id: str, category: str, year: int, now_us: int) -> bool:
        a = medical_authorisations.c
        with write_transaction(self.engine) as connection:
            done = connection.execute(
                update(medical_authorisations)
                .where(
                    a.person_id == person_id,
                    a.category == category,
                    a.year == year,
                    a.revoked_at_us.is_(None),
                )
                .values(revoked_at_us=now_us)
            )
        return bool(done.rowcount)

    def authorisations(self, person_id: str) -> list[tuple[str, int, bool]]:
        a = medical_authorisations.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.category, a.year, a.revoked_at_us)
                .where(a.person_id == person_id)
                .order_by(a.year, a.category)
            ).all()
            connection.rollback()
        return [(row.category, row.year, row.revoked_at_us is None) for row in rows]

    def unwritten_authorisations(self, limit: int = 1000) -> list[tuple[str, str, int]]:
        """(person, category, year) of active authorisations not yet written to the card's
        authorisation file — for the card side, which calls `mark_written` once it has."""
        a = medical_authorisations.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.person_id, a.category, a.year)
                .where(a.written_to_card.is_(False), a.revoked_at_us.is_(None))
                .order_by(a.person_id, a.year, a.category)
                .limit(limit)
            ).all()
            connection.rollback()
        return [(row.person_id, row.category, row.year) for row in rows]

    def mark_written(self, person_id: str, category: str, year: int) -> bool:
        a = medical_authorisations.c
        with write_transaction(self.engine) as connection:
            done = connection.execute(
                update(medical_authorisations)
                .where(a.person_id == person_id, a.category == category, a.year == year)
                .values(written_to_card=True)
            )
        return bool(done.rowcount)

    # -- HIS credentials ------------------------------------------------------------------------
    def issue_credential(self, institution_id: str, now_us: int) -> str:
        """A new HIS token for an institution, its HTTP Basic password (shown once; only its
        salted hash is kept; a new one replaces the old)."""
        token = secrets.token_urlsafe(24)
        salt = secrets.token_hex(16)
        values = {
            "token_hash": token_hash(salt, token),
            "salt": salt,
            "created_at_us": now_us,
            "status": "active",
        }
        c = his_credentials.c
        with write_transaction(self.engine) as connection:
            done = connection.execute(
                update(his_credentials).where(c.institution_id == institution_id).values(**values)
            )
            if not done.rowcount:
                connection.execute(
                    insert(his_credentials).values(institution_id=institution_id, **values)
                )
        return token

    def check_credential(self, institution_id: str, token: str) -> bool:
        c = his_credentials.c
        with self.engine.connect() as connection:
            row = connection.execute(
                select(c.token_hash, c.salt).where(
                    c.institution_id == institution_id, c.status == "active"
                )
            ).first()
            connection.rollback()
        if row is None:
            token_hash("0" * 32, token)  # the same work either way
            return False
        return hmac.compare_digest(row.token_hash, token_hash(row.salt, token))


def token_hash(salt: str, token: str) -> str:
    """Salted SHA-256 of a token (192 random bits: nothing to stretch, unlike a password).

    >>> len(token_hash("00", "t"))
    64
    """
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

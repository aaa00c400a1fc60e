"""Contributions and cardholders files (specs/ledger-files.md, DESIGN §3.6, §5): builders for the
counterparty's side and importers that check everything before anything is written.

Both use the record-file frame of `ledger.medical.recordfile` (header, details, trailer with the
record count and amount total, MAC line) and its MAC through the HSM (`ledger.medical.filemac`,
X9.19 under the counterparty's FILE key). The cardholders file holds names and ID numbers, so
each record's personal data travel encrypted under the same FILE key (`Hsm.encrypt_data`: its
encryption variant, 3DES-CBC, zero IV, ISO 9797-1 padding method 2) behind an 8-byte block that
depends on the file id and the cardholder id, so equal names give different ciphertexts and a
record moved to another file or line does not decrypt to itself. Byte-deterministic: the same
inputs and key give the same bytes.

An import refuses the whole file (`MedicalFileError`) on any defect — MAC, count, total, a
malformed record, an unknown unit or cardholder, no policy for the period — before it writes
anything. Contributions post as one linked ledger batch (all or nothing); their transfer ids
come from (unit, period, cardholder) (`ledger.events.funds.contribution_transfers`), so the same
file imported again posts nothing.

>>> june = dt.date(2026, 6, 1)
>>> age_on(dt.date(1990, 6, 15), june), age_on(dt.date(1990, 6, 1), june)
(35, 36)
>>> split_contribution(10_001, 3000)
(3000, 7001)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from hsm.errors import InvalidInputError
from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger import schema
from ledger.core import Ledger, Transfer, TransferResult
from ledger.events.common import cardholder_accounts, unit_accounts
from ledger.events.funds import ContributionLine, contribution_transfers
from ledger.medical import filemac
from ledger.medical.catalogue import BP
from ledger.medical.policy import Category, PolicyError
from ledger.medical.recordfile import (
    Framed,
    MedicalFileError,
    build,
    check_total,
    parse,
    parse_int,
)
from ledger.medical.sql_reference import SqlDirectory

CONTRIBUTIONS = "CONTRIBUTIONS"
CARDHOLDERS = "CARDHOLDERS"
FORMAT_VERSION = "1"
AMOUNT_MAX_FEN = 10**12  # 10 000 000 000 yuan: one line above it is a typo, not a contribution
CHUNK = 900  # ids per IN (...) lookup
Progress = Callable[[int], None]

_ID = re.compile(r"[0-9A-Za-z_.-]{1,20}")
_FILE_ID = re.compile(r"[0-9A-Za-z_.-]{1,32}")
_UNIT = re.compile(r"[0-9A-Za-z_.-]{1,32}")
_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_SSN = re.compile(r"[0-9A-Z]{15,20}")
_DATE = re.compile(r"\d{8}")


@dataclass(frozen=True)
class ContributionRecord:
    unit_id: str
    cardholder_id: str
    amount_fen: int


@dataclass(frozen=True)
class ContributionFile:
    file_id: str
    period: str  # yyyy-mm
    records: tuple[ContributionRecord, ...]

    @property
    def amount_total_fen(self) -> int:
        return sum(r.amount_fen for r in self.records)


@dataclass(frozen=True)
class CardholderRecord:
    cardholder_id: str
    ssn: str
    name: str
    category: Category
    birth_date: dt.date
    unit_id: str


@dataclass(frozen=True)
class CardholderFile:
    file_id: str
    records: tuple[CardholderRecord, ...]


@dataclass(frozen=True)
class ContributionImport:
    file: ContributionFile
    posted: int  # lines whose money moved now
    already_posted: int  # lines posted by an earlier import (nothing moved now)
    personal_fen: int
    pooled_fen: int


@dataclass(frozen=True)
class CardholderImport:
    file: CardholderFile
    added: int
    updated: int
    unchanged: int


def age_on(birth: dt.date, day: dt.date) -> int:
    """Age in completed years on `day`."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def split_contribution(amount_fen: int, personal_bp: int) -> tuple[int, int]:
    """(personal, pooled): the personal share rounded down to the fen, the pooled fund the rest."""
    personal = amount_fen * personal_bp // BP
    return personal, amount_fen - personal


def _text(value: str, pattern: re.Pattern[str], what: str, line: int) -> str:
    if not pattern.fullmatch(value):
        raise MedicalFileError(f"bad {what}: {value!r}", line)
    return value


def _date(value: str, what: str, line: int) -> dt.date:
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise MedicalFileError(f"{what} is not a yyyymmdd date: {value!r}", line) from None


def _header(framed: Framed, count: int) -> tuple[str, ...]:
    if len(framed.header) != count or framed.header[0] != FORMAT_VERSION:
        raise MedicalFileError(f"the header is H|{framed.kind}|{FORMAT_VERSION}|…", 1)
    return framed.header


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def known_units(engine: Engine, ids: set[str]) -> set[str]:
    i = schema.institutions.c
    found: set[str] = set()
    with engine.connect() as connection:
        for chunk in _chunks(sorted(ids)):
            statement = select(i.id).where(i.id.in_(chunk), i.kind == "employer_unit")
            found.update(connection.execute(statement).scalars())
    return found


# -- contributions ------------------------------------------------------------------------------
def build_contributions(file: ContributionFile) -> bytes:
    """The bytes the MAC covers; seal them with `filemac.seal`."""
    if not _PERIOD.fullmatch(file.period):
        raise MedicalFileError(f"bad period: {file.period!r}")
    _text(file.file_id, _FILE_ID, "file id", 1)
    records = [[r.unit_id, r.cardholder_id, str(r.amount_fen)] for r in file.records]
    header = [FORMAT_VERSION, file.file_id, file.period]
    return build(CONTRIBUTIONS, header, records, amount_total_fen=file.amount_total_fen)


def contributions_from_framed(framed: Framed, progress: Progress | None = None) -> ContributionFile:
    """Every record checked, duplicates refused, the total checked (pure)."""
    _, file_id, period = _header(framed, 3)
    _text(file_id, _FILE_ID, "file id", 1)
    _text(period, _PERIOD, "period (yyyy-mm)", 1)
    records, seen = [], set()
    for line, row in enumerate(framed.records, start=2):
        if len(row) != 3:
            raise MedicalFileError("a contribution is D|unit|cardholder|amount fen", line)
        unit = _text(row[0], _UNIT, "unit id", line)
        holder = _text(row[1], _ID, "cardholder id", line)
        amount = parse_int(row[2], "amount", line, minimum=1)
        if amount > AMOUNT_MAX_FEN:
            raise MedicalFileError(f"amount above {AMOUNT_MAX_FEN} fen", line)
        if (unit, holder) in seen:
            raise MedicalFileError(f"a second line for unit {unit}, cardholder {holder}", line)
        seen.add((unit, holder))
        records.append(ContributionRecord(unit, holder, amount))
        if progress is not None:
            progress(1)
    parsed = ContributionFile(file_id, period, tuple(records))
    check_total(framed, parsed.amount_total_fen)
    return parsed


def _birth_dates(engine: Engine, ids: set[str]) -> dict[str, dt.date | None]:
    c = schema.cardholders.c
    found: dict[str, dt.date | None] = {}
    with engine.connect() as connection:
        for chunk in _chunks(sorted(ids)):
            rows = connection.execute(select(c.id, c.birth_date).where(c.id.in_(chunk)))
            found.update({row.id: row.birth_date for row in rows})
    return found


def contribution_lines(engine: Engine, file: ContributionFile) -> list[ContributionLine]:
    """Each record split by the policy of the period's year at the cardholder's age on the
    period's first day; unknown units or cardholders refuse the file."""
    year, month = (int(part) for part in file.period.split("-"))
    policy = SqlDirectory(engine).policy(year)
    if policy is None:
        raise MedicalFileError(f"no policy for {year}: import it first (medswitch policy import)")
    first_day = dt.date(year, month, 1)
    units = {r.unit_id for r in file.records}
    if missing := sorted(units - known_units(engine, units)):
        raise MedicalFileError(f"unknown employer unit(s): {', '.join(missing[:5])}")
    births = _birth_dates(engine, {r.cardholder_id for r in file.records})
    lines = []
    for line, record in enumerate(file.records, start=2):
        if record.cardholder_id not in births:
            raise MedicalFileError(f"unknown cardholder {record.cardholder_id}", line)
        birth = births[record.cardholder_id]
        if birth is None:
            raise MedicalFileError(f"cardholder {record.cardholder_id} has no birth date", line)
        try:
            bp = policy.personal_share_bp(age_on(birth, first_day))
        except PolicyError as error:
            raise MedicalFileError(str(error), line) from None
        personal, pooled = split_contribution(record.amount_fen, bp)
        lines.append(
            ContributionLine(record.unit_id, file.period, record.cardholder_id, personal, pooled)
        )
    return lines


async def _open_missing(ledger: Ledger, lines: Sequence[ContributionLine]) -> None:
    wanted = [a for u in sorted({x.unit_id for x in lines}) for a in unit_accounts(u)]
    wanted += [a for h in sorted({x.cardholder_id for x in lines}) for a in cardholder_accounts(h)]
    existing = await ledger.balances([a.id for a in wanted])
    missing = [a for a in wanted if a.id not in existing]
    if missing:
        await ledger.open_accounts(missing)


async def import_contributions(
    engine: Engine,
    ledger: Ledger,
    hsm: Hsm,
    file_key: KeyRef,
    data: bytes,
    progress: Progress | None = None,
) -> ContributionImport:
    """Check the MAC, the totals and every record, split by the policy, then post every line's
    transfers as one linked batch: all of them or none."""
    framed = parse(data, CONTRIBUTIONS)
    await filemac.verify(hsm, file_key, framed)
    parsed = contributions_from_framed(framed, progress)
    lines = contribution_lines(engine, parsed)
    transfers: list[Transfer] = [t for line in lines for t in contribution_transfers(line)]
    await _open_missing(ledger, lines)
    results = await ledger.post(transfers, linked=True) if transfers else []
    refused = [(t, r) for t, r in zip(transfers, results, strict=True) if not r.ok]
    if refused:
        transfer, result = next(
            ((t, r) for t, r in refused if r is not TransferResult.LINKED_EVENT_FAILED),
            refused[0],
        )
        raise MedicalFileError(
            f"the ledger refused {transfer.reference}: {result.name} (nothing was posted)"
        )
    created = {t.id for t, r in zip(transfers, results, strict=True) if r is TransferResult.CREATED}
    posted = sum(1 for line in lines if any(t.id in created for t in contribution_transfers(line)))
    return ContributionImport(
        parsed,
        posted,
        len(lines) - posted,
        sum(x.personal_fen for x in lines),
        sum(x.pooled_fen for x in lines),
    )


# -- cardholders --------------------------------------------------------------------------------
def _prefix(file_id: str, cardholder_id: str) -> bytes:
    """The 8-byte block before each record's personal data (a per-record IV under a zero IV)."""
    text = f"{file_id}|{cardholder_id}".encode()
    return hashlib.blake2b(text, digest_size=8, person=b"medsw-holders").digest()


def _personal(record: CardholderRecord) -> bytes:
    for value in (record.ssn, record.name):
        if "|" in value or "\n" in value or "\r" in value:
            raise MedicalFileError(f"a field may not contain '|' or a line break: {value!r}")
    return f"{record.ssn}|{record.name}".encode()


async def build_cardholders(hsm: Hsm, file_key: KeyRef, file: CardholderFile) -> bytes:
    """The bytes the MAC covers, the personal data of each record encrypted."""
    _text(file.file_id, _FILE_ID, "file id", 1)
    rows = []
    for record in file.records:
        clear = _prefix(file.file_id, record.cardholder_id) + _personal(record)
        secret = await hsm.encrypt_data(file_key, clear)
        rows.append(
            [
                record.cardholder_id,
                record.unit_id,
                record.category.value,
                record.birth_date.strftime("%Y%m%d"),
                secret.hex().upper(),
            ]
        )
    return build(CARDHOLDERS, [FORMAT_VERSION, file.file_id], rows, amount_total_fen=0)


async def cardholders_from_framed(
    hsm: Hsm, file_key: KeyRef, framed: Framed, progress: Progress | None = None
) -> CardholderFile:
    """Decrypt and check every record; duplicate ids or ID numbers refuse the file."""
    _, file_id = _header(framed, 2)
    _text(file_id, _FILE_ID, "file id", 1)
    check_total(framed, 0)
    records: list[CardholderRecord] = []
    ids: set[str] = set()
    ssns: set[str] = set()
    for line, row in enumerate(framed.records, start=2):
        if len(row) != 5:
            raise MedicalFileError(
                "a cardholder is D|id|unit|category|birth yyyymmdd|encrypted personal data", line
            )
        holder = _text(row[0], _ID, "cardholder id", line)
        unit = _text(row[1], _UNIT, "unit id", line)
        try:
            category = Category(row[2])
        except ValueError:
            raise MedicalFileError(
                f"category is employed or retired, not {row[2]!r}", line
            ) from None
        birth = _date(row[3], "birth date", line)
        clear = await _decrypt(hsm, file_key, row[4], line)
        if clear[:8] != _prefix(file_id, holder):
            raise MedicalFileError("the personal data are not this record's", line)
        try:
            ssn, name = clear[8:].decode("utf-8").split("|")
        except ValueError:
            raise MedicalFileError("the personal data are not ID number|name", line) from None
        _text(ssn, _SSN, "ID number", line)
        if not name.strip() or len(name) > 60 or not name.isprintable():
            raise MedicalFileError("a name is 1–60 printable characters", line)
        if holder in ids or ssn in ssns:
            raise MedicalFileError(f"cardholder {holder} or its ID number appears twice", line)
        ids.add(holder)
        ssns.add(ssn)
        records.append(CardholderRecord(holder, ssn, name, category, birth, unit))
        if progress is not None:
            progress(1)
    return CardholderFile(file_id, tuple(records))


async def _decrypt(hsm: Hsm, file_key: KeyRef, text: str, line: int) -> bytes:
    try:
        secret = bytes.fromhex(text)
        if not secret or len(secret) % 8 or len(secret) > 512:
            raise ValueError
    except ValueError:
        raise MedicalFileError(
            "the personal data are not hex of whole 8-byte blocks", line
        ) from None
    try:
        return await hsm.decrypt_data(file_key, secret)
    except InvalidInputError as error:  # bad padding: a defect of the file
        raise MedicalFileError(f"the personal data do not decrypt: {error}", line) from None

"""`medswitch cards` and `medswitch psams`: issuance from the ledger's cardholders to
personalised cards (issue → approve by a second operator → personalize), and PSAMs bound to
terminals. Keys stay in the HSM (the key home of `medswitch keys`); cards are reached through
PC/SC readers (`--reader`, repeatable: each card is looked for by its serial in every reader).

    medswitch cards issue --out batches/            # maker
    medswitch cards approve batches/cards-….bat     # checker, another operator
    medswitch cards personalize batches/cards-….bat --reader "Virtual PCD 00 00"
    medswitch psams personalize --reader "Virtual PCD 00 01" --terminal 00000001 …

Every step goes to the key home's audit log. Cards are recorded in the ledger's `cards` table
as `issued` when their batch is made and `active` once personalised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from tqdm import tqdm  # type: ignore[import-untyped]

from hsm.errors import HsmError
from hsm.keys import KeyRef, KeyUsage
from hsm.soft import SoftHsm
from ledger import schema
from switch import card_issuance as issuance
from switch import card_personalize as perso
from switch.card_connection import CardConnection, CardConnectionError, PcscConnection, expect
from switch.cli_keys import Home, component_count, component_files, load_hsm, resolve
from switch.cli_ledger import default_db

U = KeyUsage
Connect = Callable[[str], CardConnection]
STATUS_ISSUED = "issued"
STATUS_ACTIVE = "active"


def _now(text: str | None) -> datetime:
    if text:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (HsmError, issuance.BatchError) as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None


class Context:
    def __init__(self, home: Home, files: tuple[Path, ...], count: int, db: Path,
                 connect: Connect) -> None:
        self.home = home
        self.files = files
        self.count = count
        self.db = db
        self.connect = connect
        self._hsm: SoftHsm | None = None

    @property
    def hsm(self) -> SoftHsm:
        if self._hsm is None:
            self._hsm = load_hsm(self.home, self.files, self.count)
        return self._hsm

    def engine(self) -> sa.Engine:
        if not self.db.exists():
            raise click.ClickException(f"{self.db} does not exist (medswitch ledger migrate)")
        return sa.create_engine(f"sqlite:///{self.db}")


def _options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--home", envvar="MEDSWITCH_HOME", default="var/keys", show_default=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Key home: key store, LMK check value, audit log."),
        click.option("--operator", default=None, help="Who performs the step."),
        click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=default_db,
                     help="The ledger database (default $MEDSWITCH_HOME/medswitch.db)."),
        component_files,
        component_count,
    ]):
        function = option(function)
    return function


def _context(ctx: click.Context, home: Path, operator: str | None, db: Path,
             component_files: tuple[Path, ...], count: int) -> Context:
    import getpass

    obj = ctx.ensure_object(dict)
    connect: Connect = obj.get("connect", PcscConnection)
    who = operator or getpass.getuser()
    return Context(Home(home, who), component_files, count, db, connect)


@click.group()
@_options
@click.pass_context
def cards(ctx: click.Context, /, **kwargs: Any) -> None:
    """Card issuance: batch files, approval, personalisation."""
    ctx.obj = _context(ctx, **kwargs)


@click.group()
@_options
@click.pass_context
def psams(ctx: click.Context, /, **kwargs: Any) -> None:
    """PSAMs: personalisation with the purchase key, bound to a terminal."""
    ctx.obj = _context(ctx, **kwargs)


pass_context = click.make_pass_decorator(Context)


@cards.command("issue")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--file-key", default="cards/file", show_default=True, help="FILE key alias.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--bin", "bin_prefix", default="621098", show_default=True)
@click.option("--key-version", default=1, show_default=True, type=int)
@click.option("--now", default=None, help="Issue date-time (ISO); default the clock.")
@pass_context
def issue(c: Context, out: Path, file_key: str, batch_size: int, bin_prefix: str,
          key_version: int, now: str | None) -> None:
    """Cardholders without cards → encrypted batch files; the cards recorded as issued."""
    when = _now(now)
    engine = c.engine()
    with engine.connect() as db:
        have = sa.select(schema.cards.c.cardholder_id)
        holders = db.execute(
            sa.select(schema.cardholders.c.id, schema.cardholders.c.name,
                      schema.cardholders.c.ssn)
            .where(schema.cardholders.c.status == "active")
            .where(schema.cardholders.c.id.not_in(have))
        ).all()
        serials = db.execute(
            sa.select(schema.cards.c.application_serial)
            .where(schema.cards.c.application_serial.like(f"{issuance.CITY_CODE}%"))
        ).scalars().all()
    first = 1 + max((int(s[len(issuance.CITY_CODE):]) for s in serials), default=0)
    records = issuance.plan([tuple(h) for h in holders], first_sequence=first,
                            bin_prefix=bin_prefix, issued=when.date())
    if not records:
        click.echo("every active cardholder has a card")
        return
    out.mkdir(parents=True, exist_ok=True)

    async def write() -> list[tuple[Path, issuance.Batch, bytes]]:
        key = await resolve(c.home, file_key)
        written = []
        for index, group in enumerate(issuance.batches(records, batch_size), start=1):
            batch = issuance.Batch(f"{when:%Y%m%d%H%M%S}-{index:04d}", when, c.home.operator,
                                   key_version, tuple(group))
            data = await issuance.seal(c.hsm, key, batch)
            written.append((out / f"cards-{batch.batch_id}.bat", batch, data))
        return written

    for path, batch, data in _run(write()):
        path.write_bytes(data)
        c.home.audit("cards.issue", batch=batch.batch_id, records=len(batch.records),
                     sha256=hashlib.sha256(data).hexdigest(), file=str(path))
        click.echo(f"{path}: {len(batch.records)} cards")
    with engine.begin() as db:
        db.execute(sa.insert(schema.cards), [
            {"card_no": r.card_no, "application_serial": r.application_serial,
             "cardholder_id": r.cardholder_id, "key_version": key_version,
             "status": STATUS_ISSUED, "expiry": r.expiry} for r in records
        ])


def _approval_path(batch_file: Path) -> Path:
    return batch_file.with_name(batch_file.name + ".approval")


@cards.command("approve")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file-key", default="cards/file", show_default=True)
@pass_context
def approve(c: Context, batch_file: Path, file_key: str) -> None:
    """The checker: verifies the batch whole and approves it; never its own maker."""
    data = batch_file.read_bytes()

    async def check() -> issuance.Batch:
        batch: issuance.Batch = await issuance.open_batch(
            c.hsm, await resolve(c.home, file_key), data
        )
        return batch

    batch = _run(check())
    if batch.maker == c.home.operator:
        raise click.ClickException(f"{c.home.operator} made batch {batch.batch_id}: "
                                   "a second operator approves it")
    digest = hashlib.sha256(data).hexdigest()
    record = {"batch": batch.batch_id, "sha256": digest, "maker": batch.maker,
              "approver": c.home.operator}
    _approval_path(batch_file).write_text(json.dumps(record, sort_keys=True) + "\n")
    c.home.audit("cards.approve", batch=batch.batch_id, sha256=digest, maker=batch.maker,
                 records=len(batch.records))
    click.echo(f"batch {batch.batch_id} approved: {len(batch.records)} cards")


def _check_approval(batch_file: Path, data: bytes, batch: issuance.Batch) -> None:
    path = _approval_path(batch_file)
    if not path.exists():
        raise click.ClickException(f"batch {batch.batch_id} is not approved")
    approval = json.loads(path.read_text())
    if approval.get("sha256") != hashlib.sha256(data).hexdigest():
        raise click.ClickException(f"batch {batch.batch_id} changed after its approval")
    if approval.get("approver") in (None, batch.maker) or approval.get("batch") != batch.batch_id:
        raise click.ClickException(f"batch {batch.batch_id}: the approval is not valid")


def _progress(batch_file: Path) -> dict[str, str]:
    path = batch_file.with_name(batch_file.name + ".progress")
    done: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            done[entry["serial"]] = entry["status"]
    return done


def _mark(batch_file: Path, serial: str, status: str) -> None:
    path = batch_file.with_name(batch_file.name + ".progress")
    with path.open("a") as out:
        out.write(json.dumps({"serial": serial, "status": status}) + "\n")


def _find_card(c: Context, readers: tuple[str, ...], serial: bytes) -> CardConnection | None:
    """The reader whose card has this serial (EF 0015 bytes 11-20), connected; else None."""
    for reader in readers:
        conn = c.connect(reader)
        try:
            conn.connect()
            expect(conn, perso.SELECT_APP, "SELECT")
            public = expect(conn, bytes.fromhex("00B0950000"), "READ 0015")
        except CardConnectionError:
            conn.disconnect()
            continue
        if public[10:20] == serial:
            return conn
        conn.disconnect()
    return None


def card_files(record: issuance.IssuanceRecord, issued: date) -> tuple[bytes, bytes]:
    """EF 0015 (30 bytes) and EF 0016 (39 bytes) of a record. The name is GBK in 20 bytes;
    the 18-character ID number is packed as BCD (X as A) in the 16 ID bytes, F-padded."""
    public = (
        bytes.fromhex(issuance.CITY_CODE + "000000000000") + b"\x03\x01" + record.serial_bytes
        + bytes.fromhex(f"{issued:%Y%m%d}{record.expiry:%Y%m%d}") + b"\x00\x00"
    )
    name = record.name.encode("gbk", errors="replace")[:20].ljust(20, b"\x00")
    id_no = bytes.fromhex(record.id_no.upper().replace("X", "A").ljust(32, "F")[:32])
    holder = b"\x00\x00" + name + id_no + b"\x00"
    return public, holder


@cards.command("personalize")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reader", "readers", multiple=True, required=True,
              help="PC/SC reader (name or a unique part of it); repeat for several.")
@click.option("--file-key", default="cards/file", show_default=True)
@pass_context
def personalize(c: Context, batch_file: Path, readers: tuple[str, ...], file_key: str) -> None:
    """Write each approved card: keys by secure messaging, files, data check code. Finished
    cards are skipped on a re-run; a failed card is reported and the batch goes on."""
    data = batch_file.read_bytes()

    async def run() -> tuple[int, int]:
        key = await resolve(c.home, file_key)
        batch = await issuance.open_batch(c.hsm, key, data)
        _check_approval(batch_file, data, batch)
        keys = await _master_keys(c, batch.key_version)
        factory = await resolve(c.home, FACTORY_CONTROL_ALIAS)
        done = _progress(batch_file)
        ok = failed = 0
        with tqdm(total=len(batch.records), unit="card", disable=None) as bar:
            for record in batch.records:
                bar.update()
                if done.get(record.application_serial) == "done":
                    continue
                error = await _personalize_one(c, readers, keys, factory, record,
                                               batch.created.date())
                if error is None:
                    ok += 1
                    _mark(batch_file, record.application_serial, "done")
                    _set_status(c, record.card_no, STATUS_ACTIVE)
                else:
                    failed += 1
                    _mark(batch_file, record.application_serial, "failed")
                    click.echo(f"card {record.application_serial}: {error}", err=True)
        for suffix, make in ((".print", issuance.print_file), (".track", issuance.track_file)):
            out = batch_file.with_name(batch_file.name + suffix)
            out.write_bytes(await make(c.hsm, key, batch))
        c.home.audit("cards.personalize", batch=batch.batch_id, done=ok, failed=failed)
        return ok, failed

    ok, failed = _run(run())
    click.echo(f"{batch_file.name}: {ok} personalised, {failed} failed")
    if failed:
        raise SystemExit(1)


FACTORY_CONTROL_ALIAS = "factory/MK_CONTROL"
FACTORY_TRANSPORT_ALIAS = "factory/PSAM_TRANSPORT"


async def _master_keys(c: Context, version: int) -> perso.CardMasterKeys:
    async def ref(alias: str, usage: KeyUsage) -> KeyRef:
        found = await resolve(c.home, f"{alias}:{version}" if alias.startswith("card/") else alias)
        found.require(usage)
        return found

    card = {u: await ref(f"card/{u.value}", u) for u in (
        U.MK_CONTROL, U.MK_LOAD, U.MK_PURCHASE, U.MK_TAC, U.MK_UNLOAD, U.MK_PIN_RELOAD,
        U.MK_PIN_UNBLOCK, U.MK_APP_MAINT)}
    return perso.CardMasterKeys(
        control=card[U.MK_CONTROL], load=card[U.MK_LOAD], purchase=card[U.MK_PURCHASE],
        tac=card[U.MK_TAC], unload=card[U.MK_UNLOAD], pin_reload=card[U.MK_PIN_RELOAD],
        pin_unblock=card[U.MK_PIN_UNBLOCK], app_maint=card[U.MK_APP_MAINT],
        data_check=await ref("centre/DATA_CHECK", U.DATA_CHECK), version=version,
    )


async def _personalize_one(c: Context, readers: tuple[str, ...], keys: perso.CardMasterKeys,
                           factory: KeyRef, record: issuance.IssuanceRecord,
                           issued: date) -> str | None:
    conn = _find_card(c, readers, record.serial_bytes)
    if conn is None:
        return "not in any reader"
    public, holder = card_files(record, issued)
    try:
        await perso.personalize_card(conn, c.hsm, keys, record.serial_bytes, public, holder,
                                     bytes(perso.AUTHORISATION_DATA_BYTES), None, factory)
    except (CardConnectionError, HsmError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        conn.disconnect()
    return None


def _set_status(c: Context, card_no: str, status: str) -> None:
    with c.engine().begin() as db:
        db.execute(sa.update(schema.cards).where(schema.cards.c.card_no == card_no)
                   .values(status=status))


@cards.command("factory-keys")
@pass_context
def factory_keys(c: Context) -> None:
    """Form the chip makers' TEST ONLY transport keys in the HSM (demo deployments)."""
    click.echo("*** TEST ONLY factory transport keys: never for production ***", err=True)

    async def form() -> list[KeyRef]:
        from hsm.lmk import Component

        made = []
        for alias, usage, value in (
            (FACTORY_CONTROL_ALIAS, U.MK_CONTROL, perso.FACTORY_TEST_ONLY_CONTROL),
            (FACTORY_TRANSPORT_ALIAS, U.PSAM_TRANSPORT, perso.FACTORY_TEST_ONLY_PSAM_TRANSPORT),
        ):
            if await c.home.store.list(alias):
                continue
            form_key = c.hsm.form_key  # SoftHsm: the ceremony's own operation
            made.append(await form_key(alias, usage, [Component(bytes.fromhex(value))],
                                       now=_now(None)))
        return made

    for ref in _run(form()):
        c.home.audit("key.form", alias=ref.alias, usage=ref.usage.value, version=ref.version,
                     kcv=ref.kcv, test_only=True)
        click.echo(f"{ref.alias} v{ref.version} {ref.usage.value} KCV {ref.kcv}")


@psams.command("personalize")
@click.option("--reader", required=True, help="PC/SC reader holding the blank PSAM.")
@click.option("--serial", required=True, help="The PSAM's serial (hex, 8 or 10 bytes).")
@click.option("--terminal-no", required=True, help="PSAM terminal number, 12 digits.")
@click.option("--institution", required=True, help="The institution owning the PSAM.")
@click.option("--terminal", default=None, help="Bind to this terminal (F41).")
@click.option("--key-version", default=1, show_default=True, type=int)
@pass_context
def psam_personalize(c: Context, reader: str, serial: str, terminal_no: str, institution: str,
                     terminal: str | None, key_version: int) -> None:
    """Terminal number, then the purchase master key under the PSAM's transport key; the
    PSAM recorded in the ledger, bound to its terminal."""
    if len(terminal_no) != 12 or not terminal_no.isdigit():
        raise click.ClickException("the PSAM terminal number is 12 digits")
    serial_bytes = bytes.fromhex(serial).rjust(10, b"\0")

    async def run() -> None:
        transport = await resolve(c.home, FACTORY_TRANSPORT_ALIAS)
        purchase = await resolve(c.home, f"card/{U.MK_PURCHASE.value}:{key_version}")
        conn = c.connect(reader)
        try:
            conn.connect()
            await perso.personalize_psam(conn, c.hsm, transport, purchase, serial_bytes,
                                         bytes.fromhex(terminal_no), key_version)
        except CardConnectionError as error:
            raise click.ClickException(f"PSAM {serial}: {error}") from None
        finally:
            conn.disconnect()

    _run(run())
    with c.engine().begin() as db:
        db.execute(sa.insert(schema.psams).values(
            serial=serial_bytes.hex().upper(), psam_terminal_no=terminal_no,
            institution_id=institution, terminal_id=terminal, key_version=key_version))
    c.home.audit("psams.personalize", serial=serial_bytes.hex().upper(),
                 terminal_no=terminal_no, institution=institution, terminal=terminal)
    click.echo(f"PSAM {serial_bytes.hex().upper()}: terminal number {terminal_no}"
               + (f", bound to terminal {terminal}" if terminal else ""))

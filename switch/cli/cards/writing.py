"""`medswitch cards personalize|factory-keys`: writing approved batches into cards."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click
import sqlalchemy as sa
from tqdm import tqdm  # type: ignore[import-untyped]

from hsm.errors import HsmError
from hsm.keys import KeyRef, KeyUsage
from ledger import schema
from ledger.personal import PersonalDataError
from switch.card_io import issuance
from switch.card_io import personalize as perso
from switch.card_io.connection import CardConnection, CardConnectionError, expect
from switch.card_io.record_book import BookCopy, NoRecordKeyError, write_book
from switch.cli.cards.book import Personal, book_of, mark_written
from switch.cli.cards.context import (
    FACTORY_CONTROL_ALIAS,
    FACTORY_TRANSPORT_ALIAS,
    STATUS_ACTIVE,
    Context,
    now_or,
    pass_context,
    run_hsm,
    set_card_status,
)
from switch.cli.cards.issuing import check_approval, mark, progress, signing_key
from switch.cli.common import resolve
from switch.key_home import KeyNotFound

U = KeyUsage


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


@click.command("personalize")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reader", "readers", multiple=True, required=True,
              help="PC/SC reader (name or a unique part of it); repeat for several.")
@click.option("--file-key", default="cards/file", show_default=True)
@pass_context
def personalize(c: Context, batch_file: Path, readers: tuple[str, ...], file_key: str) -> None:
    """Write each approved card: keys by secure messaging, files, data check code, and its
    record book — the batch's health data and, for a replacement, the person's newest visits
    the centre kept. Finished cards are skipped on a re-run; a failed card is reported and the
    batch goes on."""
    c.authenticate("maker")
    data = batch_file.read_bytes()

    async def run() -> tuple[int, int]:
        key = await resolve(c.home, file_key)
        batch = await issuance.open_batch(c.hsm, key, data)
        check_approval(batch_file, data, batch)
        keys = await _master_keys(c, batch.key_version)
        factory = await resolve(c.home, FACTORY_CONTROL_ALIAS)
        done = progress(batch_file)
        engine, personal = c.engine(), Personal(c.hsm, c.home)
        ok = failed = 0
        with tqdm(total=len(batch.records), unit="card", disable=None) as bar:
            for record in batch.records:
                bar.update()
                if done.get(record.application_serial) == "done":
                    continue
                error = await _personalize_one(c, readers, keys, factory, record,
                                               batch.created.date(), engine, personal)
                if error is None:
                    ok += 1
                    mark(batch_file, record.application_serial, "done")
                    set_card_status(c, record.card_no, STATUS_ACTIVE)
                    await mark_written(engine, personal, record)
                else:
                    failed += 1
                    mark(batch_file, record.application_serial, "failed")
                    click.echo(f"card {record.application_serial}: {error}", err=True)
        for suffix, make in ((".print", issuance.print_file), (".track", issuance.track_file)):
            out = batch_file.with_name(batch_file.name + suffix)
            out.write_bytes(await make(c.hsm, key, batch))
        c.home.audit("cards.personalize", batch=batch.batch_id, done=ok, failed=failed)
        return ok, failed

    ok, failed = run_hsm(run())
    click.echo(f"{batch_file.name}: {ok} personalised, {failed} failed")
    if failed:
        raise SystemExit(1)




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
        record=await _record_key(c, version), signing=await signing_key(c),
    )


async def _record_key(c: Context, version: int) -> KeyRef | None:
    """card/MK_RECORD of the version, when the centre has one: the card gets its DRK (and can
    hold the record book); None — a deployment without it — leaves the book unwritable."""
    found = [r.ref for r in await c.home.store.list("card/MK_RECORD") if r.version == version]
    if not found:
        return None
    found[-1].require(U.MK_RECORD)
    return found[-1]


async def _personalize_one(c: Context, readers: tuple[str, ...], keys: perso.CardMasterKeys,
                           factory: KeyRef, record: issuance.IssuanceRecord, issued: date,
                           engine: sa.Engine, personal: Personal) -> str | None:
    try:
        book = await _book(keys, engine, personal, record)
    except (KeyNotFound, PersonalDataError, HsmError, NoRecordKeyError) as error:
        return f"{type(error).__name__}: {error}"
    conn = _find_card(c, readers, record.serial_bytes)
    if conn is None:
        return "not in any reader"
    public, holder = issuance.card_files(record, issued)
    try:
        await perso.personalize_card(conn, c.hsm, keys, record.serial_bytes, public, holder,
                                     bytes(perso.AUTHORISATION_DATA_BYTES), None, factory)
        await write_book(conn, c.hsm, keys, record.serial_bytes, book)
    except (CardConnectionError, HsmError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        conn.disconnect()
    return None


async def _book(keys: perso.CardMasterKeys, engine: sa.Engine, personal: Personal,
                record: issuance.IssuanceRecord) -> BookCopy:
    """The card's record book, checked before the card is touched: NoRecordKeyError when
    there is one to write and no card/MK_RECORD of the card's version."""
    book = await book_of(engine, personal, record)
    if keys.record is None and (book.health is not None or book.visits):
        raise NoRecordKeyError(f"no card/MK_RECORD v{keys.version}: its record book cannot be "
                               "written")
    return book




@click.command("factory-keys")
@pass_context
def factory_keys(c: Context) -> None:
    """Form the chip makers' TEST ONLY transport keys in the HSM (demo deployments)."""
    c.authenticate("key_custodian")
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
                                       now=now_or(None)))
        return made

    for ref in run_hsm(form()):
        c.home.audit("key.form", alias=ref.alias, usage=ref.usage.value, version=ref.version,
                     kcv=ref.kcv, test_only=True)
        click.echo(f"{ref.alias} v{ref.version} {ref.usage.value} KCV {ref.kcv}")



@click.command("write-authorisation")
@click.option("--reader", required=True, help="PC/SC reader holding the cardholder's card.")
@click.option("--grant", "grants", multiple=True,
              help="CATEGORY:YEAR of a special-expense authorisation; repeat. None clears.")
@pass_context
def write_authorisation(c: Context, reader: str, grants: tuple[str, ...]) -> None:
    """Write the person's special-expense authorisations to the card's authorisation file,
    with a fresh card data check code from the HSM."""
    c.authenticate("maker")
    entries = []
    for grant in grants:
        category, _, year = grant.partition(":")
        if not year.isdigit():
            raise click.ClickException(f"--grant {grant}: CATEGORY:YEAR")
        entries.append((category, int(year)))
    try:
        data = perso.encode_authorisations(entries)
    except ValueError as error:
        raise click.ClickException(str(error)) from None

    async def run() -> bytes:
        conn = c.connect(reader)
        try:
            conn.connect()
            expect(conn, perso.SELECT_APP, "SELECT")
            serial = expect(conn, bytes.fromhex("00B0950000"), "READ 0015")[10:20]
            keys = await _master_keys(c, _key_version(c, serial))
            await perso.write_authorisation(conn, c.hsm, keys, serial, data)
        except CardConnectionError as error:
            raise click.ClickException(str(error)) from None
        finally:
            conn.disconnect()
        return serial

    serial = run_hsm(run())
    c.home.audit("cards.authorisation", serial=serial.hex().upper(), grants=list(grants))
    click.echo(f"card {serial.hex().upper()}: {len(entries)} authorisation(s) written")


def _key_version(c: Context, serial: bytes) -> int:
    """The card's key version from the ledger's cards table (1 when the card is unknown)."""
    if not c.db.exists():
        return 1
    with c.engine().connect() as db:
        found = db.execute(
            sa.select(schema.cards.c.key_version)
            .where(schema.cards.c.application_serial == serial[-8:].hex().upper())
        ).scalar()
    return int(found) if found is not None else 1

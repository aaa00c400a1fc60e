"""`medswitch psams issue|approve|personalize`: a PSAM for every POS without one, in an
encrypted batch approved by a second operator; each PSAM then gets its terminal number and the
purchase master key (under its transport key) and is recorded in the ledger, bound to its
terminal. `personalize` without a batch does one PSAM from its options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
import sqlalchemy as sa

from hsm.keys import KeyUsage
from ledger import schema
from switch.card_io import issuance
from switch.card_io import personalize as perso
from switch.card_io.connection import CardConnection, CardConnectionError, expect
from switch.cli.cards.context import (
    FACTORY_TRANSPORT_ALIAS,
    STATUS_ACTIVE,
    STATUS_ISSUED,
    Context,
    now_or,
    pass_context,
    run_hsm,
)
from switch.cli.cards.issuing import approval_path, mark, progress
from switch.cli.common import resolve

U = KeyUsage
PSAM_FILE_KEY = "cards/file"


@click.command("issue")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--file-key", default=PSAM_FILE_KEY, show_default=True)
@click.option("--key-version", default=1, show_default=True, type=int)
@click.option("--now", default=None, help="Issue date-time (ISO); default the clock.")
@pass_context
def issue(c: Context, out: Path, file_key: str, key_version: int, now: str | None) -> None:
    """POS terminals without a PSAM → one encrypted PSAM batch; the PSAMs recorded as issued."""
    c.authenticate("maker")
    when = now_or(now)
    engine = c.engine()
    t, p = schema.terminals, schema.psams
    with engine.connect() as db:
        bound = sa.select(p.c.terminal_id).where(p.c.terminal_id.is_not(None))
        terminals = db.execute(
            sa.select(t.c.id, t.c.institution_id).where(t.c.kind == "pos")
            .where(t.c.status == "active").where(t.c.id.not_in(bound))
        ).all()
        serials = db.execute(
            sa.select(p.c.serial).where(p.c.serial.like(f"{issuance.PSAM_SERIAL_PREFIX}%"))
        ).scalars().all()
    first = 1 + max((int(s[len(issuance.PSAM_SERIAL_PREFIX):]) for s in serials), default=0)
    records = issuance.plan_psams([(r[0], r[1]) for r in terminals], first)
    if not records:
        click.echo("every POS terminal has a PSAM")
        return
    batch_id = f"{when:%Y%m%d%H%M%S}"

    async def seal() -> bytes:
        key = await resolve(c.home, file_key)
        data: bytes = await issuance.seal_psams(
            c.hsm, key, batch_id, when, c.home.operator, key_version, records
        )
        return data

    data = run_hsm(seal())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"psams-{batch_id}.bat"
    path.write_bytes(data)
    with engine.begin() as db:
        db.execute(sa.insert(p), [
            {"serial": r.serial, "psam_terminal_no": r.terminal_no,
             "institution_id": r.institution_id, "terminal_id": r.terminal_id,
             "key_version": key_version, "status": STATUS_ISSUED} for r in records
        ])
    c.home.audit("psams.issue", batch=batch_id, records=len(records),
                 sha256=hashlib.sha256(data).hexdigest(), file=str(path))
    click.echo(f"{path}: {len(records)} PSAMs")


@click.command("approve")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file-key", default=PSAM_FILE_KEY, show_default=True)
@pass_context
def approve(c: Context, batch_file: Path, file_key: str) -> None:
    """The checker: verifies the PSAM batch whole and approves it; never its own maker."""
    c.authenticate("checker")
    data = batch_file.read_bytes()
    batch_id, maker, _, records = _open(c, data, file_key)
    if maker == c.home.operator:
        raise click.ClickException(f"{maker} made batch {batch_id}: a second operator approves it")
    digest = hashlib.sha256(data).hexdigest()
    approval = {"batch": batch_id, "sha256": digest, "maker": maker, "approver": c.home.operator}
    approval_path(batch_file).write_text(json.dumps(approval, sort_keys=True) + "\n")
    c.home.audit("psams.approve", batch=batch_id, sha256=digest, maker=maker,
                 records=len(records))
    click.echo(f"PSAM batch {batch_id} approved: {len(records)} PSAMs")


Opened = tuple[str, str, int, list[issuance.PsamRecord]]


def _open(c: Context, data: bytes, file_key: str) -> Opened:
    async def run() -> Opened:
        return await issuance.open_psams(c.hsm, await resolve(c.home, file_key), data)

    opened: Opened = run_hsm(run())
    return opened


@click.command("personalize")
@click.argument("batch_file", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reader", "readers", multiple=True, required=True,
              help="PC/SC reader(s) holding the blank PSAMs.")
@click.option("--file-key", default=PSAM_FILE_KEY, show_default=True)
@click.option("--serial", help="Without a batch: the PSAM's serial (hex, 8 or 10 bytes).")
@click.option("--terminal-no", help="Without a batch: its terminal number, 12 digits.")
@click.option("--institution", help="Without a batch: the institution owning it.")
@click.option("--terminal", default=None, help="Without a batch: the terminal (F41) it serves.")
@click.option("--key-version", default=1, show_default=True, type=int)
@pass_context
def personalize(c: Context, batch_file: Path | None, readers: tuple[str, ...], file_key: str,
                serial: str | None, terminal_no: str | None, institution: str | None,
                terminal: str | None, key_version: int) -> None:
    """Terminal number, then the purchase master key under the PSAM's transport key; each
    PSAM recorded in the ledger as active, bound to its terminal."""
    c.authenticate("maker")
    if batch_file is None:
        if not (serial and terminal_no and institution):
            raise click.ClickException("without a batch: --serial, --terminal-no, --institution")
        if len(terminal_no) != 12 or not terminal_no.isdigit():
            raise click.ClickException("the PSAM terminal number is 12 digits")
        one = issuance.PsamRecord(0, bytes.fromhex(serial).hex().upper(), terminal_no,
                                  institution, terminal or "")
        error = run_hsm(_write(c, readers, one, key_version))
        if error is not None:
            raise click.ClickException(f"PSAM {one.serial}: {error}")
        _record(c, one, key_version, insert=True)
        return
    data = batch_file.read_bytes()
    batch_id, maker, version, records = _open(c, data, file_key)
    _check_approval(batch_file, data, batch_id, maker)
    done = progress(batch_file)
    ok = failed = 0
    for record in records:
        if done.get(record.serial) == "done":
            continue
        error = run_hsm(_write(c, readers, record, version))
        if error is None:
            ok += 1
            mark(batch_file, record.serial, "done")
            _record(c, record, version, insert=False)
        else:
            failed += 1
            mark(batch_file, record.serial, "failed")
            click.echo(f"PSAM {record.serial}: {error}", err=True)
    c.home.audit("psams.personalize", batch=batch_id, done=ok, failed=failed)
    click.echo(f"{batch_file.name}: {ok} personalised, {failed} failed")
    if failed:
        raise SystemExit(1)


def _check_approval(batch_file: Path, data: bytes, batch_id: str, maker: str) -> None:
    path = approval_path(batch_file)
    if not path.exists():
        raise click.ClickException(f"PSAM batch {batch_id} is not approved")
    approval = json.loads(path.read_text())
    if approval.get("sha256") != hashlib.sha256(data).hexdigest():
        raise click.ClickException(f"PSAM batch {batch_id} changed after its approval")
    if approval.get("approver") in (None, maker) or approval.get("batch") != batch_id:
        raise click.ClickException(f"PSAM batch {batch_id}: the approval is not valid")


def _find_psam(c: Context, readers: tuple[str, ...], serial: bytes) -> CardConnection | None:
    for reader in readers:
        conn = c.connect(reader)
        try:
            conn.connect()
            public = expect(conn, bytes.fromhex("00B0950000"), "READ 0015")
        except CardConnectionError:
            conn.disconnect()
            continue
        if public[:10] == serial:
            return conn
        conn.disconnect()
    return None


async def _write(
    c: Context, readers: tuple[str, ...], record: issuance.PsamRecord, key_version: int
) -> str | None:
    transport = await resolve(c.home, FACTORY_TRANSPORT_ALIAS)
    purchase = await resolve(c.home, f"card/{U.MK_PURCHASE.value}:{key_version}")
    conn = _find_psam(c, readers, record.serial_bytes)
    if conn is None:
        return "not in any reader"
    try:
        await perso.personalize_psam(conn, c.hsm, transport, purchase, record.serial_bytes,
                                     bytes.fromhex(record.terminal_no), key_version)
    except CardConnectionError as error:
        return f"{type(error).__name__}: {error}"
    finally:
        conn.disconnect()
    return None


def _record(c: Context, r: issuance.PsamRecord, key_version: int, *, insert: bool) -> None:
    p = schema.psams
    with c.engine().begin() as db:
        if insert:
            db.execute(sa.insert(p).values(
                serial=r.serial, psam_terminal_no=r.terminal_no, institution_id=r.institution_id,
                terminal_id=r.terminal_id or None, key_version=key_version, status=STATUS_ACTIVE))
        else:
            db.execute(sa.update(p).where(p.c.serial == r.serial).values(status=STATUS_ACTIVE))
    c.home.audit("psams.personalize", serial=r.serial, terminal_no=r.terminal_no,
                 institution=r.institution_id, terminal=r.terminal_id)
    click.echo(f"PSAM {r.serial}: terminal number {r.terminal_no}"
               + (f", bound to terminal {r.terminal_id}" if r.terminal_id else ""))

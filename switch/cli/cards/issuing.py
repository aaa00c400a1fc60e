"""`medswitch cards issue|approve|replace`: batch files from the ledger's cardholders, checked and
approved by a second operator."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace as with_
from datetime import datetime
from pathlib import Path

import click
import sqlalchemy as sa

from hsm.keys import KeyRef, KeyUsage
from ledger import schema
from ledger.personal import Person, PersonalDataError, people, seal_clear_cardholders
from switch.card_io import issuance
from switch.card_io.signatures import SIGNING_ALIAS, sign_record
from switch.cli.cards import book
from switch.cli.cards.context import (
    STATUS_ACTIVE,
    STATUS_ISSUED,
    Context,
    now_or,
    pass_context,
    run_hsm,
)
from switch.cli.common import resolve
from switch.estate.common import now_us
from switch.key_home import KeyNotFound, personal_keys

U = KeyUsage
CARD_MASTERS = (U.MK_CONTROL, U.MK_LOAD, U.MK_PURCHASE, U.MK_TAC, U.MK_UNLOAD, U.MK_PIN_RELOAD,
                U.MK_PIN_UNBLOCK, U.MK_APP_MAINT)


@click.command("issue")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--file-key", default="cards/file", show_default=True, help="FILE key alias.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--bin", "bin_prefix", default="621098", show_default=True)
@click.option("--key-version", default=None, type=click.IntRange(1, 255),
              help="Card master key version of the new cards [default: the newest].")
@click.option("--now", default=None, help="Issue date-time (ISO); default the clock.")
@click.option("--renew-before", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Also renew cards expiring before this date.")
@click.option("--health", "health_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Initial health data: JSON lines, one cardholder each (specs/key-ceremony.md).")
@pass_context
def issue(c: Context, out: Path, file_key: str, batch_size: int, bin_prefix: str,
          key_version: int | None, now: str | None, renew_before: datetime | None,
          health_path: Path | None) -> None:
    """Cardholders without a live card (none, or only replaced/cancelled ones, or one expiring
    before --renew-before) → encrypted batch files; the new cards recorded as issued and
    the cards they replace pointed at them. New cards get the newest card master key version
    (cards of earlier versions keep theirs and keep working). Each card carries the person's
    health data: from --health, kept sealed as the centre's copy, else the centre's copy."""
    c.authenticate("maker")
    when = now_or(now)
    if key_version is None:
        key_version = run_hsm(newest_card_version(c))
    engine = c.engine()
    cards_t = schema.cards
    with engine.connect() as db:
        have = sa.select(cards_t.c.cardholder_id).where(
            cards_t.c.status.in_([STATUS_ISSUED, STATUS_ACTIVE])
        )
        if renew_before is not None:
            have = have.where(cards_t.c.expiry >= renew_before.date())
        holder_ids = db.execute(
            sa.select(schema.cardholders.c.id)
            .where(schema.cardholders.c.status == "active")
            .where(schema.cardholders.c.id.not_in(have))
        ).scalars().all()
        serials = db.execute(
            sa.select(schema.cards.c.application_serial)
            .where(schema.cards.c.application_serial.like(f"{issuance.CITY_CODE}%"))
        ).scalars().all()
    first = 1 + max((int(s[len(issuance.CITY_CODE):]) for s in serials), default=0)
    given = book.health_file(health_path, holder_ids, f"{when:%Y%m%d%H%M%S}")
    personal = book.Personal(c.hsm, c.home)

    async def clear_people() -> dict[str, Person]:  # names and ID numbers: sealed at rest
        keys = await personal_keys(c.hsm, c.home.store)
        await seal_clear_cardholders(engine, keys)  # rows written before they were sealed
        return await people(engine, keys, holder_ids)

    try:
        found = run_hsm(clear_people()) if holder_ids else {}
    except (KeyNotFound, PersonalDataError) as error:
        raise click.ClickException(str(error)) from None
    holders = [(i, found[i].name, found[i].ssn) for i in holder_ids]
    records = issuance.plan(holders, first_sequence=first,
                            bin_prefix=bin_prefix, issued=when.date())
    if not records:
        click.echo("every active cardholder has a card")
        return
    try:
        health = run_hsm(book.health_to_issue(engine, personal, holder_ids, given))
    except (KeyNotFound, PersonalDataError) as error:
        raise click.ClickException(str(error)) from None
    records = [with_(r, health=health.get(r.cardholder_id)) for r in records]
    out.mkdir(parents=True, exist_ok=True)

    signing = run_hsm(signing_key(c))  # the bureau writes its signatures, never holding it

    async def write() -> list[tuple[Path, issuance.Batch, bytes]]:
        key = await resolve(c.home, file_key)
        signed = records if signing is None else [
            await sign_record(c.hsm, signing, r, when.date()) for r in records
        ]
        written = []
        for index, group in enumerate(issuance.batches(signed, batch_size), start=1):
            batch = issuance.Batch(f"{when:%Y%m%d%H%M%S}-{index:04d}", when, c.home.operator,
                                   key_version, tuple(group))
            data = await issuance.seal(c.hsm, key, batch)
            written.append((out / f"cards-{batch.batch_id}.bat", batch, data))
        return written

    for path, batch, data in run_hsm(write()):
        path.write_bytes(data)
        c.home.audit("cards.issue", batch=batch.batch_id, records=len(batch.records),
                     sha256=hashlib.sha256(data).hexdigest(), file=str(path),
                     signed_by=None if signing is None else f"{signing.alias} v{signing.version}")
        click.echo(f"{path}: {len(batch.records)} cards")
    with engine.begin() as db:
        for r in records:  # the cards these replace or renew now point at their successor
            db.execute(sa.update(cards_t)
                       .where(cards_t.c.cardholder_id == r.cardholder_id)
                       .where(cards_t.c.replaced_by.is_(None))
                       .values(replaced_by=r.card_no))
        db.execute(sa.insert(cards_t), [
            {"card_no": r.card_no, "application_serial": r.application_serial,
             "cardholder_id": r.cardholder_id, "key_version": key_version,
             "status": STATUS_ISSUED, "expiry": r.expiry} for r in records
        ])
    run_hsm(book.keep_given(engine, personal, given, now_us()))
    if given:
        c.home.audit("cards.health", cardholders=len(given), file=str(health_path))


async def signing_key(c: Context) -> KeyRef | None:
    """The newest centre/CARD_SIGN, when the centre has one: it signs the holder data (and the
    health data) of the cards (specs/card-layout.md, "Signatures") — at issuance, into the
    batch, and at the centre's personalisation; None leaves them unsigned, which a POS shows
    as "NOT signed by the centre"."""
    found = sorted(await c.home.store.list(SIGNING_ALIAS), key=lambda r: r.version)
    if not found:
        return None
    found[-1].ref.require(U.CARD_SIGN)
    return found[-1].ref


async def newest_card_version(c: Context) -> int:
    """The newest version every card master key has (a generation half made is not used)."""
    versions = []
    for usage in CARD_MASTERS:
        records = await c.home.store.list(f"card/{usage.value}")
        if not records:
            raise click.ClickException(f"no card/{usage.value}: generate the card master keys")
        versions.append(max(r.version for r in records))
    return min(versions)


@click.command("activate")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--personalised-by", "bureau", required=True,
              help="The personalisation bureau that wrote the batch's cards.")
@click.option("--file-key", default="cards/file", show_default=True)
@pass_context
def activate(c: Context, batch_file: Path, bureau: str, file_key: str) -> None:
    """Cards of an approved batch personalised by a bureau (from the keys exported to it):
    recorded active, so the switch serves them, as `cards personalize` does for the centre's."""
    c.authenticate("maker")
    data = batch_file.read_bytes()
    batch = opened_batch(c, data, file_key)
    check_approval(batch_file, data, batch)
    numbers = [r.card_no for r in batch.records]
    engine = c.engine()
    with engine.begin() as db:
        done = db.execute(sa.update(schema.cards)
                          .where(schema.cards.c.card_no.in_(numbers))
                          .where(schema.cards.c.status == STATUS_ISSUED)
                          .values(status=STATUS_ACTIVE)).rowcount

    async def written() -> None:  # the health data the bureau wrote: no longer pending
        personal = book.Personal(c.hsm, c.home)
        for record in batch.records:
            await book.mark_written(engine, personal, record)

    run_hsm(written())
    c.home.audit("cards.activate", batch=batch.batch_id, bureau=bureau, activated=done,
                 records=len(numbers), key_version=batch.key_version)
    click.echo(f"batch {batch.batch_id}: {done} cards active (personalised by {bureau})")


@click.command("replace")
@click.argument("card_no")
@click.option("--reason", type=click.Choice(["lost", "damaged", "stolen"]), required=True)
@pass_context
def replace(c: Context, card_no: str, reason: str) -> None:
    """Blacklist a card for replacement: it is refused from now on, and the next `cards issue`
    makes its cardholder a new card. Its balances move per DESIGN §5 after the grace period."""
    c.authenticate("maker")
    with c.engine().begin() as db:
        done = db.execute(sa.update(schema.cards)
                          .where(schema.cards.c.card_no == card_no)
                          .where(schema.cards.c.status.in_([STATUS_ISSUED, STATUS_ACTIVE, "lost"]))
                          .values(status="replaced"))
    if done.rowcount != 1:
        raise click.ClickException(f"no live card {card_no}")
    c.home.audit("cards.replace", card=card_no[:6] + "…" + card_no[-4:], reason=reason)
    click.echo(f"card {card_no[:6]}…{card_no[-4:]} blacklisted for replacement ({reason})")


def opened_batch(c: Context, data: bytes, file_key: str) -> issuance.Batch:
    """The batch file's content verified whole and decrypted under the file key."""

    async def check() -> issuance.Batch:
        batch: issuance.Batch = await issuance.open_batch(
            c.hsm, await resolve(c.home, file_key), data
        )
        return batch

    opened: issuance.Batch = run_hsm(check())
    return opened


def approval_path(batch_file: Path) -> Path:
    return batch_file.with_name(batch_file.name + ".approval")


@click.command("approve")
@click.argument("batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file-key", default="cards/file", show_default=True)
@pass_context
def approve(c: Context, batch_file: Path, file_key: str) -> None:
    """The checker: verifies the batch whole and approves it; never its own maker."""
    c.authenticate("checker")
    data = batch_file.read_bytes()
    batch = opened_batch(c, data, file_key)
    if batch.maker == c.home.operator:
        raise click.ClickException(f"{c.home.operator} made batch {batch.batch_id}: "
                                   "a second operator approves it")
    digest = hashlib.sha256(data).hexdigest()
    record = {"batch": batch.batch_id, "sha256": digest, "maker": batch.maker,
              "approver": c.home.operator}
    approval_path(batch_file).write_text(json.dumps(record, sort_keys=True) + "\n")
    c.home.audit("cards.approve", batch=batch.batch_id, sha256=digest, maker=batch.maker,
                 records=len(batch.records))
    click.echo(f"batch {batch.batch_id} approved: {len(batch.records)} cards")


def check_approval(batch_file: Path, data: bytes, batch: issuance.Batch) -> None:
    path = approval_path(batch_file)
    if not path.exists():
        raise click.ClickException(f"batch {batch.batch_id} is not approved")
    approval = json.loads(path.read_text())
    if approval.get("sha256") != hashlib.sha256(data).hexdigest():
        raise click.ClickException(f"batch {batch.batch_id} changed after its approval")
    if approval.get("approver") in (None, batch.maker) or approval.get("batch") != batch.batch_id:
        raise click.ClickException(f"batch {batch.batch_id}: the approval is not valid")


def progress(batch_file: Path) -> dict[str, str]:
    path = batch_file.with_name(batch_file.name + ".progress")
    done: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            done[entry["serial"]] = entry["status"]
    return done


def mark(batch_file: Path, serial: str, status: str) -> None:
    path = batch_file.with_name(batch_file.name + ".progress")
    with path.open("a") as out:
        out.write(json.dumps({"serial": serial, "status": status}) + "\n")


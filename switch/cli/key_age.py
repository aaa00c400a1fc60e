"""`medswitch keys age` and `medswitch keys rotate-tmks`: keys by age and last rotation, and the
terminals' TMKs rotated on a schedule (run it from cron: only TMKs older than `--older-than`
are rotated, so a second run the same day rotates nothing).

The terminal interface has no TMK download (specs/terminal-interface.md: an 0810 carries only
working keys under the TMK), so a new TMK cannot reach a terminal under its old one on the
wire: it leaves as the first did — clear components for the custodians' key-loading device, or
a TR-31 export file under the key-injection facility's transport key (specs/key-ceremony.md).
The switch signs a terminal on under its newest TMK, so the terminal's current session keeps
serving until the device has loaded the new TMK and the terminal signs on again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from hsm.keyblock import StoredKey
from hsm.keys import KeyUsage
from switch.cli.common import component_count_option, component_files_option, load_hsm
from switch.cli.key_distribution import SAFE, export_blocks, run, write_components, write_private
from switch.key_home import Home

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class KeyAge:
    """One alias: how many versions, its first creation and its last rotation (newest)."""

    alias: str
    usage: KeyUsage
    versions: int
    newest: int
    first_created: datetime
    last_rotated: datetime

    def age_days(self, now: datetime) -> int:
        return int((now - self.last_rotated).total_seconds() // DAY_S)


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def key_ages(records: list[StoredKey]) -> list[KeyAge]:
    by_alias: dict[str, list[StoredKey]] = {}
    for record in records:
        by_alias.setdefault(record.alias, []).append(record)
    ages = []
    for alias, versions in by_alias.items():
        newest = max(versions, key=lambda r: r.version)
        first = min(versions, key=lambda r: r.version)
        ages.append(KeyAge(alias, newest.usage, len(versions), newest.version,
                           _when(first.created_at), _when(newest.created_at)))
    return sorted(ages, key=lambda a: (a.last_rotated, a.alias))


now_option = click.option("--now", "now_text", default=None,
                          help="The moment ages are counted to (ISO; default the clock).")


def _now(text: str | None) -> datetime:
    return _when(text) if text else datetime.now(UTC).replace(microsecond=0)


@click.command("age")
@click.option("--older-than", "days", default=0, show_default=True, type=click.IntRange(0),
              help="Only keys last rotated at least this many days ago.")
@click.option("--usage", default=None, type=click.Choice([u.value for u in KeyUsage]))
@now_option
@click.pass_obj
def age(home: Home, days: int, usage: str | None, now_text: str | None) -> None:
    """Keys by age: each alias's versions, first creation and last rotation, oldest first.
    Needs no LMK (the key file's index)."""
    now = _now(now_text)
    ages = [a for a in key_ages(run(home.store.list()))
            if a.age_days(now) >= days and (usage is None or a.usage.value == usage)]
    click.echo("alias\tusage\tversions\tnewest\tlast rotated\tage days\tfirst created")
    for a in ages:
        click.echo(f"{a.alias}\t{a.usage.value}\t{a.versions}\tv{a.newest}\t"
                   f"{a.last_rotated.isoformat()}\t{a.age_days(now)}\t"
                   f"{a.first_created.isoformat()}")


@click.command("rotate-tmks")
@click.option("--older-than", "days", required=True, type=click.IntRange(1),
              help="Rotate each terminal's TMK last rotated at least this many days ago.")
@click.option("--custodian", "custodians", multiple=True,
              help="Deliver as components, one per custodian (2 or 3, repeat) ...")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="... written under this directory, one subdirectory per terminal.")
@click.option("--kif", default=None, help="Or deliver under this KIF_KEK as a TR-31 file ...")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="... written here (a new file).")
@now_option
@component_files_option
@component_count_option
@click.pass_obj
def rotate_tmks(home: Home, days: int, custodians: tuple[str, ...], out_dir: Path | None,
                kif: str | None, out: Path | None, now_text: str | None,
                component_files: tuple[Path, ...], count: int) -> None:
    """New TMKs (exportable) for terminals whose TMK is due, delivered as components or under
    a key-injection facility's transport key."""
    by_components = bool(custodians) and out_dir is not None
    if by_components == (kif is not None and out is not None) or (kif is None) != (out is None):
        raise click.UsageError("deliver by --custodian … --out-dir DIR, or by --kif ALIAS --out "
                               "FILE")
    if by_components and len(set(custodians)) != len(custodians):
        raise click.ClickException("each custodian carries one component: names repeat")
    if out is not None and out.exists():  # before anything rotates: a run from a timer
        raise click.ClickException(f"{out} exists (the last rotation's export, not yet "
                                   "collected?): nothing rotated")
    now = _now(now_text)
    due = [a for a in key_ages(run(home.store.list()))
           if a.usage is KeyUsage.TMK and a.alias.startswith("tmk/") and a.age_days(now) >= days]
    if not due:
        click.echo(f"no TMK last rotated {days} or more days ago")
        return
    hsm = load_hsm(home, component_files, count)
    rotated = []
    for a in due:
        ref = run(hsm.generate_key(a.alias, KeyUsage.TMK, now=now, exportable=True))
        rotated.append(f"{ref.alias}:{ref.version}")
        home.audit("key.rotate-tmk", alias=ref.alias, version=ref.version, kcv=ref.kcv,
                   previous_version=a.newest, age_days=a.age_days(now))
        click.echo(f"{ref.alias} v{a.newest} -> v{ref.version} KCV {ref.kcv} "
                   f"({a.age_days(now)} days old)")
        if by_components and out_dir is not None:
            parts = run(hsm.export_components(ref, len(custodians)))
            where = out_dir / SAFE.sub("_", ref.alias.removeprefix("tmk/"))
            write_components(ref, custodians, parts, where)
            home.audit("key.export-components", alias=ref.alias, version=ref.version,
                       kcv=ref.kcv, custodians=list(custodians),
                       component_kcvs=[p.kcv for p in parts])
    if kif is not None and out is not None:
        kek, text, lines = run(export_blocks(hsm, home, rotated, kif))
        write_private(out, text)
        for line in lines:
            home.audit("key.export", alias=line.alias, version=line.version, kcv=line.kcv,
                       kek=f"{kek.alias}:{kek.version}", form="tr31")
        click.echo(f"{len(lines)} TMKs under {kek.alias} v{kek.version} -> {out}")

"""`medswitch keys export|export-components|import-block|policy`: keys leaving the centre for
outside parties (specs/key-ceremony.md) — as 3DES-ECB under a ZMK or TMK, as TR-31 blocks
under a key-injection facility's, a personalisation bureau's or the PSAM issuer's transport
key, or a terminal's TMK as 2-3 clear components, one per custodian, for a key-loading device.
Every path is one of `hsm.policy.POLICY`'s; any other is refused with the governing rule named.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from hsm.keys import KeyRef
from hsm.lmk import Component
from hsm.policy import POLICY
from hsm.soft import SoftHsm
from switch.cli.common import (
    cli_errors,
    component_count_option,
    component_files_option,
    load_hsm,
    resolve,
)
from switch.key_home import Home, ceremony_now

T = TypeVar("T")

EXPORT_MAGIC = "medswitch key export 1"
SAFE = re.compile(r"[^A-Za-z0-9._-]")


def run(coro: Coroutine[Any, Any, T]) -> T:
    with cli_errors(named=True):  # messages carry no key material
        return asyncio.run(coro)


def report(home: Home, what: str, ref: KeyRef, **details: object) -> None:
    click.echo(f"{ref.alias} v{ref.version} {ref.usage.value} KCV {ref.kcv}")
    home.audit(
        what, alias=ref.alias, version=ref.version, usage=ref.usage.value, kcv=ref.kcv, **details
    )


@dataclass(frozen=True, slots=True)
class ExportLine:
    """One key of an export file: what it is and its TR-31 block under the file's KEK."""

    alias: str
    version: int
    usage: str
    kcv: str
    block: str


def write_private(path: Path, text: str) -> None:
    """A new file only its owner reads (never overwriting: each medium is written once)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


async def export_blocks(
    hsm: SoftHsm, home: Home, keys: Sequence[str], kek_text: str
) -> tuple[KeyRef, str, list[ExportLine]]:
    """Each key as a TR-31 block under KEK: (KEK, the export file's text, its lines)."""
    kek = await resolve(home, kek_text)
    lines = []
    for text in keys:
        ref = await resolve(home, text)
        block = await hsm.export_key_block(ref, kek)
        lines.append(ExportLine(ref.alias, ref.version, ref.usage.value, ref.kcv, block))
    body = [EXPORT_MAGIC, f"kek {kek.usage.value} {kek.alias} v{kek.version} KCV {kek.kcv}"]
    body += [f"key {x.alias} v{x.version} {x.usage} KCV {x.kcv} {x.block}" for x in lines]
    return kek, "\n".join(body) + "\n", lines


def parse_export(text: str) -> list[ExportLine]:
    """The keys of an export file (specs/key-ceremony.md); ClickException when malformed."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows or " ".join(rows[0]) != EXPORT_MAGIC:
        raise click.ClickException(f"not a key export file (first line: {EXPORT_MAGIC!r})")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if row[0] == "kek":
            continue
        if len(row) != 7 or row[0] != "key" or row[4] != "KCV" or not row[2][1:].isdigit():
            raise click.ClickException(f"line {number}: not `key ALIAS vN USAGE KCV xxxxxx BLOCK`")
        out.append(ExportLine(row[1], int(row[2][1:]), row[3], row[5], row[6]))
    return out


@click.command("export-components")
@click.argument("key")
@click.option("--custodian", "custodians", multiple=True, required=True,
              help="Who carries one component to the key-loading device (2 or 3, repeat).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per custodian here instead of printing the components.")
@component_files_option
@component_count_option
@click.pass_obj
def export_components(home: Home, key: str, custodians: tuple[str, ...], out_dir: Path | None,
                      component_files: tuple[Path, ...], count: int) -> None:
    """A terminal's TMK as clear components with KCVs, one per custodian (policy rule
    tmk-components: only a TMK generated --exportable)."""
    if len(set(custodians)) != len(custodians):
        raise click.ClickException("each custodian carries one component: names repeat")
    hsm = load_hsm(home, component_files, count)
    ref = run(resolve(home, key))
    parts = run(hsm.export_components(ref, len(custodians)))
    if out_dir is None:
        for number, (custodian, part) in enumerate(zip(custodians, parts, strict=True), 1):
            click.echo(f"{component_heading(ref, number, len(parts), custodian)} (shown once, "
                       f"write it down): {part.reveal()} KCV {part.kcv}")
    else:
        for path, part in zip(write_components(ref, custodians, parts, out_dir), parts,
                              strict=True):
            click.echo(f"{path.read_text().splitlines()[2][2:]} written to {path} "
                       f"(component KCV {part.kcv})")
    home.audit("key.export-components", alias=ref.alias, version=ref.version, kcv=ref.kcv,
               custodians=list(custodians), component_kcvs=[p.kcv for p in parts])


def component_heading(ref: KeyRef, number: int, count: int, custodian: str) -> str:
    return (f"{ref.alias} v{ref.version} {ref.usage.value} KCV {ref.kcv}: component {number} "
            f"of {count} for {custodian}")


def write_components(ref: KeyRef, custodians: Sequence[str], parts: Sequence[Component],
                     out_dir: Path) -> list[Path]:
    """One new file per custodian (specs/key-ceremony.md §Components): the paths."""
    out_dir.mkdir(0o700, parents=True, exist_ok=True)
    paths = []
    for number, (custodian, part) in enumerate(zip(custodians, parts, strict=True), start=1):
        path = out_dir / f"{SAFE.sub('_', ref.alias)}.v{ref.version}.{SAFE.sub('_', custodian)}"
        heading = component_heading(ref, number, len(parts), custodian)
        write_private(path, f"{part.reveal()}\nKCV:{part.kcv}\n# {heading}\n")
        paths.append(path)
    return paths


@click.command("import-block")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kek", required=True, help="The transport key alias[:version] it came under.")
@component_files_option
@component_count_option
@click.pass_obj
def import_block(home: Home, export_file: Path, kek: str, component_files: tuple[Path, ...],
                 count: int) -> None:
    """Store the keys of an export file received under a transport key (policy checked)."""
    lines = parse_export(export_file.read_text())
    hsm = load_hsm(home, component_files, count)
    kek_ref = run(resolve(home, kek))
    for line in lines:
        ref = run(hsm.import_key_block(kek_ref, line.block, now=ceremony_now()))
        report(home, "key.import-block", ref, kek=f"{kek_ref.alias}:{kek_ref.version}")


@click.command("policy")
def policy_() -> None:
    """The HSM's key distribution policy: which key travels under which, in what form."""
    click.echo("rule\tkeys\tunder\tform\texportable at generation")
    for rule in POLICY:
        click.echo("\t".join(rule.row()))

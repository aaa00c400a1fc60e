"""`medswitch keys`: the key ceremony (DESIGN §4).

Where things live: `--home DIR` (or MEDSWITCH_HOME), holding `keys.jsonl` (wrapped keys, see
`switch.keystore_file`), `lmk.json` (the LMK's expected check value — never the LMK) and
`audit.jsonl` (one JSON line per ceremony step: who, what, KCVs, when; never a key value).

The LMK exists only in memory: every command that needs it forms it again from its components,
entered by their custodians at hidden prompts or read from the custodians' separate files
(`-c FILE`, repeated) or their key cards (`-c key-card:READER`). Components are printed once
when generated, with their KCVs; keys are only ever shown by KCV.

Keys leaving for outside parties (`export --form tr31`, `export-components`, `import-block`,
`policy`): switch/cli/key_distribution.py and specs/key-ceremony.md; key age and scheduled
TMK rotation (`age`, `rotate-tmks`): switch/cli/key_age.py; custodians' key cards
(`key-card`, `component --key-card`): switch/cli/key_cards.py.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TypeVar

import click

from hsm.des import kcv
from hsm.keys import KeyUsage
from hsm.lmk import Lmk, combine, generate_component, is_test_only
from switch.cli.auth import HelpFirstGroup, key_operator
from switch.cli.common import (
    ComponentSource,
    component_count_option,
    component_files_option,
    home_option,
    load_hsm,
    read_components,
    resolve,
)
from switch.cli.key_age import age, rotate_tmks
from switch.cli.key_cards import key_card, write_to_card
from switch.cli.key_distribution import (
    export_blocks,
    export_components,
    import_block,
    policy_,
    write_private,
)
from switch.cli.key_distribution import report as _report
from switch.cli.key_distribution import run as _run
from switch.key_home import LMK_CONFIG, TEST_ONLY_BANNER, Home, ceremony_now

T = TypeVar("T")


usage_option = click.option(
    "--usage",
    required=True,
    type=click.Choice([u.value for u in KeyUsage]),
)
exportable_option = click.option(
    "--exportable",
    is_flag=True,
    help="The key may leave the HSM as `medswitch keys policy` allows (fixed now, for good).",
)


@click.group(cls=HelpFirstGroup)
@home_option(help="Directory of the key store, LMK check value and audit log (env MEDSWITCH_HOME).")
@click.option("--operator", default=None,
              help="Who performs the step: checked against the login once the deployment has "
              "operators (switch/cli/auth.py); before that, recorded as given (default: login "
              "name).")
@click.pass_context
def keys(ctx: click.Context, home: Path, operator: str | None) -> None:
    """Key ceremonies: components, LMK, keys (shown by KCV only), audit log."""
    ctx.obj = Home(home, key_operator(home, operator, ctx.invoked_subcommand))


@keys.command("component")
@click.option("--length", default=16, show_default=True, type=click.Choice(["8", "16", "24"]))
@click.option("--custodian", required=True, help="Who receives the component.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write it to this file (the custodian's medium) instead of printing it.",
)
@click.option("--key-card", "reader", default=None,
              help="Or write it onto the custodian's key card in this reader (PIN asked).")
@click.option("--slot", default=1, show_default=True, type=click.IntRange(1, 8),
              help="The key card's slot.")
@click.option("--label", default="LMK", show_default=True, help="What the component is for.")
@click.pass_obj
def component(home: Home, length: str, custodian: str, out: Path | None, reader: str | None,
              slot: int, label: str) -> None:
    """Generate one random key component (odd parity) for one custodian."""
    if out is not None and reader is not None:
        raise click.UsageError("--out or --key-card, not both")
    part = generate_component(secrets.token_bytes, int(length))
    if reader is not None:
        write_to_card(home, reader, slot, label, custodian, part)
        click.echo(f"component for {custodian} written to the key card in {reader}, slot {slot}")
    elif out is None:
        click.echo(f"component for {custodian} (shown once, write it down): {part.reveal()}")
    else:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{part.reveal()}\nKCV:{part.kcv}\n")
        click.echo(f"component for {custodian} written to {out}")
    click.echo(f"KCV {part.kcv}")
    home.audit("component.generate", custodian=custodian, kcv=part.kcv, length=int(length))


@keys.command("lmk-form")
@component_files_option
@component_count_option
@click.option("--new", is_flag=True, help="Record this LMK's KCV as the configured one.")
@click.pass_obj
def lmk_form(home: Home, component_files: tuple[Path, ...], count: int, new: bool) -> None:
    """Form the LMK from 2–9 components and check (or, with --new, record) its KCV."""
    components = read_components(component_files, count, "LMK", home.path)
    if not 2 <= len(components) <= 9:
        raise click.ClickException("the LMK needs 2 to 9 components")
    formed_kcv = kcv(combine(components, minimum=2))
    expected = home.expected_lmk_kcv()
    if new:
        if expected is not None:
            raise click.ClickException("an LMK is already configured here")
        home.path.mkdir(parents=True, exist_ok=True)
        config = {"kcv": formed_kcv, "formed_at": ceremony_now().isoformat()}
        (home.path / LMK_CONFIG).write_text(json.dumps(config) + "\n")
    elif expected is None:
        raise click.ClickException("no LMK configured here yet: form it with --new")
    elif expected != formed_kcv:
        raise click.ClickException("formed LMK does not match the configured check value")
    Lmk(components, formed_kcv).erase()
    test_only = is_test_only(components)
    if test_only:
        click.echo(TEST_ONLY_BANNER, err=True)
    click.echo(f"LMK KCV {formed_kcv}")
    home.audit(
        "lmk.form",
        kcv=formed_kcv,
        recorded=new,
        component_kcvs=[c.kcv for c in components],
        test_only=test_only,
    )


@keys.command("generate")
@click.argument("alias")
@usage_option
@exportable_option
@component_files_option
@component_count_option
@click.pass_obj
def generate(
    home: Home,
    alias: str,
    usage: str,
    exportable: bool,
    component_files: tuple[Path, ...],
    count: int,
) -> None:
    """Generate a random key as the next version of ALIAS."""
    hsm = load_hsm(home, component_files, count)
    ref = _run(
        hsm.generate_key(alias, KeyUsage(usage), now=ceremony_now(), exportable=exportable)
    )
    _report(home, "key.generate", ref, exportable=exportable)


@keys.command("rotate")
@click.argument("alias")
@exportable_option
@component_files_option
@component_count_option
@click.pass_obj
def rotate(
    home: Home, alias: str, exportable: bool, component_files: tuple[Path, ...], count: int
) -> None:
    """A new random version of ALIAS, same usage; the old versions stay for stored data."""
    current = _run(resolve(home, alias))
    hsm = load_hsm(home, component_files, count)
    ref = _run(
        hsm.generate_key(current.alias, current.usage, now=ceremony_now(), exportable=exportable)
    )
    _report(home, "key.rotate", ref, previous_version=current.version, exportable=exportable)


@keys.command("form")
@click.argument("alias")
@usage_option
@click.option(
    "-k",
    "--key-component-file",
    "key_files",
    multiple=True,
    type=ComponentSource(),
    help="A component of the key being formed (repeat); prompts when absent.",
)
@click.option(
    "--key-components", "key_count", default=2, show_default=True, type=click.IntRange(1, 9)
)
@exportable_option
@component_files_option
@component_count_option
@click.pass_obj
def form(
    home: Home,
    alias: str,
    usage: str,
    key_files: tuple[Path, ...],
    exportable: bool,
    key_count: int,
    component_files: tuple[Path, ...],
    count: int,
) -> None:
    """Form a key (a bank's ZMK, a terminal's TMK) from clear components."""
    hsm = load_hsm(home, component_files, count)
    parts = read_components(key_files, key_count, alias, home.path)
    ref = _run(
        hsm.form_key(alias, KeyUsage(usage), parts, now=ceremony_now(), exportable=exportable)
    )
    _report(home, "key.form", ref, component_kcvs=[p.kcv for p in parts], exportable=exportable)


@keys.command("import")
@click.argument("alias")
@usage_option
@click.option("--kek", required=True, help="ZMK or TMK alias[:version] it arrives under.")
@click.option("--value", required=True, help="The key encrypted under the KEK (hex).")
@click.option("--kcv", "check", required=True, help="Its check value.")
@component_files_option
@component_count_option
@click.pass_obj
def import_(
    home: Home,
    alias: str,
    usage: str,
    kek: str,
    value: str,
    check: str,
    component_files: tuple[Path, ...],
    count: int,
) -> None:
    """Import a key received encrypted under a ZMK or TMK."""
    kek_ref = _run(resolve(home, kek))
    hsm = load_hsm(home, component_files, count)
    try:
        encrypted = bytes.fromhex(value)
    except ValueError:
        raise click.ClickException("--value is not hex") from None
    ref = _run(
        hsm.import_key(alias, KeyUsage(usage), kek_ref, encrypted, check, now=ceremony_now())
    )
    _report(home, "key.import", ref, kek=f"{kek_ref.alias}:{kek_ref.version}")


@keys.command("export")
@click.argument("key_list", metavar="KEY...", nargs=-1, required=True)
@click.option("--kek", required=True, help="The key-encryption key alias[:version].")
@click.option(
    "--form",
    "form_",
    default="ecb",
    show_default=True,
    type=click.Choice(["ecb", "tr31"]),
    help="ecb: under a ZMK or TMK (one key); tr31: key blocks under a transport key.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tr31: write the export file here (new file) instead of printing it.",
)
@component_files_option
@component_count_option
@click.pass_obj
def export(
    home: Home,
    key_list: tuple[str, ...],
    kek: str,
    form_: str,
    out: Path | None,
    component_files: tuple[Path, ...],
    count: int,
) -> None:
    """KEY encrypted under a KEK with its KCV, as `medswitch keys policy` allows."""
    hsm = load_hsm(home, component_files, count)
    if form_ == "tr31":
        kek_ref, text, lines = _run(export_blocks(hsm, home, key_list, kek))
        if out is None:
            click.echo(text, nl=False)
        else:
            write_private(out, text)
            click.echo(f"{len(lines)} keys under {kek_ref.alias} v{kek_ref.version} -> {out}")
        for line in lines:
            home.audit("key.export", alias=line.alias, version=line.version, kcv=line.kcv,
                       kek=f"{kek_ref.alias}:{kek_ref.version}", form="tr31")
        return
    if len(key_list) != 1:
        raise click.ClickException("--form ecb exports one key at a time")
    key_ref, kek_ref = _run(resolve(home, key_list[0])), _run(resolve(home, kek))
    exported = _run(hsm.export_key(key_ref, kek_ref))
    click.echo(
        f"{key_ref.alias} v{key_ref.version} under {kek_ref.alias} v{kek_ref.version}: "
        f"{exported.encrypted.hex().upper()} KCV {exported.kcv}"
    )
    home.audit(
        "key.export",
        alias=key_ref.alias,
        version=key_ref.version,
        kcv=exported.kcv,
        kek=f"{kek_ref.alias}:{kek_ref.version}",
        form="ecb",
    )


@keys.command("sign-on")
@click.argument("tmk")
@click.option("--layout", default=60, show_default=True, type=click.Choice(["24", "40", "60"]))
@click.option("--prefix", required=True, help="Alias prefix of the new PIK/MAK/TDK.")
@component_files_option
@component_count_option
@click.pass_obj
def sign_on(
    home: Home,
    tmk: str,
    layout: str,
    prefix: str,
    component_files: tuple[Path, ...],
    count: int,
) -> None:
    """New working keys under a terminal's TMK: prints field 62 (encrypted) and KCVs."""
    tmk_ref = _run(resolve(home, tmk))
    hsm = load_hsm(home, component_files, count)
    result = _run(hsm.sign_on(tmk_ref, int(layout), prefix, now=ceremony_now()))
    click.echo(f"field 62: {result.field62.hex().upper()}")
    for ref in (result.pik, result.mak, result.tdk):
        if ref is not None:
            _report(home, "key.sign-on", ref, tmk=f"{tmk_ref.alias}:{tmk_ref.version}")


@keys.command("public-key")
@click.argument("alias")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the PEM to this new file (default: standard output).")
@component_files_option
@component_count_option
@click.pass_obj
def public_key(
    home: Home, alias: str, out: Path | None, component_files: tuple[Path, ...], count: int
) -> None:
    """The public key of the signing key ALIAS[:VERSION] (CARD_SIGN), as the centre publishes it
    for POS and HIS to check the signatures on cards (specs/card-layout.md): PEM. The private
    key never leaves the HSM."""
    ref = _run(resolve(home, alias))
    if ref.usage is not KeyUsage.CARD_SIGN:
        raise click.ClickException(f"{ref.alias} v{ref.version} is {ref.usage.value}: only a "
                                   "CARD_SIGN key has a public key")
    hsm = load_hsm(home, component_files, count)
    pem = _run(hsm.public_key(ref)).decode("ascii")
    if out is None:
        click.echo(pem, nl=False)
    else:
        try:
            write_private(out, pem)
        except FileExistsError:
            raise click.ClickException(f"{out} exists: the public key goes to a new file") from None
        out.chmod(0o644)  # a public key: anyone may read it
    click.echo(f"{ref.alias} v{ref.version} CARD_SIGN fingerprint {ref.kcv}", err=True)
    home.audit("key.public-key", alias=ref.alias, version=ref.version, usage=ref.usage.value,
               kcv=ref.kcv, out=str(out) if out is not None else "stdout")


@keys.command("list")
@click.option("--alias", default=None, help="Only this alias.")
@click.pass_obj
def list_(home: Home, alias: str | None) -> None:
    """Stored keys: alias, usage, version, KCV, created-at (never values). Needs no LMK."""
    records = _run(home.store.list(alias))
    for r in records:
        click.echo(f"{r.alias}\t{r.usage.value}\tv{r.version}\t{r.kcv}\t{r.created_at}")


for command in (export_components, import_block, policy_, age, rotate_tmks, key_card):
    keys.add_command(command)

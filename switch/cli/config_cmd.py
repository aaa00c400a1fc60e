"""`medswitch config`: check a configuration, show the effective one, print its reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from switch.cli.common import config_option

if TYPE_CHECKING:
    from switch.config import Loaded


def _loaded(path: Path | None) -> Loaded:
    from switch.config import ConfigError, load_sourced

    if path is not None and not path.is_file():
        raise click.ClickException(f"{path}: no such file")
    try:
        return load_sourced(path)
    except ConfigError as error:
        raise click.ClickException(f"configuration: {error}") from None


@click.group("config")
def config_group() -> None:
    """The configuration: check a file, show the effective values, print the reference."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path | None) -> None:
    """Check FILE (default $MEDSWITCH_HOME/medswitch.toml) with the MEDSWITCH_* variables:
    every setting known, of its type and within its range. Exit 1 with one line naming the
    first setting that is not."""
    from switch.config_doc import sources_summary

    loaded = _loaded(file)
    click.echo(f"configuration ok: {sources_summary(loaded)}")


@config_group.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print every effective setting with its source (default, file, env), secrets redacted."""
    from switch.config_doc import show as show_lines

    loaded = _loaded(config_path)
    for line in show_lines(loaded):
        click.echo(line)


@config_group.command("reference")
def reference() -> None:
    """Print specs/configuration.md: every setting, its variable, default and range."""
    from switch.config_doc import reference as reference_text

    click.echo(reference_text(), nl=False)

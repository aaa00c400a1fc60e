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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from hsm.errors import HsmError
from hsm.keys import KeyUsage
from hsm.soft import SoftHsm
from ledger import schema
from switch.card_io import issuance
from switch.card_io.connection import CardConnection, PcscConnection
from switch.cli.keys import component_count, component_files, load_hsm
from switch.cli.ledger import default_db
from switch.key_home import Home

U = KeyUsage
Connect = Callable[[str], CardConnection]
STATUS_ISSUED = "issued"
STATUS_ACTIVE = "active"


def now_or(text: str | None) -> datetime:
    if text:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def run_hsm(coro: Any) -> Any:
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

FACTORY_CONTROL_ALIAS = "factory/MK_CONTROL"
FACTORY_TRANSPORT_ALIAS = "factory/PSAM_TRANSPORT"


def set_card_status(c: Context, card_no: str, status: str) -> None:
    with c.engine().begin() as db:
        db.execute(sa.update(schema.cards).where(schema.cards.c.card_no == card_no)
                   .values(status=status))


# The commands, one module per concern; importing them registers them on the groups.
from switch.cli.cards import issuing, psam_commands, writing  # noqa: E402

__all__ = ["cards", "issuing", "psam_commands", "psams", "writing"]

"""What the `cards` and `psams` commands share: their context (key home, LMK components, the
ledger's database, the card reader factory), the group options and the card-status write."""

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
from switch.cli.common import (
    Database,
    check_database,
    component_count_option,
    component_files_option,
    default_db,
    home_option,
    load_hsm,
)
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
        self.typed_operator: str | None = None  # --operator, checked against the login

    def authenticate(self, role: str | None = None) -> str:
        """The authenticated operator's name (switch.cli.auth), with ``role``; from now on
        the one the key home's audit log records."""
        from switch.cli.auth import authenticate

        engine = self.engine()
        try:
            operator = authenticate(engine, role, typed=self.typed_operator)
        finally:
            engine.dispose()
        self.home = Home(self.home.path, operator.name)
        return str(operator.name)

    @property
    def hsm(self) -> SoftHsm:
        if self._hsm is None:
            self._hsm = load_hsm(self.home, self.files, self.count)
        return self._hsm

    def engine(self) -> sa.Engine:
        return sa.create_engine(check_database(Database(self.db)))


def group_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        home_option(help="Key home: key store, LMK check value, audit log."),
        click.option("--operator", default=None, help="Who performs the step."),
        click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=default_db,
                     help="The ledger database (default $MEDSWITCH_HOME/medswitch.db)."),
        component_files_option,
        component_count_option,
    ]):
        function = option(function)
    return function


def make_context(ctx: click.Context, home: Path, operator: str | None, db: Path,
             component_files: tuple[Path, ...], count: int) -> Context:
    import getpass

    obj = ctx.ensure_object(dict)
    connect: Connect = obj.get("connect", PcscConnection)
    who = operator or getpass.getuser()
    context = Context(Home(home, who), component_files, count, db, connect)
    context.typed_operator = operator
    return context


pass_context = click.make_pass_decorator(Context)

FACTORY_CONTROL_ALIAS = "factory/MK_CONTROL"
FACTORY_TRANSPORT_ALIAS = "factory/PSAM_TRANSPORT"


def set_card_status(c: Context, card_no: str, status: str) -> None:
    with c.engine().begin() as db:
        db.execute(sa.update(schema.cards).where(schema.cards.c.card_no == card_no)
                   .values(status=status))

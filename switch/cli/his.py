"""`medswitch his credential|serve`: the HIS interface on its own — an institution's
credential (issued by a logged-in maker, audited) and the HIS API served over a SQLite
deployment (the daemon mounts the same application)."""

from __future__ import annotations

import click
from sqlalchemy import Engine

from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from ledger.migrate import upgrade_sqlite
from switch.cli.auth import operator_login
from switch.cli.common import Database, database_options, load_config, with_engine
from switch.estate.common import now_us, record


@click.group("his")
def his_group() -> None:
    """The HIS interface on its own (the daemon mounts the same application)."""


@his_group.command("credential")
@click.argument("institution_id")
@database_options
@operator_login("maker")
def his_credential(institution_id: str, database: Database, operator: str) -> None:
    """Issue a new HIS token for INSTITUTION_ID (shown once; only its hash is kept)."""
    def issue(engine: Engine) -> str:
        token = ReferenceData(engine).issue_credential(institution_id, now_us())
        record(engine, operator, "his.credential", institution_id)
        return token

    token = with_engine(database, issue, create=True)
    click.echo(f"institution {institution_id} HIS token (shown once): {token}")


@his_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Default: the configuration's `his.port`, else its `http.port` (where `sim his` looks).",
)
@database_options
def his_serve(host: str, port: int | None, database: Database) -> None:
    """Serve the HIS API over HTTP until interrupted (on a SQLite deployment; on PostgreSQL the
    daemon serves it)."""
    if port is None:
        config = load_config()
        port = config.http.port if config.his.port is None else config.his.port
    from aiohttp import web

    from ledger.medical.service import MedicalService
    from switch.database import sqlite_file
    from switch.his_api import HisDeps, make_his_app

    db = sqlite_file(database.resolve())
    if db is None:
        raise click.ClickException("his serve works on SQLite: pass --db FILE")
    db.parent.mkdir(parents=True, exist_ok=True)
    upgrade_sqlite(db)
    engine = sqlite_engine(db)
    service = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
    app = make_his_app(HisDeps(service, ReferenceData(engine)))
    web.run_app(app, host=host, port=port, print=lambda text: click.echo(text))

"""The [database] section and the settings that depend on the database: the URL from TOML or
MEDSWITCH_DATABASE_URL, more than one worker only on PostgreSQL, a clear error otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import ConfigError, load

PG = "postgresql://postgres@127.0.0.1:5432/test"


def test_database_url_from_the_section_and_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    assert load(toml, {}).database.startswith("sqlite:///")
    toml.write_text(f'workers = 2\n[database]\nurl = "{PG}"\n')
    config = load(toml, {})
    assert (config.database, config.postgres, config.workers) == (PG, True, 2)
    other = PG + "?schema=other"
    assert load(toml, {"MEDSWITCH_DATABASE_URL": other}).database == other


def test_more_than_one_worker_needs_postgresql(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    toml.write_text("workers = 2\n")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load(toml, {})
    toml.write_text("")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load(toml, {"MEDSWITCH_WORKERS": "3"})  # the environment cannot get around it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[database]\nurl = "mysql://x"\n', "sqlite:///FILE or postgresql"),
        ("[database]\npool = 3\n", "unknown setting database.pool"),
        ('database = "x"\n', "database must be a table"),
        ("workers = 0\n", "workers must be 1–64"),
    ],
)
def test_bad_database_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "medswitch.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load(toml, {})


def test_the_bank_links_run_on_postgresql(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    toml.write_text(f'[database]\nurl = "{PG}"\n[bank]\nenabled = true\n')
    config = load(toml, {})
    assert config.postgres and config.bank.enabled

"""The command table (`switch.cli.COMMANDS`, `switch.cli.groups`): every entry loads and its short
help is the command's own; `medswitch --help`, a group's `--help` and `messages decode` import
none of the system's heavy parts; and which database a command opens (`--db`, `--database`,
the configuration's `[database] url`, the command line over the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ledger.demo import init_demo
from switch.cli import COMMANDS, main
from switch.cli.auth import TOKEN_FILE_ENV
from switch.cli.lazy import Lazy, LazyGroup, load
from tests.support.operators import READER, reader_env
from tests.support.personal import demo_keys

HEAVY = ("ledger", "sqlalchemy", "asyncpg", "aiohttp", "simulators", "switch.database",
         "switch.app", "tqdm")


def _frame_hex() -> str:
    """A terminal's balance inquiry, framed, as `messages decode` reads it."""
    from messages.codec import Codec
    from messages.framing import LengthFormat, encode_frame
    from messages.spec_terminal import TERMINAL
    from messages.terminal import BalanceInquiry
    from messages.terminal_table import build

    inquiry = BalanceInquiry(stan="000001", terminal_id="KIOSK001",
                             institution_id="101320000000001", pan="6225880123456789")
    return encode_frame(Codec(TERMINAL).encode(build(inquiry)), LengthFormat.BINARY2).hex()


def _tables() -> list[tuple[str, Lazy, click.Group]]:
    found = []
    ctx = click.Context(main)
    for name, entry in sorted(COMMANDS.items()):
        found.append((name, entry, main))
        group = main.get_command(ctx, name)
        if isinstance(group, LazyGroup):
            found += [(f"{name} {sub}", lazy, group) for sub, lazy in sorted(group.lazy.items())]
    return found


@pytest.mark.parametrize(("name", "entry", "group"), _tables(), ids=lambda x: str(x)[:30])
def test_every_entry_loads_with_its_own_short_help(
    name: str, entry: Lazy, group: click.Group
) -> None:
    command = load(entry.target)
    assert command.get_short_help_str(limit=10_000) == entry.short_help
    assert command.name == name.split()[-1]


def test_the_groups_spanning_modules_are_tables() -> None:
    ctx = click.Context(main)
    names = {n: set(main.get_command(ctx, n).list_commands(ctx))  # type: ignore[union-attr]
             for n in ("sim", "import", "dayend")}
    assert names == {
        "sim": {"bank", "bank-files", "his", "kiosk", "pos"},
        "import": {"cardholders", "contributions", "fee-records"},
        "dayend": {"approve", "confirm-reissue", "import-returns", "import-statement", "reject",
                   "run", "settlement-account", "status", "verify"},
    }


def _imported_by(*args: str) -> tuple[list[str], str]:
    """The heavy modules a fresh interpreter imported running `medswitch ARGS`, and its output."""
    code = (
        "import sys, json\n"
        "from switch.cli import main\n"
        "try:\n"
        f"    main({list(args)!r}, standalone_mode=False)\n"
        "finally:\n"
        f"    heavy = sorted({{m.split('.')[0] if not m.startswith('switch') else m "
        f"for m in sys.modules if m.startswith({HEAVY!r})}})\n"
        "    print(json.dumps(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2], check=True)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["dayend", "--help"], ["sim", "--help"],
                                  ["import", "--help"], ["messages", "decode", "FRAME"]])
def test_help_and_light_commands_import_nothing_heavy(args: list[str]) -> None:
    args = [_frame_hex() if arg == "FRAME" else arg for arg in args]
    heavy, out = _imported_by(*args)
    assert heavy == []
    if args[0] == "messages":
        assert "transaction: balance_inquiry" in out
    if args == ["--help"]:
        for name, entry in COMMANDS.items():
            assert f"  {name} " in out
            assert entry.short_help[:20] in " ".join(out.split())


def test_a_command_loads_its_own_module_only() -> None:
    heavy, _ = _imported_by("keys", "--help")
    assert heavy == []
    heavy, _ = _imported_by("review", "--help")
    assert "simulators" not in heavy and "aiohttp" not in heavy


# -- which database ---------------------------------------------------------------------------
@pytest.fixture
def two_deployments(tmp_path: Path) -> tuple[Path, Path]:
    """Two demo databases told apart by their cardholder count (ledger balance of an account
    only one of them has)."""
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    personal = demo_keys(tmp_path / "keys")
    init_demo(small, 2, personal=personal)
    init_demo(large, 4, personal=personal)
    reader_env(large, tmp_path / "tokens")  # an auditor of the large one reads (by its token)
    return small, large


def _balance(args: list[str], env: dict[str, str | None]) -> str:
    """"found", else the one-line error (the small database knows neither the account nor
    the large one's reader, whose token the command is given)."""
    result = CliRunner().invoke(main, ["ledger", "balance", "pf:0000000004", *args], env=env)
    return "found" if result.exit_code == 0 else result.output.strip()


def test_the_configured_database_unless_db_or_database_is_given(
    tmp_path: Path, two_deployments: tuple[Path, Path]
) -> None:
    small, large = two_deployments
    config = tmp_path / "medswitch.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{large}"\n')
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MEDSWITCH_")}
    clean[TOKEN_FILE_ENV] = str(tmp_path / "tokens" / f"{READER}.token")
    assert _balance(["--config", str(config)], clean) == "found"
    assert _balance(["--config", str(config), "--db", str(small)], clean).startswith("Error")
    assert _balance(["--config", str(config), "--database", f"sqlite:///{small}"],
                    clean).startswith("Error")
    # the command line over the environment, either way round
    assert _balance(["--db", str(large)], {**clean, "MEDSWITCH_DATABASE_URL":
                                            f"sqlite:///{small}"}) == "found"
    assert _balance(["--database", f"sqlite:///{large}"],
                    {**clean, "MEDSWITCH_DB": str(small)}) == "found"
    # MEDSWITCH_HOME's medswitch.toml is the default configuration
    home = tmp_path / "home"
    home.mkdir()
    (home / "medswitch.toml").write_text(config.read_text())
    assert _balance([], {**clean, "MEDSWITCH_HOME": str(home)}) == "found"


def test_a_missing_sqlite_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    for args in (["review", "list"], ["dayend", "status", "--date", "2026-12-01"],
                 ["statements", "unit", "u1", "--from", "2026-12-01", "--to", "2026-12-01"],
                 ["ledger", "reviews"]):
        result = CliRunner().invoke(main, [*args, "--db", str(missing)])
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: {missing} does not exist (medswitch demo init, or ledger migrate)\n"
        )
        assert not missing.exists()

"""Configuration checked as an operator meets it: `medswitch config check|show|reference`, and
`medswitch serve|run` refusing a bad value in one line (no traceback) before anything starts.
Each bad value of issue 21 is here, through the installed `medswitch` script."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from switch import config_rules
from switch.config import BankConfig, Config, ConfigError, load
from switch.config_rules import OTHER_VARIABLES
from switch.demo.keys import provision, write_config
from tests.support.daemon import make_database

SCRIPT = str(Path(sys.executable).parent / "medswitch")
ROOT = Path(__file__).resolve().parents[2]


def medswitch(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The command with no MEDSWITCH_* variable but ``env``'s, bounded in time."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    return subprocess.run(
        [SCRIPT, *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints (exit 1, nothing on stdout, no traceback)."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


BAD_ENV = [
    ({"MEDSWITCH_TERMINAL_PORT": "70000"}, "terminal.port must be 0–65535, not 70000 (env "),
    (
        {"MEDSWITCH_BANK_ENABLED": "ture"},
        "MEDSWITCH_BANK_ENABLED must be true or false, not 'ture'",
    ),
    (
        {"MEDSWITCH_TERMINAL_PROT": "6000"},
        "unknown variable MEDSWITCH_TERMINAL_PROT (did you mean MEDSWITCH_TERMINAL_PORT?)",
    ),
    ({"MEDSWITCH_TIMEZONE": "Mars/Olympus"}, "timezone must be an IANA time zone"),
    ({"MEDSWITCH_HTTP_IDLE_TIMEOUT_S": "nan"}, "MEDSWITCH_HTTP_IDLE_TIMEOUT_S must be a number"),
    (
        {"MEDSWITCH_BANK_NUMERICS": "bdc"},
        "bank.numerics must be one of ascii, bcd (did you mean bcd?), not 'bdc' (env ",
    ),
]
BAD_FILE = [
    ("[terminal]\nidle_timeout_s = -5\n", "terminal.idle_timeout_s must be above 0, not -5.0"),
    ('[dayend]\ncutover = "25:00"\n', "dayend.cutover must be HH:MM (00:00–23:59), not '25:00'"),
    ('[dayend]\ncutover = "2300"\n', "dayend.cutover must be HH:MM"),
    ('[dayend]\ntimezone = "Asia/Shanghia"\n', "dayend.timezone must be an IANA time zone"),
    ("[http]\nport = 70000\n", "http.port must be 0–65535"),
    ("[bank]\nenabled = 1\n", "bank.enabled must be true or false, not 1"),
    ("[terminal]\nport = 5800.5\n", "terminal.port must be a whole number"),
    ('log_level = "loud"\n', "log_level must be one of debug, info, warning, error"),
    ("[terminal]\nprot = 1\n", "unknown setting terminal.prot (did you mean terminal.port?)"),
    (
        '[bank]\ndialect = "jpos-iso87"\n',
        "bank.dialect must be one of medswitch, jpos-iso87a, binary-header (did you mean"
        " jpos-iso87a?)",
    ),
    ('[bank]\nready_when = "al"\n', "bank.ready_when must be one of any, all, ignore (did you"),
    (
        '[[bank.links]]\nresponse_mac = "requird"\n',
        "bank.links[0].response_mac must be one of required, optional, none (did you mean"
        " required?)",
    ),
    ('[bank]\nomit_fields = ["F12", "F99"]\n', "bank.omit_fields must each be one of F12,"),
]


@pytest.mark.parametrize(("env", "message"), BAD_ENV)
def test_config_check_refuses_a_bad_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    line = refused(medswitch("config", "check", env={"MEDSWITCH_HOME": str(tmp_path), **env}))
    assert line.startswith("Error: configuration: ") and message in line, line


@pytest.mark.parametrize(("text", "message"), BAD_FILE)
def test_config_check_refuses_a_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "medswitch.toml"
    path.write_text(text)
    line = refused(medswitch("config", "check", str(path)))
    assert message in line and str(path) in line.replace(message, ""), line


def test_serve_and_run_refuse_a_bad_value_before_starting(tmp_path: Path) -> None:
    """Port 70000 is not served on 4464; a bad time zone is one line, not a traceback."""
    home = {"MEDSWITCH_HOME": str(tmp_path)}
    line = refused(medswitch("serve", env={**home, "MEDSWITCH_TERMINAL_PORT": "70000"}))
    assert "terminal.port must be 0–65535, not 70000" in line
    line = refused(medswitch("run", env={**home, "MEDSWITCH_TIMEZONE": "Mars/Olympus"}))
    assert "timezone must be an IANA time zone" in line
    assert not (tmp_path / "medswitch.db").exists()  # run set nothing up
    (tmp_path / "medswitch.toml").write_text('[dayend]\ncutover = "24:00"\n')
    assert "dayend.cutover must be HH:MM" in refused(medswitch("serve", env=home))


def test_serve_says_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    """And MEDSWITCH_LOG_LEVEL=warning leaves out the info lines."""
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    asyncio.run(provision(tmp_path, ["POS00001"]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(tmp_path, terminal_port=port, http_port=0)
        done = medswitch("serve", env={"MEDSWITCH_HOME": str(tmp_path)})
        quiet = medswitch(
            "serve", env={"MEDSWITCH_HOME": str(tmp_path), "MEDSWITCH_LOG_LEVEL": "warning"}
        )
    assert '"level":"info"' in done.stderr  # the default level: info lines
    assert '"level":"info"' not in quiet.stderr and "cannot listen" in quiet.stderr
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: cannot listen: "), done.stderr
    assert f"('127.0.0.1', {port})" in errors[0] and "address already in use" in errors[0]


def test_config_check_and_show_say_where_each_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "medswitch.toml"
    path.write_text(
        '[terminal]\nport = 6000\n[database]\nurl = "postgresql://switch:s3cret@db.example/ms"\n'
    )
    env = {"MEDSWITCH_HOME": str(tmp_path), "MEDSWITCH_HTTP_PORT": "6080"}
    done = medswitch("config", "check", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"configuration ok: 2 from {path}, 2 from the environment\n"
    shown = medswitch("config", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = {ln.split(" = ")[0]: ln for ln in shown.stdout.splitlines()}
    assert re.fullmatch(
        rf"terminal\.port = 6000 +# file {re.escape(str(path))}", lines["terminal.port"]
    )
    assert re.fullmatch(r"http\.port = 6080 +# env MEDSWITCH_HTTP_PORT", lines["http.port"])
    assert re.fullmatch(r"bank\.enabled = false +# default", lines["bank.enabled"])
    assert '"postgresql://switch:***@db.example/ms"' in lines["database_url"]
    assert "s3cret" not in shown.stdout
    assert len(lines) == len(list(config_rules.settings(Config())))


def test_the_example_production_configuration_passes() -> None:
    """ops/README.md's command, run as printed from the repository's root."""
    done = medswitch("config", "check", "ops/medswitch.example.toml", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("configuration ok: ")
    shown = medswitch("config", "show", "--config", "ops/medswitch.example.toml", cwd=ROOT)
    assert shown.returncode == 0 and "# file ops/medswitch.example.toml" in shown.stdout


def test_config_check_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    line = refused(medswitch("config", "check", str(tmp_path / "nope.toml")))
    assert line == f"Error: {tmp_path / 'nope.toml'}: no such file"


def test_the_configuration_spec_is_what_the_code_says() -> None:
    """specs/configuration.md is `medswitch config reference`, byte for byte."""
    done = medswitch("config", "reference", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    spec = (ROOT / "specs" / "configuration.md").read_text(encoding="utf-8")
    assert done.stdout == spec, "run: medswitch config reference > specs/configuration.md"


def test_every_setting_has_a_range_and_a_meaning() -> None:
    """A number the rule table does not cover would be unchecked: the table must grow."""
    from switch.config_doc import MEANINGS, descriptions

    config = Config(bank=BankConfig(links=(BankConfig(),)))
    for setting in config_rules.settings(config, descriptions()):
        assert config_rules.rule_for(setting) is not None, setting.path
        assert setting.description or setting.rule_path in MEANINGS, setting.path


def test_every_medswitch_variable_the_project_names_is_known() -> None:
    """Each MEDSWITCH_* name in the sources, specs and README is a setting's variable or one
    of OTHER_VARIABLES: a variable refused at start would be a broken instruction."""
    known = set(OTHER_VARIABLES)
    known.update(
        filter(None, (config_rules.env_name(s.path) for s in config_rules.settings(Config())))
    )
    named: set[str] = set()
    for folder in ("switch", "ledger", "simulators", "tests", "specs", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".yaml", ".toml") and path.is_file():
                named.update(re.findall(r"MEDSWITCH_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8")))
    for path in (ROOT / "ops").rglob("*"):
        if path.suffix in (".service", ".timer", ".toml", ".md", ".yml") and path.is_file():
            named.update(re.findall(r"MEDSWITCH_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8")))
    for single in ("README.md", "Makefile", ".ci/run"):
        if (ROOT / single).is_file():
            named.update(re.findall(r"MEDSWITCH_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / single).read_text()))
    named -= {"MEDSWITCH_TERMINAL_PROT"}  # this file's mistyped example
    assert named - known == set()


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("Yes", True), ("on", True), ("1", True), ("false", False), ("NO", False),
     ("off", False), ("0", False)],
)  # fmt: skip
def test_booleans_are_the_usual_words_only(word: str, value: bool) -> None:
    assert load(Path("/nonexistent"), {"MEDSWITCH_BANK_ENABLED": word}).bank.enabled is value


@pytest.mark.parametrize("word", ["ture", "", "2", "enabled"])
def test_anything_else_is_not_a_boolean(word: str) -> None:
    with pytest.raises(ConfigError, match="MEDSWITCH_BANK_ENABLED must be true or false"):
        load(Path("/nonexistent"), {"MEDSWITCH_BANK_ENABLED": word})


def test_a_bank_links_entry_is_checked_like_bank() -> None:
    with pytest.raises(ConfigError, match=r"bank\.links\[1\]\.port must be 0–65535, not 70000"):
        load_text("[bank]\n[[bank.links]]\nport = 5812\n[[bank.links]]\nport = 70000\n")


def load_text(text: str) -> Config:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "medswitch.toml"
        path.write_text(text)
        return load(path, {})

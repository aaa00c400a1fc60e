"""Dependencies point one way (DESIGN §2): switch → routing → {messages, hsm, ledger};
ledger → hsm; simulators → {messages, hsm, switch's card connection}; and messages/ stays as
pure as hsm/ (its own purity test is tests/hsm/test_purity.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"switch", "routing", "messages", "hsm", "ledger", "simulators"}
MAY_IMPORT = {
    "messages": {"messages"},
    "hsm": {"hsm"},
    "ledger": {"ledger", "hsm"},
    "routing": {"routing", "messages", "hsm", "ledger"},
    "simulators": {"simulators", "messages", "hsm", "switch", "ledger"},
    "switch": PROJECT - {"simulators"},
}
# Of switch/, simulators may use only the card connection (and its personalisation steps); of
# ledger/, only documented file formats: the catalogue (the HIS simulator prices from it) and the
# day-end bank files (the bank simulator answers payout files).
SIMULATORS_FROM_SWITCH = {"switch.card_io.connection", "switch.card_io.personalize"}
SIMULATORS_FROM_LEDGER = {
    "ledger.medical.catalogue",
    "ledger.dayend.payout_file",  # the bank simulator reads payout files, writes its answers
    "ledger.dayend.bank_files",
}
MESSAGES_STDLIB = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "re",
    "sys",
    "types",
    "typing",
    "pathlib",
    "iso8583",
}


def imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        where = path.relative_to(ROOT / package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(where, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((where, node.module))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_dependencies_point_one_way(package: str) -> None:
    for where, name in imports(package):
        top = name.split(".")[0]
        if top not in PROJECT:
            continue
        if package == "switch" and top == "simulators" and where.startswith("cli/"):
            continue  # `medswitch sim ...` starts the simulators
        assert top in MAY_IMPORT[package], f"{package}/{where} imports {name}"
        if package == "simulators" and top == "switch":
            assert name in SIMULATORS_FROM_SWITCH, f"simulators/{where} imports {name}"
        if package == "simulators" and top == "ledger":
            assert name in SIMULATORS_FROM_LEDGER, f"simulators/{where} imports {name}"


def test_messages_is_pure() -> None:
    for where, name in imports("messages"):
        top = name.split(".")[0]
        assert top in MESSAGES_STDLIB or top == "messages", f"messages/{where} imports {name}"

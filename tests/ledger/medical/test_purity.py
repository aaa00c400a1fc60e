"""The medical rules' pure modules (DESIGN §2) import nothing that does IO and read no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MEDICAL = Path(__file__).resolve().parents[3] / "ledger" / "medical"
PURE = ["accumulators", "catalogue", "codec", "feerecords", "policy", "recordfile", "split"]
ALLOWED = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "tomllib",
    "typing",
    "ledger.core",
    "ledger.kinds",
    *(f"ledger.medical.{name}" for name in PURE),
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "getenv", "open"}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules(name: str) -> None:
    tree = ast.parse((MEDICAL / f"{name}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                assert called not in FORBIDDEN_CALLS, f"{name} calls {called}"
            continue
        for module in modules:
            assert module in ALLOWED or module.split(".")[0] in ALLOWED, f"{name} imports {module}"

"""hsm/ stays pure (DESIGN §2): it imports only the standard library's pure parts, cryptography,
psec and itself, and reads no clock or environment."""

from __future__ import annotations

import ast
from pathlib import Path

HSM = Path(__file__).resolve().parents[2] / "hsm"
ALLOWED = {
    "__future__", "collections", "contextlib", "dataclasses", "datetime", "enum", "hmac",
    "re", "secrets", "struct", "typing", "warnings", "cryptography", "psec", "hsm",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "getenv"}


def test_hsm_imports_nothing_impure() -> None:
    for path in HSM.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


def test_hsm_reads_no_clock_or_environment() -> None:
    for path in HSM.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.attr}"
            if isinstance(node, ast.Attribute) and node.attr == "environ":
                raise AssertionError(f"{path.name} reads os.environ")

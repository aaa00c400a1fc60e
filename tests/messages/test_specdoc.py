"""specs/*.md embed the field and transaction tables generated from the code; keep them current."""

from __future__ import annotations

from pathlib import Path

import pytest

from messages.specdoc import refresh

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize("name", ["terminal-interface.md", "bank-interface.md"])
def test_generated_tables_are_current(name: str) -> None:
    text = (SPECS / name).read_text(encoding="utf-8")
    assert "<!-- generated:" in text
    assert refresh(text) == text, f"run `python -m messages.specdoc` to refresh specs/{name}"

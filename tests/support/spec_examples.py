"""The worked examples of specs/*.md: each fenced block right after a line
``<!-- example: NAME -->``, and the fixed-width files among them as bytes."""

from __future__ import annotations

import re
from pathlib import Path

SPECS = Path(__file__).resolve().parents[2] / "specs"
_BLOCK = re.compile(r"<!-- example: ([a-z-]+) -->\n```[a-z]*\n(.*?)```\n", re.S)


def examples(spec: str) -> dict[str, str]:
    """NAME → the block's text (with its final LF) in specs/SPEC."""
    return dict(_BLOCK.findall((SPECS / spec).read_text(encoding="utf-8")))


def fixed_width(text: str, width: int = 220) -> bytes:
    """A fixed-width file as shown (trailing spaces removed): every line padded to WIDTH bytes
    of GB18030 with spaces and ended by LF."""
    return b"".join(line.encode("gb18030").ljust(width, b" ") + b"\n"
                    for line in text.splitlines())


def key_table(text: str) -> dict[str, str]:
    """The `keys` example: a name (words) then a value (the last word) per line."""
    return {" ".join(words[:-1]): words[-1]
            for words in (line.split() for line in text.splitlines()) if words}

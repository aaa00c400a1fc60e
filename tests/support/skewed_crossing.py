"""A writer crossing that differs in the writer's child: its named objects in the reverse
order there, as a child started from code changed on disk since the daemon started would
number them."""

from __future__ import annotations

import sys
from pathlib import Path

from ledger.crossing import sqlite_writer
from ledger.writer.wire import Crossing


def skewed() -> Crossing:
    crossing = sqlite_writer()
    if Path(sys.argv[0]).parts[-3:] == ("ledger", "writer", "child.py"):
        return crossing._replace(named=tuple(reversed(crossing.named)))
    return crossing

"""The demo's personal-data keys for tests that make a demo deployment (ledger.demo.init_demo
seals names and ID numbers under them): made in HOME's key file if missing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.personal import PersonalKeys
from switch.demo.keys import demo_personal_keys


def demo_keys(home: Path) -> PersonalKeys:
    """From synchronous code (no running event loop)."""
    return asyncio.run(demo_personal_keys(home))

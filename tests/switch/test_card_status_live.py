"""A card status changed by another process (the CLI, an operator's tool) while the daemon runs is
seen at the card's very next use: the daemon keeps no stale card record."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from messages.outcome import Outcome
from tests.support.daemon import Daemon, run
from tests.support.kiosk import KIOSK, issue_card, kiosk_load, signed_on_kiosk


def in_another_process(path: Path, statement: str) -> None:
    """Commit ``statement`` from a separate Python process (as the CLI would)."""
    code = (
        "import sqlite3, sys\n"
        "with sqlite3.connect(sys.argv[1]) as db:\n"
        "    db.execute(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), statement], check=True, timeout=60)


def test_the_running_daemon_refuses_a_card_lost_by_another_process_at_its_next_use(
    tmp_path: Path,
) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            reply, _ = await kiosk_load(kiosk, conn, on_file, 100)
            assert reply.response_code == Outcome.APPROVED.code  # the card was read
            await asyncio.to_thread(
                in_another_process,
                daemon.home / "medswitch.db",
                f"UPDATE cards SET status = 'lost' WHERE card_no = '{on_file.card_no}'",
            )
            reply, _ = await kiosk_load(kiosk, conn, on_file, 100)
            assert reply.response_code == Outcome.LOST_CARD.code

    run(tmp_path, scenario)

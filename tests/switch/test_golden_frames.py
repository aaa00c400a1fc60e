"""The daemon reproduces every golden reply of specs/examples/frames.json: a fresh daemon with
the frames' TEST keys, seed and fixed clock answers each frozen request with exactly the frozen
reply. A difference is either a bug or a spec change (specs/CHANGELOG.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import uvloop

from tests.support import golden

FRAMES = Path(__file__).resolve().parents[2] / "specs" / "examples" / "frames.json"


def test_the_daemon_answers_every_golden_request_with_its_golden_reply(tmp_path: Path) -> None:
    frozen = json.loads(FRAMES.read_text())
    assert frozen["clock"] == golden.CLOCK.isoformat()
    assert frozen["tmk"] == golden.published()["tmk"]

    async def replay() -> list[str]:
        replies = []
        async with golden.golden_daemon(tmp_path) as daemon:
            card_no, _ = daemon.card()
            for frame in frozen["frames"]:
                if frame["transaction"] == "sign_on" and frame["terminal"] == golden.POS:
                    await daemon.submit_bill(card_no)
                request = bytes.fromhex(frame["request"])[2:]  # the length prefix off
                reply = await golden.exchange(daemon.app.terminal_port, request)
                replies.append(golden.framed(reply))
        return replies

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        replies = runner.run(asyncio.wait_for(replay(), timeout=120))
    for frame, reply in zip(frozen["frames"], replies, strict=True):
        assert reply == frame["reply"], f"{frame['terminal']} {frame['transaction']}"

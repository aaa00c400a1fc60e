"""The request pipeline's bounds (switch/pipeline.py): a request whose work outlasts
``response_timeout_s`` is answered 96 and its work goes on — a card debit's advice still posts
when the ledger answers, and a retransmission then gets the truth; a ledger whose writer ended
is answered 96 at once, one log line and no traceback, and nothing is remembered."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from ledger.core import Health
from ledger.kinds import AccountKind, account_id
from ledger.writer.process import ProcessWriter, Restarts
from messages import terminal_table
from messages.codec import Message
from messages.errors import CodecError
from messages.terminal import DebitAdvice, SignOn, SignOnReply, TerminalReply
from switch.metrics import Metrics
from switch.pipeline import Pipeline
from switch.replies import ReplyCache
from tests.support.daemon import CODEC, Daemon, Terminal, now, running_daemon
from tests.support.echo_link import Answer, EchoLink
from tests.support.kiosk import issue_card_with_keys, issue_psam, kiosk_load, pos_purchase
from tests.support.on_file import PsamOnFile

DEBIT_FEN = 3_000


class HeldLedger:
    """The daemon's ledger with its postings held until ``gate`` opens: a slow writer."""

    def __init__(self, ledger: Any, gate: asyncio.Event) -> None:
        self._ledger, self._gate = ledger, gate

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._ledger, name)
        if not name.startswith("post"):
            return attribute

        async def held(*args: Any, **kwargs: Any) -> Any:
            await self._gate.wait()
            return await attribute(*args, **kwargs)

        return held


async def sign_on(daemon: Daemon, terminal: Terminal, institution: str) -> None:
    terminal.institution_id = institution.ljust(15)
    reply = await terminal.exchange(SignOn(**terminal.envelope()), mac=False)
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
    terminal.keys = await terminal.hsm.accept_sign_on(
        terminal.tmk, reply.keys.build(), f"pos/{terminal.terminal_id}", now=now()
    )
    terminal.batch = reply.batch


Scenario = Callable[[Daemon, Terminal, DebitAdvice, PsamOnFile], Awaitable[None]]


def run_with_an_advice(tmp_path: Path, scenario: Scenario, backend: str = "sqlite") -> None:
    """A card loaded at the centre's kiosk, then debited at its institution's POS (signed
    on): ``scenario`` gets the POS and the debit's advice, not yet sent."""

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            on_file, psam_row = daemon.first_card(), daemon.first_psam()
            conn, keys = await issue_card_with_keys(daemon, on_file)
            psam = await issue_psam(daemon, psam_row, keys.purchase)
            async with daemon.terminal("K0000001") as kiosk:
                await sign_on(daemon, kiosk, "centre")
                loaded, confirmed = await kiosk_load(kiosk, conn, on_file, 2 * DEBIT_FEN)
                assert loaded.response_code == "00" and confirmed is not None
            async with daemon.terminal(psam_row.terminal_id) as pos:
                await sign_on(daemon, pos, psam_row.institution_id)
                data = pos_purchase(conn, psam, on_file, DEBIT_FEN, now().replace(tzinfo=None))
                advice = DebitAdvice(
                    **pos.envelope(), pan=on_file.card_no, amount_fen=DEBIT_FEN, card=data
                )
                await scenario(daemon, pos, advice, psam_row)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


async def payable_fen(daemon: Daemon, institution: str) -> int:
    kind = AccountKind.INSTITUTION_PAYABLE_INSURANCE
    balance = await daemon.app.ledger.balance(account_id(kind, institution))
    return 0 if balance is None else balance.balance_fen


def reply_of(payload: bytes) -> TerminalReply:
    reply = terminal_table.parse(CODEC.decode(payload))
    assert isinstance(reply, TerminalReply)
    return reply


def test_an_advice_past_the_deadline_is_answered_96_and_still_posts(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(
        daemon: Daemon, pos: Terminal, advice: DebitAdvice, psam: PsamOnFile
    ) -> None:
        pipeline = daemon.app.terminal
        pipeline.response_timeout_s = 1.0
        gate = asyncio.Event()
        link = pipeline.link
        link.ledger = HeldLedger(link.ledger, gate)  # type: ignore[assignment]
        before = await payable_fen(daemon, psam.institution_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await pos.exchange(advice)  # its MAC verified under the session
        assert first.response_code == "96" and loop.time() - started < 5
        assert reply_of(await pos.send(pos.sent)).response_code == "96"  # still not known
        assert pipeline.late == 2 and await payable_fen(daemon, psam.institution_id) == before
        gate.set()  # the ledger answers
        for _ in range(200):  # bounded: the held work finishes
            if pipeline.late == 0:
                break
            await asyncio.sleep(0.05)
        assert pipeline.late == 0
        assert await payable_fen(daemon, psam.institution_id) == before + DEBIT_FEN
        truth = await pos.send(pos.sent)  # the retransmission gets the remembered answer
        assert reply_of(truth).response_code == "00"
        assert await pos.send(pos.sent) == truth  # byte for byte, posted once
        assert await payable_fen(daemon, psam.institution_id) == before + DEBIT_FEN

    run_with_an_advice(tmp_path, scenario, backend)


def test_a_ledger_whose_writer_ended_is_answered_96_at_once_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(
        daemon: Daemon, pos: Terminal, advice: DebitAdvice, psam: PsamOnFile
    ) -> None:
        writer = daemon.app.ledger.writer  # type: ignore[attr-defined]
        assert isinstance(writer, ProcessWriter) and writer._process is not None
        writer._restarts = Restarts(delays_s=())  # given up at once: no restart to race
        os.kill(writer._process.pid, signal.SIGKILL)
        for _ in range(200):  # bounded: the loss is seen when its socket closes
            if daemon.app.ledger.health() is Health.WRITER_ENDED:
                break
            await asyncio.sleep(0.05)
        assert daemon.app.ledger.health() is Health.WRITER_ENDED
        caplog.clear()
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await pos.exchange(advice)
        assert first.response_code == "96"
        assert loop.time() - started < 5  # at once, not at response_timeout_s (20 s)
        again = await pos.send(pos.sent)  # not remembered: handled again, 96 again
        assert reply_of(again).response_code == "96"
        unavailable = [r for r in caplog.records if "ledger is unavailable" in r.getMessage()]
        assert len(unavailable) == 2
        assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.ERROR)
        assert daemon.app.terminal.replies.get(_key(pos, advice)) is None

    caplog.set_level(logging.INFO)
    run_with_an_advice(tmp_path, scenario)


def _key(pos: Terminal, advice: DebitAdvice) -> str:
    return f"{pos.terminal_id}|{advice.batch}|{advice.stan}|0220"


def test_a_failing_handler_is_answered_96_with_its_traceback_logged_and_nothing_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    async def handler(request: str, context: Any) -> Answer:
        calls.append(request)
        if len(calls) == 1:
            raise ValueError("a bug")
        return Answer("0210", "00")

    async def main() -> None:
        replies = ReplyCache()
        pipeline = Pipeline(
            link=EchoLink(handler), replies=replies, metrics=Metrics(), response_timeout_s=5.0
        )
        assert await pipeline.handle(b"0200|k1|same", "peer") == b"0210|96"
        assert replies.get("k1") is None  # a 96 is not the exchange's answer
        assert await pipeline.handle(b"0200|k1|same", "peer") == b"0210|00"  # handled again
        assert await pipeline.handle(b"0200|k1|same", "peer") == b"0210|00"  # remembered
        assert await pipeline.handle(b"0200|k1|other", "peer") == b"0210|94"

    caplog.set_level(logging.INFO)
    asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert len(calls) == 2
    failed = [r for r in caplog.records if r.exc_info is not None]
    assert len(failed) == 1 and "answered 96" in failed[0].getMessage()
    lines = [r.fields for r in caplog.records if r.getMessage() == "message"]  # type: ignore[attr-defined]
    assert [(line["rc"], line.get("reason")) for line in lines] == [
        ("96", "fault"),
        ("00", None),  # an approval says no reason (the repeat after it logs no line)
        ("94", "duplicate_other_content"),
    ]


def test_a_refusal_its_handler_gave_no_reason_for_is_logged_with_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: str, context: Any) -> Answer:
        return Answer("0210", "51")

    async def main() -> None:
        pipeline = Pipeline(
            link=EchoLink(handler), replies=ReplyCache(), metrics=Metrics(), response_timeout_s=5
        )
        assert await pipeline.handle(b"0200|k1|same", "peer") == b"0210|51"

    caplog.set_level(logging.INFO)
    asyncio.run(asyncio.wait_for(main(), timeout=10))
    [line] = [r.fields for r in caplog.records if r.getMessage() == "message"]  # type: ignore[attr-defined]
    assert (line["rc"], line["reason"], "bill" in line) == ("51", "insufficient_funds", False)


def _unreadable_pipeline() -> Pipeline:
    """A pipeline whose link can read no frame's message type (a format error with no reply)."""

    async def handler(request: str, context: Any) -> Answer:
        return Answer("0210", "00")

    class Unreadable(EchoLink):
        def read(self, payload: bytes, peer: str) -> tuple[Message, str]:
            raise CodecError("not BCD", field="MTI")

    return Pipeline(
        link=Unreadable(handler), replies=ReplyCache(), metrics=Metrics(), response_timeout_s=5.0
    )


def test_a_frame_the_link_cannot_answer_hangs_up() -> None:
    async def main() -> None:
        pipeline = _unreadable_pipeline()
        assert await pipeline.handle(b"\xab\xcd", "peer") is None  # the listener closes

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_format_errors_from_a_flood_write_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = _unreadable_pipeline()

    async def main() -> None:
        for _ in range(1_000):
            assert await pipeline.handle(b"\xab\xcd", "peer") is None

    caplog.set_level(logging.WARNING)
    asyncio.run(asyncio.wait_for(main(), timeout=10))
    lines = [r for r in caplog.records if "format error" in r.getMessage()]
    assert 1 <= len(lines) <= 10  # counted in medswitch_format_errors_total, not logged each
    registry = pipeline.metrics.registry
    counted = registry.get_sample_value("medswitch_format_errors_total", {"interface": "test"})
    assert counted == 1_000

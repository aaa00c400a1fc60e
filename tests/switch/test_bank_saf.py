"""Store-and-forward through the daemon and the issuer simulator (specs/bank-interface.md,
"Store-and-forward"): a stuck reversal does not delay the next and is given up to review after
its attempt limit (seen by `medswitch review list`, the metrics and the queue); a bank that
requires order gets them one at a time; a repeat keeps its F11 and F7 and a 0431 answer is an
acknowledgement."""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Callable, Coroutine
from pathlib import Path

import pytest
import uvloop
from click.testing import CliRunner

from messages.bank import BankReversal
from simulators.bank import IssuerRules, Received
from switch.bank.saf import SafSettings
from switch.cli import main
from switch.config import ConfigError, load
from tests.support.bank import BANK, BankDaemon, bank_daemon, until
from tests.support.bank_observe import queue_reversal, sample, scrape
from tests.support.daemon import BACKENDS
from tests.support.operators import reader_env

STUCK, NEXT = "000101", "000102"  # the originals' F11
WHEN = "1207093000"
REVIEW_LIST = "medswitch review list --reason reversal_undelivered"


def run(scenario: Coroutine[None, None, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, timeout=120))


def reversals(received: list[Received]) -> list[tuple[str, str, str, str]]:
    """(original F11, MTI, F11, F7) of each reversal the bank received, in order."""
    return [
        (r.typed.original[4:10], r.mti, r.typed.stan, r.typed.transmitted)
        for r in received
        if isinstance(r.typed, BankReversal)
    ]


async def row(bank: BankDaemon, key: str) -> tuple[str, int]:
    ((status, attempts),) = await bank.fetch(
        f"SELECT status, attempts FROM reversal_queue WHERE key = '{key}'"
    )
    return str(status), int(attempts)


async def statuses_until(bank: BankDaemon, reached: Callable[[set[str]], bool]) -> None:
    """Wait, bounded, for the queue's statuses (either backend) to satisfy ``reached``."""
    for _ in range(300):
        rows = await bank.fetch("SELECT status FROM reversal_queue")
        if reached({str(r[0]) for r in rows}):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the reversal queue never got there")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stuck_reversal_does_not_delay_the_next_and_goes_to_review(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "medswitch.bank.out")

    async def scenario(bank: BankDaemon) -> None:
        bank.issuer.rules = IssuerRules(unanswered_reversals=(STUCK,))
        stuck = await queue_reversal(bank.app, STUCK, 3_000, WHEN)
        following = await queue_reversal(bank.app, NEXT, 4_000, WHEN)
        await statuses_until(bank, lambda statuses: "acknowledged" in statuses)
        # The next one was acknowledged while the stuck one's first attempt still waited.
        assert await row(bank, following) == ("acknowledged", 1)
        assert await row(bank, stuck) == ("queued", 0)
        await statuses_until(bank, lambda statuses: "review" in statuses)
        assert await row(bank, stuck) == ("review", 2)  # its limit: 2 attempts
        sent = [r for r in reversals(bank.issuer.received) if r[0] == STUCK]
        assert [r[1] for r in sent] == ["0420", "0421"]
        assert sent[0][2:] == sent[1][2:]  # the repeat keeps F11 and F7
        samples = await scrape(bank.app)
        assert sample(samples, "medswitch_saf_review_total", bank=BANK) == 1
        outcomes = {
            outcome: sample(samples, "medswitch_bank_reversals_total", bank=BANK, outcome=outcome)
            for outcome in ("acknowledged", "retried", "review")
        }
        assert outcomes == {"acknowledged": 1, "retried": 2, "review": 1}
        assert sample(samples, "medswitch_saf_depth", bank=BANK) == 0
        assert sample(samples, "medswitch_saf_oldest_age_seconds", bank=BANK) == 0
        labels = {"bank": BANK, "type": "reversal", "response_code": "00"}
        assert sample(samples, "medswitch_bank_requests_total", **labels) == 1
        # Each event a line (medswitch.bank.out): sent, answered, retried, given up.
        lines = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert ("INFO", f"bank {BANK}: link to 127.0.0.1:{bank.issuer.port} signed on") in lines
        said = {level: " | ".join(m for lv, m in lines if lv == level) for level, _ in lines}
        assert re.search(f"bank {BANK}: sent 0420 reversal stan=", said["INFO"])
        assert re.search(f"bank {BANK}: response 0430 reversal stan=\\d+ code=00", said["INFO"])
        assert re.search(rf"bank {BANK}: reversal {following} stan=\d+ acknowledged", said["INFO"])
        assert f"bank {BANK}: reversal {stuck} stan=" in said["WARNING"]  # not acknowledged
        assert f"bank {BANK}: reversal {stuck} given up to review: " in said["ERROR"]

    async def daemon_run() -> None:
        settings = {
            "outbound_timeout_s": 2.0,
            "saf_backoff_initial_s": 0.1,
            "saf_attempts_max": 2,
        }
        async with bank_daemon(tmp_path, backend=backend, **settings) as bank:
            await scenario(bank)
            url = bank.app.config.database_url
            if url:  # PostgreSQL: its schema is dropped when the daemon is gone
                await asyncio.to_thread(review_list, url, tmp_path, "MEDSWITCH_DATABASE_URL")

    run(daemon_run())
    if backend == "sqlite":  # the operators see it, the daemon stopped or not
        review_list(tmp_path / "medswitch.db", tmp_path, "MEDSWITCH_DB")


def review_list(database: Path | str, tmp: Path, variable: str) -> None:
    """`medswitch review list …` as the spec prints it, run by a logged-in auditor (a SQLite
    file as a path, PostgreSQL as its URL)."""
    env = {variable: str(database), **reader_env(database, tmp / "tokens")}
    result = CliRunner().invoke(main, shlex.split(REVIEW_LIST)[1:], env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "reversal_undelivered" in line]
    assert len(lines) == 1 and "30.00" in lines[0] and "open" in lines[0], result.output


def test_a_bank_that_requires_order_gets_its_reversals_one_at_a_time(tmp_path: Path) -> None:
    async def daemon_run() -> None:
        settings = {
            "outbound_timeout_s": 0.3,
            "saf_backoff_initial_s": 0.05,
            "saf_attempts_max": 2,
            "saf_ordered": True,
        }
        async with bank_daemon(tmp_path, **settings) as bank:
            bank.issuer.rules = IssuerRules(unanswered_reversals=(STUCK,))
            stuck = await queue_reversal(bank.app, STUCK, 3_000, WHEN)
            following = await queue_reversal(bank.app, NEXT, 4_000, WHEN)
            await until(lambda: "acknowledged" in bank.reversal_statuses())
            assert await row(bank, stuck) == ("review", 2)
            assert await row(bank, following) == ("acknowledged", 1)
            order = [(r[0], r[1]) for r in reversals(bank.issuer.received)]
            assert order == [(STUCK, "0420"), (STUCK, "0421"), (NEXT, "0420")]

    run(daemon_run())


def test_a_repeat_answered_0431_is_acknowledged(tmp_path: Path) -> None:
    async def daemon_run() -> None:
        settings = {"outbound_timeout_s": 0.3, "saf_backoff_initial_s": 0.05}
        async with bank_daemon(tmp_path, **settings) as bank:
            bank.issuer.rules = IssuerRules(drop_reversal_replies=1, repeat_reply_mti="0431")
            key = await queue_reversal(bank.app, NEXT, 4_000, WHEN)
            await until(lambda: bank.reversal_statuses() == ["acknowledged"])
            assert await row(bank, key) == ("acknowledged", 2)
            sent = reversals(bank.issuer.received)
            assert [r[1] for r in sent] == ["0420", "0421"] and sent[0][2:] == sent[1][2:]
            samples = await scrape(bank.app)
            labels = {"bank": BANK, "type": "reversal", "response_code": "00"}
            assert sample(samples, "medswitch_bank_requests_total", **labels) == 1
            dropped = [k for k in samples if k[0] == "medswitch_bank_responses_dropped_total"]
            assert dropped == []  # the 0431 matched its 0421

    run(daemon_run())


def test_a_reversal_past_its_age_goes_to_review_while_the_bank_is_away(tmp_path: Path) -> None:
    async def daemon_run() -> None:
        async with bank_daemon(tmp_path, saf_age_max_s=0.5) as bank:
            await bank.issuer.close()  # the bank goes away: nothing is sent, nothing counted
            outbound = bank.bank.outbound
            assert outbound is not None
            await until(lambda: not outbound.up)
            key = await queue_reversal(bank.app, NEXT, 4_000, WHEN)
            await until(lambda: bank.reversal_statuses() == ["review"])
            assert await row(bank, key) == ("review", 0)
            reviews = await bank.fetch("SELECT reason, amount_fen, detail FROM review_items")
            assert [(r[0], r[1]) for r in reviews] == [("reversal_undelivered", 4_000)]
            assert "never sent" in reviews[0][2]
            samples = await scrape(bank.app)
            assert sample(samples, "medswitch_saf_review_total", bank=BANK) == 1

    run(daemon_run())


def test_store_and_forward_and_readiness_settings(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    environ = {"MEDSWITCH_HOME": str(tmp_path)}
    toml.write_text(
        "[bank]\nsaf_ordered = true\nsaf_attempts_max = 3\nready_when = 'all'\n"
        "[[bank.links]]\nacquirer_id = '01030000'\nsaf_backoff_max_s = 60.0\n"
    )
    config = load(toml, environ)
    assert (config.bank.saf_ordered, config.bank.saf_attempts_max) == (True, 3)
    assert config.bank.ready_when == "all" and config.bank.saf_backoff_initial_s == 5.0
    assert SafSettings.of(config.bank.links[0]).delay_s(10) == 60.0
    for bad, says in (
        ("ready_when = 'some'", "bank.ready_when"),
        ("saf_backoff_initial_s = 0.0", "bank.saf_backoff_initial_s"),
        ("saf_backoff_max_s = 1.0", "bank: saf_backoff_initial_s <= saf_backoff_max_s"),
        ("saf_attempts_max = 0", "bank.saf_attempts_max"),
    ):
        toml.write_text(f"[bank]\n{bad}\n")
        with pytest.raises(ConfigError, match=re.escape(says)):
            load(toml, environ)


def test_a_dialect_with_new_repeats_gives_each_repeat_a_new_f11(tmp_path: Path) -> None:
    async def daemon_run() -> None:
        settings = {"outbound_timeout_s": 0.3, "saf_backoff_initial_s": 0.05, "repeat": "new"}
        async with bank_daemon(tmp_path, **settings) as bank:
            bank.issuer.rules = IssuerRules(drop_reversal_replies=1)
            key = await queue_reversal(bank.app, NEXT, 4_000, WHEN)
            await until(lambda: bank.reversal_statuses() == ["acknowledged"])
            assert await row(bank, key) == ("acknowledged", 2)
            sent = reversals(bank.issuer.received)
            assert [r[1] for r in sent] == ["0420", "0421"] and sent[0][2] != sent[1][2]

    run(daemon_run())


@pytest.mark.parametrize("ordered", [False, True])
def test_a_queue_drains_each_reversal_once(ordered: bool, tmp_path: Path) -> None:
    """200 reversals queued while the bank is away go once each when it returns (in order when
    the bank requires it): a send acknowledged while its row was being read is not sent again."""

    async def daemon_run() -> None:
        async with bank_daemon(tmp_path, saf_ordered=ordered) as bank:
            port = bank.issuer.port
            await bank.issuer.close()
            outbound = bank.bank.outbound
            assert outbound is not None
            await until(lambda: not outbound.up)
            originals = [f"{200_000 + n:06d}" for n in range(200)]
            for n, original in enumerate(originals):
                await queue_reversal(bank.app, original, 100 + n, WHEN)
            await bank.issuer.start(port=port)
            await until(lambda: set(bank.reversal_statuses()) == {"acknowledged"})
            sent = reversals(bank.issuer.received)
            assert [mti for _, mti, *_ in sent] == ["0420"] * len(originals)
            assert sorted(r[0] for r in sent) == originals
            if ordered:
                assert [r[0] for r in sent] == originals

    run(daemon_run())

"""The outbound bank link and store-and-forward, over real sockets against the issuer simulator:
sign-on on connect, responses matched by key, a timeout, late responses unmatched, reconnect
after the bank goes away; a queued reversal delivered once across an outage, 0420 then 0421."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hsm.keys import KeyRef
from hsm.soft import SoftHsm
from ledger import events as ev
from ledger.core import QueuedReversal
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from messages.bank import SavingsDebit
from messages.pretty import mask_pan
from simulators.bank import BankIssuer, IssuerRules
from switch.bank.link import BankLinkClient, LinkDown, OutboundSettings
from switch.bank.observe import BankMetrics, LinkEvents, SafEvents
from switch.bank.saf import SafSender, SafSettings, SqliteReversalQueue
from tests.support.bank import BANK
from tests.support.bank_link import CENTRE, PAN, keys, run, until
from tests.support.daemon import now


def client(
    hsm: SoftHsm, zak: KeyRef, port: int, timeout_s: float = 0.5, metrics: BankMetrics | None = None
) -> BankLinkClient:
    settings = OutboundSettings(
        "127.0.0.1", port, CENTRE, timeout_s=timeout_s, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    if metrics is None:
        return BankLinkClient(settings, hsm, zak, clock=now)
    events = LinkEvents(BANK, metrics)
    on_drop = functools.partial(metrics.count_drop, BANK)
    return BankLinkClient(settings, hsm, zak, clock=now, on_drop=on_drop, events=events)


def debit(link: BankLinkClient, amount_fen: int, **envelope: str) -> SavingsDebit:
    values = {**link.envelope(), **envelope}
    return SavingsDebit(**values, pan=PAN, amount_fen=amount_fen, pin_block=bytes(8))


def outbound_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "medswitch.bank.out"]
    assert lines and not any(PAN in line for line in lines)  # card numbers masked
    return lines


def test_link_matches_times_out_and_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "medswitch.bank.out")

    async def scenario() -> None:
        hsm, zak = await keys()
        bank = BankIssuer(hsm, zak, IssuerRules(decline_above_fen=10_000))
        await bank.start()
        port = bank.port
        registry = CollectorRegistry()
        link = client(hsm, zak, port, metrics=BankMetrics(registry))
        link.start()
        try:
            assert await link.wait_up(5)
            assert bank.received[0].mti == "0800"  # signed on when connected
            replies = await asyncio.gather(
                link.request(debit(link, 500)), link.request(debit(link, 20_000))
            )
            assert [r.response_code for r in replies] == ["00", "51"]
            bank.rules = IssuerRules(delay_s=0.8)
            slow = debit(link, 700)
            with pytest.raises(TimeoutError):
                await link.request(slow)
            await until(lambda: link.unmatched == 1)  # the late answer, logged and dropped
            late = {"bank": BANK, "reason": "late"}
            assert registry.get_sample_value("medswitch_bank_responses_dropped_total", late) == 1
            answered = {"bank": BANK, "type": "debit", "response_code": "51"}
            assert registry.get_sample_value("medswitch_bank_requests_total", answered) == 1
            # a line for each request sent, each response (its code), the timeout: PAN masked
            lines = outbound_log(caplog)
            masked = f"pan={mask_pan(PAN)}"
            for stan, code in ((r.stan, r.response_code) for r in replies):
                assert any(f"sent 0200 debit stan={stan} {masked}" in x for x in lines), lines
                wanted = f"response 0210 debit stan={stan} code={code} {masked}"
                assert any(wanted in line for line in lines), lines
            assert any(f"debit stan={slow.stan} timed out" in line for line in lines), lines
            bank.rules = IssuerRules()
            await bank.close()  # the bank goes away
            await until(lambda: not link.up)
            with pytest.raises(LinkDown):
                await link.request(debit(link, 100))
            await bank.start(port=port)
            assert await link.wait_up(5) and link.connects == 2
            assert (await link.request(debit(link, 100))).response_code == "00"
        finally:
            await link.close()
            await bank.close()

    run(scenario())


class Delays(SafEvents):
    """The backoff of each unacknowledged attempt, as the sender chose it."""

    def __init__(self) -> None:
        super().__init__(BANK)
        self.delays: list[float] = []

    def retried(self, key: str, stan: str, code: str, attempts: int, delay_s: float) -> None:
        self.delays.append(delay_s)
        super().retried(key, stan, code, attempts, delay_s)


def test_a_queued_reversal_is_delivered_once_across_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "medswitch.bank.out")

    async def scenario() -> None:
        database = tmp_path / "medswitch.db"
        upgrade_sqlite(database)
        ledger = SqliteLedger.open(database)
        hsm, zak = await keys()
        bank = BankIssuer(hsm, zak, IssuerRules(drop_reversal_replies=1))
        await bank.start()
        port = bank.port
        link = client(hsm, zak, port, timeout_s=0.3)
        link.start()
        fast = SafSettings(backoff_initial_s=0.05, poll_s=0.05)
        events = Delays()  # the jitter's draw half way: 5 % off the 0.05 s backoff
        saf = SafSender(SqliteReversalQueue(database), link, BANK, fast, events, draw=lambda: 0.5)
        try:
            assert await link.wait_up(5)
            # A counter's EP load forwarded as a savings debit, keeping the counter's F32/F7/F11.
            original = debit(link, 3_000, acquirer_id=BANK, stan="000042")
            assert (await link.request(original)).response_code == "00"
            assert sum(bank.applied.values()) == 3_000
            await bank.close()  # outage
            key = f"bank|{BANK}|{original.transmitted}|{original.stan}|0200"
            attempt = ev.load(key, "a1b2c3d4", "3100000000000001", ev.Purse.EP, 5, 3_000, BANK)
            queued = QueuedReversal(attempt.resolve_id, BANK, attempt.reference, 3_000)
            assert await ledger.queue_reversal(queued)
            saf.start()
            await asyncio.sleep(0.3)  # the link is down: nothing goes, nothing is lost
            assert [p.item.key for p in await saf.queue.pending(BANK)] == [queued.key]
            await bank.start(port=port)
            # the row is acknowledged first, then its line is logged: wait for both
            acknowledged = " acknowledged code=00"
            await until(
                lambda: _done(database) and any(acknowledged in x for x in outbound_log(caplog))
            )
            sent = [r for r in bank.received if r.mti.startswith("04")]
            reversals = [r.mti for r in sent]
            assert reversals == ["0420", "0421"]  # the first answer was lost: repeated
            assert events.delays == [pytest.approx(0.0475)]
            first, repeat = (r.typed for r in sent)  # a repeat keeps its F11 and F7
            assert (repeat.stan, repeat.transmitted) == (first.stan, first.transmitted)
            lines = outbound_log(caplog)  # each attempt, its answer lost, then acknowledged
            for mti in reversals:
                wanted = f"sent {mti} reversal stan={first.stan}"
                assert sum(wanted in line for line in lines) == 1, lines
            assert any(f"stan={first.stan} not acknowledged" in line for line in lines), lines
            assert any(f"stan={first.stan} acknowledged code=00" in line for line in lines)
            assert bank.applied == {}  # reversed once
            assert await saf.drain() == 0 and len(bank.received) == len(reversals) + 3
        finally:
            await saf.close()
            await link.close()
            await bank.close()
            await ledger.close()

    run(scenario())


def _done(database: Path) -> bool:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT status FROM reversal_queue").fetchall()
    return rows == [("acknowledged",)]

"""Several outbound connections to one bank, over real sockets: requests spread round-robin over
the connections signed on, one failing connection does not stop the others, and it comes back
by itself; STANs stay unique across the connections."""

from __future__ import annotations

import asyncio

from messages.bank import SavingsDebit
from simulators.bank import BankIssuer
from switch.bank.link import BankLinkPool, OutboundSettings
from tests.support.bank_link import CENTRE, PAN, keys, run, until
from tests.support.daemon import now


def test_requests_spread_and_survive_one_failing_connection() -> None:
    async def scenario() -> None:
        hsm, zak = await keys()
        bank = BankIssuer(hsm, zak)
        await bank.start()
        settings = OutboundSettings(
            "127.0.0.1", bank.port, CENTRE, timeout_s=2.0, backoff_initial_s=0.05
        )
        pool = BankLinkPool.open(settings, hsm, zak, now, 3)
        pool.start()

        async def debits(count: int) -> list[str]:
            requests = [
                SavingsDebit(**pool.envelope(), pan=PAN, amount_fen=100 + i, pin_block=bytes(8))
                for i in range(count)
            ]
            replies = await asyncio.gather(*(pool.request(r) for r in requests))
            return [reply.response_code for reply in replies]

        try:
            await until(lambda: all(c.up for c in pool.clients))
            assert await debits(9) == ["00"] * 9
            assert [c.sent for c in pool.clients] == [3, 3, 3]  # spread evenly

            assert bank.drop_connection()  # one line fails
            await until(lambda: not all(c.up for c in pool.clients))
            sent = [c.sent for c in pool.clients]
            assert await debits(6) == ["00"] * 6  # the others carry the traffic
            moved = [
                after - before
                for after, before in zip([c.sent for c in pool.clients], sent, strict=True)
            ]
            assert sum(moved) == 6 and moved.count(0) == 1

            await until(lambda: all(c.up for c in pool.clients))  # it reconnects by itself
            assert await debits(3) == ["00"] * 3
            stans = [r.typed.stan for r in bank.received if isinstance(r.typed, SavingsDebit)]
            assert len(stans) == len(set(stans)) == 18
            assert sum(bank.applied.values()) == sum(100 + i for n in (9, 6, 3) for i in range(n))
        finally:
            await pool.close()
            await bank.close()

    run(scenario())

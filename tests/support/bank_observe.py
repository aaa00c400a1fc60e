"""What the daemon's HTTP side shows of its bank links: a /metrics sample by name and labels,
the /readyz status, and queueing a reversal as the EP load handlers do."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ledger import events as ev
from ledger.core import QueuedReversal
from switch.app import App
from tests.support.bank import BANK

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: App) -> Samples:
    """Every sample of GET /metrics, by (name, labels)."""
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.http_port}/metrics"
        async with session.get(url) as response:
            assert response.status == 200
            text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def readyz(app: App) -> int:
    url = f"http://127.0.0.1:{app.http_port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def queue_reversal(app: App, stan: str, amount_fen: int, transmitted: str) -> str:
    """A reversal queued for a counter's EP load forwarded as a savings debit (F32 the bank's,
    F7 ``transmitted``, F11 ``stan``), as routing.bank_ep queues one; its queue key."""
    message_key = f"bank|{BANK}|{transmitted}|{stan}|0200"
    attempt = ev.load(message_key, "a1b2c3d4", "3100000000000001", ev.Purse.EP, 5, amount_fen, BANK)
    item = QueuedReversal(attempt.resolve_id, BANK, attempt.reference, amount_fen)
    assert await app.ledger.queue_reversal(item)
    return item.key

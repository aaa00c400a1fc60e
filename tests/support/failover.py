"""The daemon against a PostgreSQL that fails or is shared: a demo deployment in a PostgreSQL
database (its URL may name several hosts), `medswitch serve` on it as a process (optionally
inside a network namespace), and POS that do what a terminal does with a 96 — send the same
request again a moment later — recording every answer they get.

The traffic is the settlement load generator's (bench.bench_settle through bench.bench_workers):
cards loaded at a kiosk, PSAMs in the POS, bills submitted, every frame built before the load;
each POS settles a bill (0200) then confirms the card's debit (0220), one outstanding."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.bench_switch import stop
from bench.pos_side import Lanes, code_of
from ledger.pg_bridge import split_url
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from tests.support.workers import SCRIPT

REPLY_TIMEOUT_S = 30.0  # a reply, 96 included, comes within the daemon's own deadline
RETRY_S = 0.05  # a POS sends a request answered 96 again after this pause
TRIES = 600  # per request: bounds an outage the drill rides out at about 30 s
START_LINES = 50  # lines a starting daemon may print before "medswitch serving"


@dataclass(frozen=True)
class Listen:
    host: str
    terminal_port: int
    http_port: int


@contextlib.contextmanager
def serving(
    home: Path,
    url: str,
    listen: Listen,
    *,
    prefix: Sequence[str] = (),
    log: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """`medswitch serve` on ``url`` (``prefix``: e.g. ``ip netns exec NAME``; ``settings``:
    more MEDSWITCH_* variables), its log lines in ``log``; stopped (SIGTERM, then SIGKILL)."""
    env = {
        **os.environ,
        **(settings or {}),
        "MEDSWITCH_HOME": str(home),
        "MEDSWITCH_DATABASE_URL": url,
        "MEDSWITCH_TERMINAL_HOST": listen.host,
        "MEDSWITCH_TERMINAL_PORT": str(listen.terminal_port),
        "MEDSWITCH_HTTP_HOST": listen.host,
        "MEDSWITCH_HTTP_PORT": str(listen.http_port),
        "MEDSWITCH_HIS_RATE_PER_S": "0",  # bills are prepared faster than a HIS submits them
    }
    log = log or home / f"serve-{listen.host}-{listen.terminal_port}.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [*prefix, SCRIPT, "serve"], env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    try:
        assert process.stdout is not None
        for _ in range(START_LINES):
            line = process.stdout.readline()
            if "medswitch serving" in line or not line:
                break
        assert "medswitch serving" in line, f"the daemon did not start; its log:\n{_tail(log)}"
        yield process
    finally:
        stop(process)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@dataclass
class Seen:
    """What the POS saw: every response code of each request, in order; the final replies."""

    codes: list[list[list[str]]]
    replies: list[list[bytes | None]]
    fault: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first 96
    fault_times: list[float] = field(default_factory=list)  # loop time of each 96 (or none)

    def all_codes(self) -> list[str]:
        return [code for lane in self.codes for request in lane for code in request]


async def drive(
    host: str,
    port: int,
    lanes: Lanes,
    after: int,
    event: Callable[[Seen], Coroutine[Any, Any, None]],
    timeout_s: float = 60.0,
) -> Seen:
    """Each POS sends its requests in order, one outstanding; a request answered 96 (or left
    unanswered by a closed connection) is sent again after a pause, at most TRIES times. Once
    ``after`` requests have been answered 00 (all POS together), ``event`` runs alongside.
    AssertionError when it all takes more than ``timeout_s``, with what the POS saw."""
    seen = Seen([[[] for _ in lane] for lane in lanes], [[None] * len(lane) for lane in lanes])
    approved = 0
    happening: list[asyncio.Task[None]] = []

    async def pos(number: int) -> None:
        nonlocal approved
        connection: Connection | None = None
        try:
            for index, (payload, _) in enumerate(lanes[number]):
                for _ in range(TRIES):
                    reply, connection = await _exchange(connection, host, port, payload)
                    code = code_of(reply) if reply is not None else "none"
                    seen.codes[number][index].append(code)
                    if code not in ("96", "none"):
                        break
                    seen.fault.set()
                    seen.fault_times.append(asyncio.get_running_loop().time())
                    await asyncio.sleep(RETRY_S)
                seen.replies[number][index] = reply
                if code == "00":
                    approved += 1
                    if approved == after:
                        happening.append(asyncio.create_task(event(seen)))
        finally:
            if connection is not None:
                connection[1].close()

    try:
        await asyncio.wait_for(asyncio.gather(*(pos(n) for n in range(len(lanes)))), timeout_s)
        for task in happening:
            await task
    except TimeoutError:
        found = summary(seen)
        raise AssertionError(f"the POS were not all answered in {timeout_s} s: {found}") from None
    return seen


def summary(seen: Seen) -> str:
    """The response codes the POS saw, counted; how many requests were never answered 00."""
    counts: dict[str, int] = {}
    for code in seen.all_codes():
        counts[code] = counts.get(code, 0) + 1
    waiting = sum(r is None or code_of(r) != "00" for lane in seen.replies for r in lane)
    return f"codes {counts}, {waiting} requests without a 00"


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _exchange(
    connection: Connection | None, host: str, port: int, payload: bytes
) -> tuple[bytes | None, Connection | None]:
    """One request and its reply on ``connection`` (opened if None); no reply and no
    connection when it ended or could not be opened."""
    decoder = FrameDecoder(LengthFormat.BINARY2)
    try:
        if connection is None:
            connection = await asyncio.open_connection(host, port)
        reader, writer = connection
        writer.write(encode_frame(payload, LengthFormat.BINARY2))
        for _ in range(1000):  # a reply is a few reads at most
            data = await asyncio.wait_for(reader.read(65536), timeout=REPLY_TIMEOUT_S)
            if not data:
                break
            frames = decoder.feed(data)
            if frames:
                return frames[0], connection
    except (ConnectionError, OSError):
        pass
    if connection is not None:
        connection[1].close()
    return None, None


async def check_ledger(url: str, advices: Sequence[str]) -> None:
    """Each advice's card-debit transfer is in the ledger exactly once, and there are no
    other card-debit transfers; the accounts balance and each one's totals are its transfers'."""
    dsn, schema = split_url(url)
    settings = {"search_path": schema} if schema else {}
    connection = await asyncpg.connect(dsn, server_settings=settings)
    try:
        rows = await connection.fetch(
            "SELECT id, count(*) FROM transfers WHERE id = ANY($1::text[]) GROUP BY id",
            list(advices),
        )
        counts = dict.fromkeys(advices, 0) | {row[0]: row[1] for row in rows}
        assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
        debits = await connection.fetchval(
            "SELECT count(*) FROM transfers WHERE reference LIKE 'card-debit|%'"
        )
        assert debits == len(advices)
        off = await connection.fetch(
            "SELECT a.id FROM accounts a"
            " LEFT JOIN (SELECT debit_account_id AS id, sum(amount_fen) AS fen FROM transfers"
            "   GROUP BY 1) d ON d.id = a.id"
            " LEFT JOIN (SELECT credit_account_id AS id, sum(amount_fen) AS fen FROM transfers"
            "   GROUP BY 1) c ON c.id = a.id"
            " WHERE a.debits_posted <> coalesce(d.fen, 0) OR a.credits_posted <> coalesce(c.fen, 0)"
        )
        assert not off, [row[0] for row in off]
        total = await connection.fetchrow(
            "SELECT sum(debits_posted) AS d, sum(credits_posted) AS c FROM accounts"
        )
        assert total["d"] == total["c"]
    finally:
        await connection.close()

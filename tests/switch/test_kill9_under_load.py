"""kill -9 of `medswitch serve` under load (issue 22, "Must show"): a demo deployment on the
embedded SQLite file with its default writer process; a few POS settle HIS bills (0200) and
confirm the cards' debits (0220) concurrently; the daemon is SIGKILLed in the middle, started
again on the same home, and every request — answered or not — is sent again; it is killed again
while that runs, started again, and everything is sent once more. Then:

- every advice answered 00 before a kill is in the ledger (its card-debit transfer) at once
  after the restart, before anything is re-sent;
- a re-sent request answered before gets its original reply byte for byte (the reply cache is
  durable on SQLite, in its own file beside the ledger's); one never answered is answered 00 at
  the end;
- each advice's card-debit transfer is in the ledger exactly once, and there are as many
  card-debit transfers as advices: nothing lost, nothing doubled;
- the accounts sum to zero and each account's totals are its transfers'.

The requests are the load generator's (bench.bench_settle): cards loaded at a kiosk, PSAMs in
the POS, bills submitted over the HIS API, every frame built before the load starts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import uvloop

from bench.bench_settle import demo_home, prepare
from bench.pos_side import Lanes, code_of, debit_ids
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from tests.support.serve import serving

POS = 6
BILLS = 150  # a settlement and an advice each: 300 requests over 6 POS
KILL_AFTER = 150  # answered requests, then SIGKILL
AGAIN_KILL_AFTER = 240  # answered while everything is re-sent (the first 150 from the cache)
REPLY_TIMEOUT_S = 30.0


Replies = list[list[bytes | None]]


async def drive(port: int, lanes: Lanes, after: int, kill: Callable[[], None]) -> Replies:
    """Each POS sends its requests in order, one outstanding, on its own connection; once
    ``after`` replies have come in (all POS together), ``kill`` runs. A POS whose connection
    ends stops there; the replies it got, None for the rest."""
    replies: Replies = [[None] * len(lane) for lane in lanes]
    answered = 0

    async def pos(number: int) -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = FrameDecoder(LengthFormat.BINARY2)
        try:
            for index, (payload, _) in enumerate(lanes[number]):
                writer.write(encode_frame(payload, LengthFormat.BINARY2))
                reply = await _one_frame(reader, decoder)
                if reply is None:
                    return
                replies[number][index] = reply
                answered += 1
                if answered == after:
                    kill()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(pos(n) for n in range(len(lanes)))), timeout=120)
    return replies


async def _one_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> bytes | None:
    for _ in range(1000):  # a reply is a few reads at most
        data = await asyncio.wait_for(reader.read(65536), timeout=REPLY_TIMEOUT_S)
        if not data:
            return None
        frames = decoder.feed(data)
        if frames:
            return frames[0]
    raise AssertionError("no whole reply in 1000 reads")


def transfer_counts(database: Path, ids: list[str]) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        counts = dict.fromkeys(ids, 0)
        for (found,) in db.execute(
            f"SELECT id FROM transfers WHERE id IN ({','.join('?' * len(ids))})", ids
        ):
            counts[found] += 1
        return counts


def check_ledger(database: Path, advices: int) -> None:
    """As many card-debit transfers as advices; accounts summing to zero, each one's totals
    equal to its transfers'."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        (debits,) = db.execute(
            "SELECT COUNT(*) FROM transfers WHERE reference LIKE 'card-debit|%'"
        ).fetchone()
        assert debits == advices
        debited, credited = db.execute(
            "SELECT SUM(debits_posted), SUM(credits_posted) FROM accounts"
        ).fetchone()
        assert debited == credited
        posted = dict.fromkeys((r[0] for r in db.execute("SELECT id FROM accounts")), (0, 0))
        for account, total in db.execute(
            "SELECT debit_account_id, SUM(amount_fen) FROM transfers GROUP BY debit_account_id"
        ):
            posted[account] = (total, posted[account][1])
        for account, total in db.execute(
            "SELECT credit_account_id, SUM(amount_fen) FROM transfers GROUP BY credit_account_id"
        ):
            posted[account] = (posted[account][0], total)
        for account, debits_fen, credits_fen in db.execute(
            "SELECT id, debits_posted, credits_posted FROM accounts"
        ):
            assert posted[account] == (debits_fen, credits_fen), account


def check_durable(database: Path, advices: dict[tuple[int, int], str], known: Replies) -> None:
    """Every advice answered 00 so far has its card-debit transfer in the ledger."""
    answered = [
        advices[n, i] for (n, i) in advices if (r := known[n][i]) is not None and code_of(r) == "00"
    ]
    assert answered
    counts = transfer_counts(database, answered)
    assert set(counts.values()) == {1}, counts  # committed before its 00 went out


def check_consistent(known: Replies, again: Replies) -> Replies:
    """A request answered before and again got the same reply, byte for byte; the replies
    known now (the first of each)."""
    merged: Replies = []
    for number, lane in enumerate(known):
        for index, first in enumerate(lane):
            later = again[number][index]
            if first is not None and later is not None:
                assert later == first, (number, index)
        merged.append([a if a is not None else b for a, b in zip(lane, again[number], strict=True)])
    return merged


def test_kill9_under_load_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    home = tmp_path
    maker = demo_home(home, cardholders=8)
    database = home / "medswitch.db"
    with serving(home) as (daemon, ports):
        plan = argparse.Namespace(terminals=POS, bills=BILLS)
        lanes, _ = uvloop.run(prepare(home, ports.terminal, ports.http, maker, plan))
        first = uvloop.run(drive(ports.terminal, lanes, KILL_AFTER, daemon.kill))
        assert daemon.wait(timeout=30) == -signal.SIGKILL
    total = sum(len(lane) for lane in lanes)
    assert KILL_AFTER <= sum(r is not None for lane in first for r in lane) < total
    advices = debit_ids(lanes)
    with serving(home) as (daemon, ports):  # everything re-sent, and killed again meanwhile
        check_durable(database, advices, first)
        second = uvloop.run(drive(ports.terminal, lanes, AGAIN_KILL_AFTER, daemon.kill))
        assert daemon.wait(timeout=30) == -signal.SIGKILL
    known = check_consistent(first, second)
    with contextlib.closing(sqlite3.connect(home / "medswitch-replies.db")) as db:
        (kept,) = db.execute("SELECT COUNT(*) FROM replies").fetchone()
    assert kept >= KILL_AFTER  # the replies' own file (not the ledger's) had them after kill -9
    assert sum(r is not None for lane in known for r in lane) < total  # killed in the middle
    with serving(home) as (_, ports):
        check_durable(database, advices, known)
        last = uvloop.run(drive(ports.terminal, lanes, -1, lambda: None))
    check_consistent(known, last)
    for number, lane in enumerate(last):
        for index, reply in enumerate(lane):
            assert reply is not None, (number, index)
            if known[number][index] is None:  # never answered before: handled now, once
                assert code_of(reply) == "00", (number, index, code_of(reply))
    counts = transfer_counts(database, list(advices.values()))
    assert set(counts.values()) == {1}, counts
    check_ledger(database, len(advices))

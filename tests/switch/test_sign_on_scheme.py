"""The sign-on a stranger cannot use to end a live session (specs/terminal-interface.md,
sign-on): new keys are pending until a request MACed under them arrives; the current keys and
batch serve until then; sign-ons per terminal are limited (65); the session-key store stays
bounded however many sign-ons arrive."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import uvloop

from hsm.interface import MacAlgorithm, SignOnKeys
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from messages.outcome import Outcome
from messages.terminal import BalanceInquiry, Echo, SignOn, SignOnReply
from switch.metrics import Metrics
from switch.pg_stores import RoutedKeyStore
from switch.session_store import SqliteSessionKeys
from switch.sessions import Sessions, SignOnLimit
from tests.support.daemon import (
    Daemon,
    Terminal,
    make_database,
    new_hsm,
    now,
    running_daemon,
)

TERMINALS = {"POS00001": "pos"}


async def sign_on(terminal: Terminal) -> SignOnReply:
    reply = await terminal.exchange(SignOn(**terminal.envelope()), mac=False)
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply.response_code
    terminal.keys = await terminal.hsm.accept_sign_on(
        terminal.tmk, reply.keys.build(), f"pos/{terminal.terminal_id}", now=now()
    )
    terminal.batch = reply.batch
    return reply


async def forged_sign_on(daemon: Daemon, terminal_id: str) -> str:
    """An unsigned 0800 for someone else's terminal, from another connection: what anyone
    who knows a terminal id can send."""
    async with daemon.terminal(f"X{terminal_id[1:]}") as stranger:
        stranger.terminal_id = terminal_id
        reply = await stranger.exchange(SignOn(**stranger.envelope()), mac=False)
        return reply.response_code


def run(tmp_path: Path, scenario, backend: str = "sqlite") -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running_daemon(tmp_path, TERMINALS, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=60))


def test_a_forged_sign_on_does_not_end_the_live_session(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            for _ in range(3):  # answered 00 with keys only the TMK's holder can read
                assert await forged_sign_on(daemon, "POS00001") == "00"
            echo = await pos.exchange(Echo(**pos.envelope()))  # same keys, same batch
            assert echo.response_code == "00"
            assert echo.mac is not None  # under the live MAK, checked by exchange()

    run(tmp_path, scenario, backend)


def test_the_terminals_own_sign_on_takes_effect_at_its_first_request(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            old, pos.keys = pos.keys, None  # as a POS does: the 0810 is not under the old MAK
            reply = await sign_on(pos)
            assert reply.mac is not None  # the 0810 is MACed under the keys it carries
            assert await forged_sign_on(daemon, "POS00001") == "00"  # after it: newer keys
            echo = await pos.exchange(Echo(**pos.envelope()))  # MACed under the new keys
            assert echo.response_code == "00" and pos.batch == reply.batch
            pos.keys = old  # the replaced keys serve no more
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "A0"

    run(tmp_path, scenario, backend)


def test_sign_ons_beyond_the_limit_are_answered_65(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        limit = daemon.app.sessions.limit.per_minute
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            codes = [await forged_sign_on(daemon, "POS00001") for _ in range(limit + 2)]
            assert codes == ["00"] * (limit - 1) + [Outcome.COUNT_LIMIT.code] * 3
            refused = await pos.exchange(SignOn(**pos.envelope()), mac=False)
            assert refused.response_code == "65" and refused.mac is None
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
        counted = daemon.app.metrics.sign_ons
        assert counted.labels("refused")._value.get() == 4
        assert counted.labels("issued")._value.get() == limit
        assert counted.labels("proven")._value.get() == 1

    run(tmp_path, scenario)


def test_an_unsigned_terminal_proves_its_first_sign_on(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "22"
            await sign_on(pos)
            assert await forged_sign_on(daemon, "POS00001") == "00"
            inquiry = BalanceInquiry(**pos.envelope(), pan="6200000000000000001")
            assert (await pos.exchange(inquiry, bad_mac=True)).response_code == "A0"
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"

    run(tmp_path, scenario)


def test_two_thousand_sign_ons_leave_the_store_bounded(tmp_path: Path) -> None:
    """2,000 unproven sign-ons of one terminal: its sets and key blocks stay at
    ``pending_max`` (none in the key ceremonies' store), the versions go on rising (never
    reused), and a lookup reads the terminal's few rows only; then a request under the newest
    keys makes them current and leaves one set."""

    async def main() -> None:
        database = tmp_path / "medswitch.db"
        make_database(database, {"POS00001": "pos", "POS00002": "pos"})
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute("PRAGMA journal_mode = WAL")  # as the daemon's ledger sets it
        store, files = SqliteSessionKeys(database), MemoryKeyStore()
        hsm = new_hsm(RoutedKeyStore(store, files))
        limit = SignOnLimit(per_minute=10_000, pending_max=6)
        sessions = Sessions(files, store, limit)
        sessions.count_into(Metrics().sign_ons)
        tmk = await hsm.generate_key("tmk/POS00001", KeyUsage.TMK, now=now())
        for _ in range(2_000):
            assert sessions.admit("POS00001", now())
            keys = await hsm.sign_on(tmk, 60, "term/POS00001", now=now())
            await sessions.offer("POS00001", keys)
        assert [k.alias for k in await files.list()] == ["tmk/POS00001"]
        sets = await store.key_sets("POS00001")
        assert sets.current is None and len(sets.pending) == 6
        assert [k.mak.version for k in sets.pending] == list(range(2_000, 1_994, -1))
        with contextlib.closing(sqlite3.connect(database)) as db:
            assert db.execute("SELECT count(*) FROM session_sets").fetchone() == (6,)
            assert db.execute("SELECT count(*) FROM session_keys").fetchone() == (18,)
            plan = " ".join(
                str(row)
                for row in db.execute(
                    "EXPLAIN QUERY PLAN SELECT * FROM session_sets WHERE terminal_id = ?", ("P",)
                )
            )
            assert "USING INDEX" in plan or "USING PRIMARY KEY" in plan  # no scan, no sort
        assert len(await store.list("term/POS00001/MAK")) == 6  # the HSM's next version: 6 rows
        newest = sets.pending[0]
        mac = await hsm.generate_mac(newest.mak, MacAlgorithm.CUP_ECB, b"request")
        assert await sessions.proven("POS00001", hsm, b"request", mac) == newest
        restarted = Sessions(files, store, limit)
        assert await restarted.get("POS00001") == newest
        with contextlib.closing(sqlite3.connect(database)) as db:
            assert db.execute("SELECT count(*) FROM session_sets").fetchone() == (1,)
            assert db.execute("SELECT count(*) FROM session_keys").fetchone() == (3,)
            assert (
                db.execute("SELECT batch_no FROM terminals WHERE id = 'POS00001'").fetchone()[0]
                == 2
            )  # one batch moved, by the one set proven
        assert _value(sessions, "unproven") == 1_999 and _value(sessions, "proven") == 1

    asyncio.run(asyncio.wait_for(main(), timeout=120))


def _value(sessions: Sessions, outcome: str) -> float:
    assert sessions._counted is not None
    return float(sessions._counted.labels(outcome)._value.get())


def test_older_pending_keys_still_prove_and_newer_ones_stay_pending(tmp_path: Path) -> None:
    """The terminal's sign-on, then a forged one: the terminal's (older) keys prove; the
    forged set stays pending (unreadable without the TMK) until a later sign-on drops it."""

    async def main() -> None:
        database = tmp_path / "medswitch.db"
        make_database(database, {"POS00001": "pos"})
        store, files = SqliteSessionKeys(database), MemoryKeyStore()
        hsm = new_hsm(RoutedKeyStore(store, files))
        sessions = Sessions(files, store)
        tmk = await hsm.generate_key("tmk/POS00001", KeyUsage.TMK, now=now())
        mine = await hsm.sign_on(tmk, 60, "term/POS00001", now=now())
        await sessions.offer("POS00001", mine)
        forged = await hsm.sign_on(tmk, 60, "term/POS00001", now=now())
        await sessions.offer("POS00001", forged)
        mac = await hsm.generate_mac(mine.mak, MacAlgorithm.CUP_ECB, b"request")
        proven = await sessions.proven("POS00001", hsm, b"request", mac)
        assert isinstance(proven, SignOnKeys) and proven.mak == mine.mak
        sets = await store.key_sets("POS00001")
        assert sets.current is not None and sets.current.mak == mine.mak
        assert [k.mak for k in sets.pending] == [forged.mak]
        assert await sessions.proven("POS00001", hsm, b"request", b"00000000") is (
            Outcome.MAC_ERROR
        )

    asyncio.run(main())

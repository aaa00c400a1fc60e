"""Retransmissions after a restart on the embedded SQLite deployment: the reply cache is durable
in its own file beside the ledger's (switch.reply_file), so a request resent to a restarted
daemon gets its original reply byte for byte — here a 0200 whose bill has since completed, which
handled afresh would answer 12. (After a kill -9: tests/switch/test_kill9_under_load.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import uvloop

from hsm.keystore import MemoryKeyStore
from ledger.demo import init_demo
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from ledger.writer.process import ProcessWriter
from messages.outcome import Outcome
from messages.private import BillData
from messages.terminal import DebitAdvice
from switch.app import App, open_app
from switch.config import Config, HttpConfig, ListenConfig
from switch.demo.keys import demo_personal_keys
from switch.reply_file import FileReplyCache, replies_file
from switch.sessions import Sessions
from tests.support.daemon import Daemon, Terminal, new_hsm, now
from tests.support.kiosk import (
    issue_card_with_keys,
    issue_psam,
    kiosk_load,
    pos_purchase,
    signed_on_kiosk,
)
from tests.support.settlement import his_submit, medical_reference, settle

DIGEST = b"d" * 16


async def _started(tmp: Path, hsm, store: MemoryKeyStore) -> App:  # type: ignore[no-untyped-def]
    config = Config(
        home=str(tmp),
        database_url="",
        terminal=replace(ListenConfig(), port=0),
        http=HttpConfig(port=0),
    )
    app = await open_app(config, hsm, Sessions(store), clock=now)
    await app.start()
    return app


async def _scenario(tmp: Path) -> None:
    personal = await demo_personal_keys(tmp)
    await asyncio.to_thread(init_demo, tmp / "medswitch.db", 3, personal=personal)
    store = MemoryKeyStore()
    hsm = new_hsm(store)
    app = await _started(tmp, hsm, store)
    try:
        daemon = Daemon(app, hsm, store, tmp)
        on_file, psam_row = daemon.first_card(), daemon.first_psam()
        token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
        body = {
            "his_bill_no": "HIS-R1",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [{"code": "B02", "quantity": 10, "unit_price_fen": 15000}],
        }
        submitted = await asyncio.to_thread(
            his_submit, app.http_port, psam_row.institution_id, token, body
        )
        bill_id, personal = submitted["bill_id"], submitted["split"]["personal_account_fen"]
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal("K0000001") as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, personal + 1_000)
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            reply, _ = await settle(pos, daemon, on_file.card_no, bill_id, 150_000)
            assert reply.response_code == "00", reply
            settlement = pos.sent
            original = await pos.send(settlement)  # the reply as the cache holds it
            data = pos_purchase(conn, psam, on_file, personal, now().replace(tzinfo=None))
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            advice = DebitAdvice(
                **pos.envelope(), pan=on_file.card_no, amount_fen=personal, card=data, bill=bill
            )
            assert (await pos.exchange(advice)).response_code == "00"  # the bill completes
            session = (pos.keys, pos.batch, pos.institution_id, pos.tmk)
    finally:
        await app.stop()
    with sqlite3.connect(tmp / "medswitch-replies.db") as db:  # the reply is in its file
        assert db.execute("SELECT count(*) FROM replies").fetchone()[0] >= 3
    with sqlite3.connect(tmp / "medswitch.db") as db:  # and no longer in the ledger's
        assert db.execute("SELECT count(*) FROM response_cache").fetchone()[0] == 0

    app = await _started(tmp, hsm, store)  # the restart: a new process's memory
    try:
        assert isinstance(app.stores.reply_cache(), FileReplyCache)
        reader, writer = await asyncio.open_connection("127.0.0.1", app.terminal_port)
        try:
            keys_, batch, institution, tmk = session
            again = Terminal(psam_row.terminal_id, hsm, tmk, reader, writer, keys_, batch)
            again.institution_id = institution
            assert await again.send(settlement) == original  # byte for byte: not 12
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await app.stop()


def test_a_retransmission_after_a_restart_gets_the_original_reply(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_scenario(tmp_path), timeout=120))


async def _cache_run(
    path: Path, keys: list[str], *, entries_max: int = 10
) -> dict[str, bytes | Outcome | None]:
    """A daemon's run, as far as the cache goes: the ledger on ``path`` with its writer process,
    the cache beside it; each key looked up, and answered (``reply KEY``) if it was not known."""
    ledger = SqliteLedger.open(path, process=True)
    try:
        assert isinstance(ledger.writer, ProcessWriter)
        await ledger.writer.attach()
        cache = FileReplyCache(path, ledger.writer, entries_max=entries_max)
        try:
            found = {key: await cache.earlier(key, DIGEST) for key in keys}
            for key in keys:
                if found[key] is None:
                    cache.begin(key, DIGEST)
                    reply = asyncio.sleep(0, result=f"reply {key}".encode())
                    assert await cache.remember((key, DIGEST), reply) == f"reply {key}".encode()
            return found
        finally:
            await cache.close()
    finally:
        await ledger.close()


def test_the_replies_file_is_read_by_the_next_run_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = asyncio.run(_cache_run(path, ["a", "b", "c"]))
    assert set(first.values()) == {None}
    assert replies_file(path) == tmp_path / "ledger-replies.db"
    assert replies_file(path).stat().st_mode & 0o777 == 0o600  # replies carry card data
    again = asyncio.run(_cache_run(path, ["a", "b", "c", "d"]))
    assert again == {"a": b"reply a", "b": b"reply b", "c": b"reply c", "d": None}
    asyncio.run(_cache_run(path, ["e"], entries_max=2))  # its first write purges all but 2
    with sqlite3.connect(replies_file(path)) as db:
        kept = [row[0] for row in db.execute("SELECT message_key FROM replies")]
    assert "e" in kept and len(kept) <= 2, kept


def test_replies_of_the_ledgers_file_before_the_upgrade_are_moved_and_answered(
    tmp_path: Path,
) -> None:
    """Before the replies had a file of their own they were rows of the ledger's
    ``response_cache`` (request digest, then reply): a restart after the upgrade still answers
    their retransmissions, and the rows move to the replies file."""
    path = tmp_path / "medswitch.db"
    upgrade_sqlite(path)
    now_us = time.time_ns() // 1000
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO response_cache VALUES (?, ?, ?, ?)",
            [
                ("old", DIGEST + b"old reply", now_us - 10**6, now_us + 3600 * 10**6),
                ("gone", DIGEST + b"expired", now_us - 10**8, now_us - 10**6),
            ],
        )
    found = asyncio.run(_cache_run(path, ["old", "gone"]))
    assert found == {"old": b"old reply", "gone": None}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM response_cache").fetchone()[0] == 0
    assert asyncio.run(_cache_run(path, ["old", "gone"])) == {
        "old": b"old reply",
        "gone": b"reply gone",
    }
    with contextlib.closing(sqlite3.connect(replies_file(path))) as db:
        rows = dict(db.execute("SELECT message_key, response FROM replies").fetchall())
    assert rows == {"old": DIGEST + b"old reply", "gone": DIGEST + b"reply gone"}


def test_a_key_written_again_is_read_as_its_newest_row(tmp_path: Path) -> None:
    """A key whose row was no longer read (beyond the rows read at start) is handled afresh and
    written again: the next start reads the newer row."""
    from switch.reply_file import ReplyFile

    now_us = time.time_ns() // 1000
    file = ReplyFile(tmp_path / "r.db")
    try:
        file.store([("k", DIGEST + b"first"), ("j", DIGEST + b"other")], now_us, now_us + 10**9)
        file.store([("k", DIGEST + b"again")], now_us, now_us + 10**9)
        assert [(e.key, e.row) for e in file.load(now_us, 10)] == [
            ("j", DIGEST + b"other"),
            ("k", DIGEST + b"again"),
        ]
        assert file.purge(now_us + 2 * 10**9, 10) == 3  # all expired by then
    finally:
        file.close()


class NoLedger:
    """No ledger's writer: nothing to adopt from a ledger file that has no old table."""

    async def submit(self, op: object) -> object:
        raise AssertionError("not used")


def test_a_cancelled_reply_does_not_cancel_the_write_its_group_shares(tmp_path: Path) -> None:
    """The replies of one loop turn wait for one write: one of them cancelled while it runs
    leaves the others' wait (and the write) alone; that one ends cancelled after it."""
    path = tmp_path / "ledger.db"

    async def main() -> None:
        cache = FileReplyCache(path, NoLedger())
        await cache.load()
        held = threading.Event()
        busy = cache._run(lambda file: held.wait(10))  # the file's thread busy: the write waits
        try:
            works = []
            for key in ("a", "b", "c"):
                cache.begin(key, DIGEST)
                reply = asyncio.sleep(0, result=f"reply {key}".encode())
                works.append(asyncio.ensure_future(cache.remember((key, DIGEST), reply)))
            await asyncio.sleep(0.05)
            works[1].cancel()
            await asyncio.sleep(0.05)
            assert not any(work.done() for work in works)  # all three wait for the write
            held.set()
            await busy
            done = await asyncio.gather(*works, return_exceptions=True)
            assert done[0] == b"reply a" and done[2] == b"reply c"
            assert isinstance(done[1], asyncio.CancelledError)
        finally:
            held.set()
            await cache.close()
        with contextlib.closing(sqlite3.connect(replies_file(path))) as db:
            rows = dict(db.execute("SELECT message_key, response FROM replies").fetchall())
        assert rows == {key: DIGEST + f"reply {key}".encode() for key in "abc"}

    asyncio.run(asyncio.wait_for(main(), timeout=30))

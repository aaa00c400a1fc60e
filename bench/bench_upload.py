"""Batch-upload intake: offline card-debit records TAC-verified, deduplicated, kept on file and
posted, in records/s — the decoded records through :func:`routing.batch.intake` (windows of
records verified, then posted together so the ledger's group-commit writer makes one durable
commit per window, DESIGN §6), the same batch uploaded again (everything already posted), and
the same records over the wire as 0320 messages to a real `medswitch serve`.

    python -m bench.bench_upload [--records 100000] [--cards 2000] [--wire-records 20000]
                                 [--terminals 8] [--wire-purse ed|ep] [--cache-mib 0]
                                 [--no-freeze]

The ledger is SQLite (WAL, synchronous=FULL) in a temporary directory; every TAC is computed
before the timed phase from a card TAC master key formed from a random clear value. The decoded
records (all of them in memory at once, as no switch ever holds them) are moved out of the
garbage collector's reach before the timed phase (``gc.freeze``; ``--no-freeze`` keeps them in:
the collector then rescans them, ~15 % of the first upload's CPU); what the intake allocates is
collected as usual. Records are
ED purchases with no bill; the decoded intake runs without the medical core, so the person's
accumulators (the medical store's own transaction per record) are not counted there; the daemon
over the wire counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import secrets
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

from bench.bench_settle import drive_once
from bench.bench_switch import processes, report
from bench.pos_side import Lanes, Pos, sign_on, signed
from hsm import pboc
from hsm.des import Des, adjust_parity, kcv
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.mac import pboc_mac
from hsm.soft import SoftHsm
from ledger import events as ev
from ledger.core import Ledger, Transfer, new_account, transfer_id
from ledger.demo import init_demo
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.sqlite_ledger import SqliteLedger
from messages.outcome import Outcome
from messages.private import CardData, Purse
from messages.terminal import BatchUploadRecord
from routing.batch import UploadItem, intake
from routing.cardkeys import card_master_alias
from routing.context import CardRecord, RequestContext, TerminalRecord
from switch.demo import keys as demo_keys
from switch.demo import medical as demo_medical
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm

PSAM_NO = "000000000001"
INSTITUTION = "101320000000001"
TERMINAL = "P0000001"
BATCH = "000001"
FUNDED_FEN = 10**9  # each card's shadow before the batch: no review for a shadow below zero


@dataclass(frozen=True)
class Cards:
    """A card directory over a fixed list (the daemon's is a point read of its database)."""

    by_pan: dict[str, CardRecord]

    def get(self, card_no: str) -> CardRecord | None:
        return self.by_pan.get(card_no)

    def psam_institution(self, psam_terminal_no: str) -> str | None:
        return INSTITUTION if psam_terminal_no == PSAM_NO else None

    def blacklist_version(self) -> int:
        return 0

    def blacklist_changes(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        return []


def make_cards(count: int) -> list[CardRecord]:
    return [
        CardRecord(f"621234{n:010d}", f"31{n:014d}", f"c{n}", 1, "active", dt.date(2035, 1, 1))
        for n in range(count)
    ]


def make_records(
    clear_tac_master: bytes,
    version: int,
    cards: list[CardRecord],
    count: int,
    when: dt.datetime,
    psam_no: str = PSAM_NO,
    purse: Purse = Purse.ED,
) -> list[UploadItem]:
    """Offline ED purchases with their cards' TACs (what a POS uploads)."""
    master = Des(clear_tac_master)
    tac_keys = {
        c.card_no: Des(pboc.tac_key(pboc.diversify(master, pboc.card_factor(c.serial_bytes))))
        for c in cards
    }
    psam = bytes.fromhex(psam_no)
    kind = pboc.TYPE_ED_PURCHASE if purse is Purse.ED else pboc.TYPE_EP_PURCHASE
    items = []
    for n in range(count):
        card = cards[n % len(cards)]
        amount = 100 + n % 900
        data = pboc.purchase_tac_data(amount, kind, psam, n + 1, when)
        record = CardData(
            app_serial=card.serial_bytes,
            purse=purse,
            key_version=version,
            offline_counter=n // len(cards),
            amount_fen=amount,
            pboc_type=kind,
            tac=pboc_mac(tac_keys[card.card_no], data),
            psam_terminal=psam,
            psam_serial=n + 1,
            card_datetime=when.strftime("%Y%m%d%H%M%S"),
        )
        items.append(UploadItem(card.card_no, amount, record, TERMINAL, BATCH))
    return items


async def fund(ledger: Ledger, cards: list[CardRecord]) -> None:
    accounts = [new_account(kind, ev.CENTRE) for kind in (K.ED_PROOF_CLEARING,)]
    for card in cards:
        accounts += ev.card_accounts(card.application_serial)
    await ledger.open_accounts(accounts + ev.institution_accounts(INSTITUTION))
    clearing = account_id(K.ED_PROOF_CLEARING, ev.CENTRE)
    transfers = [
        Transfer(
            transfer_id("bench-fund", c.application_serial),
            clearing,
            account_id(K.CARD_ED_SHADOW, c.application_serial),
            FUNDED_FEN,
            ev.TransferCode.LOAD_TO_SHADOW,
        )
        for c in cards
    ]
    await ledger.post(transfers)


async def decoded(args: argparse.Namespace, home: Path) -> None:
    components = [Component(secrets.token_bytes(16)) for _ in range(2)]
    hsm = SoftHsm(Lmk(components, kcv(combine(components))), MemoryKeyStore())
    now = dt.datetime.now(dt.UTC)
    clear = adjust_parity(secrets.token_bytes(16))
    alias = card_master_alias(KeyUsage.MK_TAC)
    tac_master: KeyRef = await hsm.form_key(alias, KeyUsage.MK_TAC, [Component(clear)], now=now)
    cards = make_cards(args.cards)
    when = now.replace(tzinfo=None) - dt.timedelta(hours=1)
    items = make_records(clear, tac_master.version, cards, args.records, when)
    ledger = SqliteLedger.open(home / "ledger.db")
    if args.cache_mib:  # before the first job, while the writer thread waits on its queue
        ledger.store.conn.execute(f"PRAGMA cache_size=-{args.cache_mib * 1024}")
    medical = None
    try:
        await fund(ledger, cards)
        context = RequestContext(
            TerminalRecord(TERMINAL, INSTITUTION, "pos", "active", BATCH),
            None,
            now,
            hsm,
            cast(Any, None),
            cast(Any, None),
            Cards({c.card_no: c for c in cards}),
            ledger,
            "bench",
            medical=medical,
        )
        if args.freeze:  # the inputs: a bench artefact the collector would rescan
            gc.collect()
            gc.freeze()
        for label in ("first upload", "same batch again"):
            started, cpu = time.perf_counter(), time.process_time()
            outcomes = await intake(context, items)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu  # every thread of the process: the writer's too
            approved = sum(1 for o in outcomes if o is Outcome.APPROVED)
            assert approved == len(items), f"{approved} of {len(items)} approved"
            rate = len(items) / elapsed
            print(
                f"decoded intake, {label:18s} {len(items):8,d} records {rate:10,.0f} per s"
                f" (CPU {cpu:5.2f} s: {len(items) / cpu:8,.0f} per CPU-s,"
                f" {cpu / len(items) * 1e6:5.1f} µs each)"
            )
        held = await ledger.offline_records(TERMINAL, int(BATCH))
        balances = await ledger.all_balances()
        debits = sum(b.debits_posted_fen for b in balances)
        assert debits == sum(b.credits_posted_fen for b in balances), "ledger does not sum to 0"
        assert len(held) == len(items)
        stats = ledger.writer.stats
        print(
            f"   on file {len(held):,d}; ledger sums to zero; writer: {stats.batches:,d} commits"
            f" for {stats.jobs:,d} jobs"
        )
    finally:
        await ledger.close()


async def wire_frames(home: Path, port: int, args: argparse.Namespace) -> tuple[list[Lanes], int]:
    """Each POS signed on, and its lane of 0320 frames (one record each, MACed under its MAK),
    its records' TACs under a TAC master of a new key version (the records carry it); twice,
    with new STANs the second time (the same STANs would be answered from the retransmission
    cache without reaching the intake)."""
    hsm = open_soft_hsm(home, component_files_of(demo_keys.custodian_files(home)))
    clear = adjust_parity(secrets.token_bytes(16))
    alias = card_master_alias(KeyUsage.MK_TAC)
    now = demo_keys._now()
    master = await hsm.form_key(alias, KeyUsage.MK_TAC, [Component(clear)], now=now)
    with sqlite3.connect(home / "medswitch.db") as connection:
        cards = [
            CardRecord(no, serial, "", 1, "active", dt.date(2035, 1, 1))
            for no, serial in connection.execute(
                "SELECT card_no, application_serial FROM cards ORDER BY card_no"
            )
        ]
        psams = connection.execute(
            "SELECT psam_terminal_no, institution_id, terminal_id FROM psams ORDER BY serial"
            " LIMIT ?",
            (args.terminals,),
        ).fetchall()
    passes: list[Lanes] = [[], []]
    per_terminal = -(-args.wire_records // len(psams))
    when = now.replace(tzinfo=None) - dt.timedelta(hours=1)
    for psam_no, institution, terminal_id in psams:
        pos = Pos(terminal_id, institution, psam=cast(Any, None))
        await sign_on(port, hsm, pos)
        assert pos.keys is not None
        purse = Purse[args.wire_purse.upper()]
        items = make_records(clear, master.version, cards, per_terminal, when, psam_no, purse)
        for lanes in passes:
            lanes.append(await _lane(hsm, pos, items))
    return passes, len(cards)


async def _lane(hsm: SoftHsm, pos: Pos, items: list[UploadItem]) -> list[tuple[bytes, bytes]]:
    assert pos.keys is not None
    lane = []
    for item in items:
        head = pos.envelope()
        upload = BatchUploadRecord(
            stan=head["stan"],
            terminal_id=head["terminal_id"],
            institution_id=head["institution_id"],
            batch=head["batch"],
            pan=item.pan,
            amount_fen=item.amount_fen,
            card=item.card,
        )
        lane.append((await signed(hsm, pos.keys, upload), f"{pos.stan:06d}".encode()))
    return lane


def wire(args: argparse.Namespace, home: Path) -> None:
    database = home / "medswitch.db"
    init_demo(
        database, args.wire_cardholders, personal=asyncio.run(demo_personal_keys(home))
    )
    with sqlite3.connect(database) as connection:
        terminals = [r[0] for r in connection.execute("SELECT id FROM terminals")]
    demo_keys.write_test_components(home)
    uvloop.run(demo_keys.provision(home, terminals))
    demo_medical.provision(home, database, dt.datetime.now(dt.UTC))
    demo_keys.write_config(home, terminal_port=0, http_port=0)
    with processes(home) as (port, _, _):
        passes, cards = uvloop.run(wire_frames(home, port, args))
        records = sum(len(lane) for lane in passes[0])
        for label, lanes in zip(("first upload", "same batch again"), passes, strict=True):
            rate, latencies, codes = uvloop.run(drive_once(port, lanes))
            report(f"0320 over the wire, {label}", rate, latencies)
            print(f"   {records:,d} records on {cards} cards from {len(lanes)} POS: codes {codes}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--wire-records", type=int, default=20_000)
    parser.add_argument("--terminals", type=int, default=8)
    parser.add_argument("--wire-cardholders", type=int, default=200)
    parser.add_argument(
        "--wire-purse",
        choices=("ed", "ep"),
        default="ed",
        help="ED debits with no bill also count towards the accumulators (the medical store)",
    )
    parser.add_argument(
        "--cache-mib", type=int, default=0, help="SQLite page cache (default: SQLite's 2 MiB)"
    )
    parser.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="leave the decoded inputs to the garbage collector during the timed phase",
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(decoded(args, Path(tmp)))
    if args.wire_records:
        with tempfile.TemporaryDirectory() as tmp:
            wire(args, Path(tmp))


if __name__ == "__main__":
    main()

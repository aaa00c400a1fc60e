"""Batch-upload intake: offline card-debit records TAC-verified, deduplicated, kept on file and
posted, in records/s — the decoded records through :func:`routing.batch.intake` (windows of
records verified, then posted together so the ledger's group-commit writer makes one durable
commit per window, DESIGN §6), the same batch uploaded again (everything already posted), and
the same records over the wire as 0320 messages to a real `medswitch serve`.

    python -m bench.bench_upload [--records 100000] [--cards 2000] [--wire-records 20000]
                                 [--terminals 8] [--cache-mib 0]

The ledger is SQLite (WAL, synchronous=FULL) in a temporary directory; every TAC is computed
before the timed phase from a card TAC master key formed from a random clear value. Records are
ED purchases with no bill; the decoded intake runs without the medical core, so the person's
accumulators (the medical store's own transaction per record) are not counted there; the daemon
over the wire counts them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

from hsm import pboc
from hsm.des import Des, adjust_parity, kcv
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.mac import pboc_mac
from hsm.soft import SoftHsm
from ledger import events as ev
from ledger.core import Ledger, Transfer, new_account, transfer_id
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.sqlite_ledger import SqliteLedger
from messages.outcome import Outcome
from messages.private import CardData, Purse
from routing.batch import UploadItem, intake
from routing.cardkeys import card_master_alias
from routing.context import CardRecord, RequestContext, TerminalRecord

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
    clear_tac_master: bytes, version: int, cards: list[CardRecord], count: int, when: dt.datetime
) -> list[UploadItem]:
    """Offline ED purchases with their cards' TACs (what a POS uploads)."""
    master = Des(clear_tac_master)
    tac_keys = {
        c.card_no: Des(pboc.tac_key(pboc.diversify(master, pboc.card_factor(c.serial_bytes))))
        for c in cards
    }
    psam = bytes.fromhex(PSAM_NO)
    items = []
    for n in range(count):
        card = cards[n % len(cards)]
        amount = 100 + n % 900
        data = pboc.purchase_tac_data(amount, pboc.TYPE_ED_PURCHASE, psam, n + 1, when)
        record = CardData(
            app_serial=card.serial_bytes,
            purse=Purse.ED,
            key_version=version,
            offline_counter=n // len(cards),
            amount_fen=amount,
            pboc_type=pboc.TYPE_ED_PURCHASE,
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
        for label in ("first upload", "same batch again"):
            started = time.perf_counter()
            outcomes = await intake(context, items)
            elapsed = time.perf_counter() - started
            approved = sum(1 for o in outcomes if o is Outcome.APPROVED)
            assert approved == len(items), f"{approved} of {len(items)} approved"
            rate = len(items) / elapsed
            print(f"decoded intake, {label:18s} {len(items):8,d} records {rate:10,.0f} per s")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--wire-records", type=int, default=20_000)
    parser.add_argument("--terminals", type=int, default=8)
    parser.add_argument(
        "--cache-mib", type=int, default=0, help="SQLite page cache (default: SQLite's 2 MiB)"
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(decoded(args, Path(tmp)))


if __name__ == "__main__":
    main()

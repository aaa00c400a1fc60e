"""The terminals' scripted day (3 POS of two institutions, 2 kiosks, 50 cards: loads, HIS bills
settled online, offline purchases, a void after the debit, a forged record in the upload), then
day-end through the real CLI while the daemon keeps serving.

Each institution's payout equals what the test itself computes from its own records: the
TAC-verified card debits of the PSAMs it owns plus the pooled shares of its completed bills, less
the voided bill's shares — the forged record earns nothing. The pooled shares by category and
class in the clearing report add up to the pooled total. Unapproved, nothing is released or
posted; the maker's own approval is refused; a second run writes identical bytes and posts
nothing; after the second operator's approval the payables are empty and the ledger sums to zero.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import uvloop
from click.testing import CliRunner

from ledger.medical.sql_reference import ReferenceData
from ledger.medical.sql_store import sqlite_engine
from messages.private import CardData
from simulators.kiosk import Kiosk
from simulators.pos import Pos
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.dayend import Cli, make_keys, today_and_after
from tests.support.kiosk import PIN, issue_psam
from tests.support.scripted_day import (
    CARDS,
    FORGED_FEN,
    KIOSKS,
    LOAD_FEN,
    OFFLINE_FEN,
    cards_on_file,
    forge_record,
    issue_cards,
    ledger_sums,
    present,
    terminal_link,
    three_psams,
)
from tests.support.settlement import his_submit, medical_reference

BIG_LOAD_FEN = 90_000


async def scripted_day(daemon: Daemon, tmp: Path) -> dict[str, int]:
    """The day; returns each institution's amount owed, computed from the test's own records."""
    db = daemon.home / "medswitch.db"
    port = daemon.app.terminal_port
    cards = cards_on_file(db, CARDS)
    psam_rows = three_psams(db)
    institutions = sorted({p.institution_id for p in psam_rows})
    tokens = {institutions[0]: await asyncio.to_thread(medical_reference, daemon, institutions[0])}
    reference = ReferenceData(sqlite_engine(db))
    for institution in institutions[1:]:
        tokens[institution] = reference.issue_credential(institution, 0)
    conns, keys = await issue_cards(daemon, cards)
    psams = [await issue_psam(daemon, row, keys.purchase) for row in psam_rows]

    def submit(i: int, lines: list[dict[str, Any]], number: str) -> dict[str, Any]:
        institution = psam_rows[i % 3].institution_id
        body = {"his_bill_no": number, "card_no": cards[i].card_no,
                "service_date": now().date().isoformat(), "lines": lines}
        return his_submit(daemon.app.http_port, institution, tokens[institution], body)

    small = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]
    bills = [await asyncio.to_thread(submit, i, small, f"HIS-DE-{i:03d}") for i in range(CARDS)]
    # Three cardholders with room in their personal fund get a bill above the deductible:
    # the pooled fund pays its share of the 甲 and 乙 lines.
    ledger = daemon.app.ledger
    assert ledger is not None
    funds = await ledger.balances([f"pf:{c.cardholder_id}" for c in cards])
    big = [i for i, c in enumerate(cards[3:], 3)
           if funds[f"pf:{c.cardholder_id}"].balance_fen >= LOAD_FEN + BIG_LOAD_FEN][:3]
    assert len(big) == 3
    big_lines = [{"code": "A01", "quantity": 150, "unit_price_fen": 1000},
                 {"code": "B02", "quantity": 2, "unit_price_fen": 15000}]
    big_bills = {i: await asyncio.to_thread(submit, i, big_lines, f"HIS-BIG-{i:03d}")
                 for i in big}
    assert all(b["split"]["pooled_fen"] > 0 for b in big_bills.values())
    kiosks = [Kiosk(await terminal_link(daemon, t, "centre", tmp / f"k{n}.json", port, 5.0),
                    conns[0], pan=cards[0].card_no, pin=PIN) for n, t in enumerate(KIOSKS)]
    poses = [Pos(await terminal_link(daemon, row.terminal_id, row.institution_id,
                                     tmp / f"pos{n}.json", port, 5.0),
                 conns[0], psams[n], pan=cards[0].card_no, pin=PIN)
             for n, row in enumerate(psam_rows)]
    try:
        for terminal in [*kiosks, *poses]:
            await terminal.sign_on()
        for i in range(CARDS):
            present(kiosks[i % 2], conns[i], cards[i])
            assert kiosks[i % 2].insert()[0].endswith("PIN verified")
            assert (await kiosks[i % 2].load(LOAD_FEN))[0].startswith("loaded")
            if i in big:
                assert (await kiosks[i % 2].load(BIG_LOAD_FEN))[0].startswith("loaded")
        for i in range(CARDS):
            present(poses[i % 3], conns[i], cards[i])
            assert any("advice 00" in x for x in await poses[i % 3].settle(bills[i]["bill_id"],
                                                                          2000))
            if i % 2 == 0:
                assert (await poses[i % 3].offline(OFFLINE_FEN))[0].startswith("offline")
        for i, bill in big_bills.items():
            present(poses[i % 3], conns[i], cards[i])
            lines = await poses[i % 3].settle(bill["bill_id"], 180_000)
            assert any("advice 00" in x for x in lines), lines
        present(poses[1], conns[1], cards[1])
        assert await poses[1].void(bills[1]["bill_id"]) == [f"bill {bills[1]['bill_id']} voided"]
        forge_record(poses[0])
        records: list[tuple[str, dict[str, Any]]] = []
        for n, pos in enumerate(poses):
            records += [(psam_rows[n].institution_id, dict(r)) for r in pos.state.records]
            assert "end of upload: 00" in await pos.settle_batch()
    finally:
        for terminal in [*kiosks, *poses]:
            await terminal.link.close()

    owed: dict[str, int] = defaultdict(int)
    for institution, record in records:
        if record["amount_fen"] != FORGED_FEN:  # the forged record's TAC does not verify
            owed[institution] += record["amount_fen"]
    for i, bill in enumerate(bills):
        institution = psam_rows[i % 3].institution_id
        if i == 1:  # voided: the card's debit went back to the personal fund, no pooled share
            owed[institution] -= bill["split"]["personal_account_fen"]
        else:
            owed[institution] += bill["split"]["pooled_fen"]
    for i, bill in big_bills.items():
        owed[psam_rows[i % 3].institution_id] += bill["split"]["pooled_fen"]
    assert sum(1 for _, r in records if CardData.parse(bytes.fromhex(r["card"]))) > CARDS
    return dict(owed)


def _report(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[2:]


def test_scripted_day_then_dayend(tmp_path: Path) -> None:
    keys_home, components = make_keys(tmp_path)

    async def scenario(daemon: Daemon) -> None:
        owed = await scripted_day(daemon, tmp_path)
        cli = Cli(daemon.home / "medswitch.db", keys_home, components, tmp_path / "dayend",
                  CliRunner())
        date, after = today_and_after()
        sums = await ledger_sums(daemon)
        out = (await asyncio.to_thread(cli.run, date, after)).output
        assert "prepared: awaiting approval" in out, out
        compact = date.replace("-", "")
        staging = cli.out / "staging" / compact
        paid: dict[str, int] = defaultdict(int)
        for path in sorted(staging.iterdir()):
            assert ": OK PAYOUT" in (await asyncio.to_thread(cli.verify, path)).output
        for institution, amount in cli.rows("SELECT institution_id, amount_fen FROM payouts"):
            paid[str(institution)] += int(str(amount))
        assert dict(paid) == owed
        classes = {r[3] for r in _report(cli.out / "reports" / f"CLEARING_{compact}.csv")
                   if r[2] == "pooled_by_class"}
        assert {c.split("/")[1] for c in classes} == {"甲", "乙"}, classes
        assert not (cli.out / "outbox").exists() and await ledger_sums(daemon) == sums

        report = _report(cli.out / "reports" / f"CLEARING_{compact}.csv")
        for institution in owed:
            rows = [r for r in report if r[0] == "institution" and r[1] == institution]
            pooled = sum(int(r[5]) for r in rows if r[2] in ("pooled", "void_pooled"))
            by_class = sum(int(r[5]) for r in rows if r[2] == "pooled_by_class")
            assert pooled == by_class, rows
            assert {r[3].split("/")[1] for r in rows if r[2] == "pooled_by_class"} <= {"甲", "乙"}
            net = next(int(r[5]) for r in rows if r[2] == "net")
            assert net == owed[institution]

        tree = cli.tree()
        assert "unchanged" in (await asyncio.to_thread(cli.run, date, after)).output
        assert cli.tree() == tree and await ledger_sums(daemon) == sums
        refused = (await asyncio.to_thread(cli.approve, date, "alice", False)).output
        assert "cannot also approve" in refused and not (cli.out / "outbox").exists()
        assert "payouts posted" in (await asyncio.to_thread(cli.approve, date, "bob")).output
        assert sorted(p.name for p in (cli.out / "outbox").iterdir()) == sorted(
            p.name for p in staging.iterdir())
        ledger = daemon.app.ledger
        assert ledger is not None
        payables = [f"payins:{i}" for i in owed] + [f"payep:{i}" for i in owed]
        assert all(b.balance_fen == 0 for b in (await ledger.balances(payables)).values())
        await ledger_sums(daemon)  # debits equal credits

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=CARDS) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=150))

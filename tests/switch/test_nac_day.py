"""POS dialling the centre through the network access controller over pseudo-terminal modem
lines at 2,400 bps, against a real daemon: the TCP scripted day's assertions, over modems.

The day: a kiosk (over TCP) loads every card; two POS (one line in the CUP length framing, one
in STX · length · data · ETX · LRC) dial, sign on, settle HIS bills with the card's ED, take
offline purchases and settle their batch (not balanced: every record uploaded). The NII routes
to two switch hosts: a front relay first, the daemon itself second; the front is killed mid-day
and the next calls go to the other. Afterwards every card's ED shadow equals its chip and every
card debit is posted once.

The dropped line: a settlement whose answer is cut mid-frame on the line (the controller drops
the carrier): the POS keeps its reversal and sends it after dialling again; the bill settled
again is refused (it was reversed): the card is charged nothing, never twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvloop

from ledger import events as ev
from ledger.kinds import AccountKind, account_id
from messages.line_framing import LineFraming
from messages.private import CardData
from simulators import terminal_card
from simulators.dial_link import Dial
from simulators.kiosk import Kiosk
from simulators.pos import Pos
from simulators.terminal_link import TerminalError
from switch.card_io.connection import CardConnection
from switch.nac.config import Faults
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.kiosk import PIN, issue_psam
from tests.support.nac import NUMBER, Relay, running_nac, table_text
from tests.support.on_file import CardOnFile
from tests.support.scripted_day import (
    KIOSKS,
    LOAD_FEN,
    OFFLINE_FEN,
    cards_on_file,
    issue_cards,
    ledger_sums,
    present,
    terminal_link,
    three_psams,
)
from tests.support.settlement import his_submit, medical_reference

CARDS = 4
SPEED_BPS = 2400
FRAMINGS = (LineFraming.CUP, LineFraming.STX)


def ed(card: CardConnection) -> int:
    terminal_card.open_application(card, PIN)
    return terminal_card.balance(card)


async def shadow_ed(daemon: Daemon, serial: str) -> int:
    assert daemon.app.ledger is not None
    shadow = account_id(AccountKind.CARD_ED_SHADOW, serial)
    found = await daemon.app.ledger.balances([shadow])
    return found[shadow].balance_fen if shadow in found else 0


class World:
    """Cards issued and loaded, bills submitted, POS links that dial lines of ``lines_dir``."""

    def __init__(self, daemon: Daemon, tmp: Path) -> None:
        self.daemon, self.tmp = daemon, tmp
        self.db = daemon.home / "medswitch.db"
        self.cards: list[CardOnFile] = []
        self.conns: list[CardConnection] = []
        self.poses: list[Pos] = []
        self.bills: list[dict[str, Any]] = []

    async def build(self, count: int, poses: int) -> None:
        daemon = self.daemon
        self.cards = cards_on_file(self.db, count)
        rows = three_psams(self.db)[:poses]  # the same institution: one HIS token
        token = await asyncio.to_thread(medical_reference, daemon, rows[0].institution_id)
        self.conns, keys = await issue_cards(daemon, self.cards)
        kiosk_link = await terminal_link(
            daemon, KIOSKS[0], "centre", self.tmp / "kiosk.json", daemon.app.terminal_port, 5.0
        )
        kiosk = Kiosk(kiosk_link, self.conns[0], pan=self.cards[0].card_no, pin=PIN)
        await kiosk.sign_on()
        for conn, on_file in zip(self.conns, self.cards, strict=True):
            present(kiosk, conn, on_file)
            assert kiosk.insert()[0].endswith("PIN verified")
            assert (await kiosk.load(LOAD_FEN))[0].startswith("loaded")
        await kiosk_link.close()
        for i, on_file in enumerate(self.cards):
            body = {
                "his_bill_no": f"HIS-DIAL-{i:03d}",
                "card_no": on_file.card_no,
                "service_date": now().date().isoformat(),
                "lines": [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}],
            }
            institution = rows[0].institution_id
            self.bills.append(
                await asyncio.to_thread(his_submit, daemon.app.http_port, institution, token, body)
            )
        for n, row in enumerate(rows):
            psam = await issue_psam(daemon, row, keys.purchase)
            link = await terminal_link(
                daemon, row.terminal_id, row.institution_id, self.tmp / f"pos{n}.json", 1, 10.0
            )
            line = str(self.tmp / "lines" / f"line{n + 1:02d}")
            link.endpoint = Dial(line, NUMBER, FRAMINGS[n % 2], timeout_s=10.0)
            pos = Pos(link, self.conns[0], psam, pan=self.cards[0].card_no, pin=PIN)
            self.poses.append(pos)

    async def close(self) -> None:
        for pos in self.poses:
            await pos.link.close()


async def pos_day(world: World, n: int, cards: list[int]) -> list[dict[str, Any]]:
    """POS ``n``'s day: sign-on, the bills of ``cards`` settled, an offline purchase by each
    card, the batch settled. Its records, as uploaded."""
    pos = world.poses[n]
    signed = await pos.sign_on()
    assert signed[0].startswith("signed on") and "offline limits" in signed[1], signed
    for i in cards:
        present(pos, world.conns[i], world.cards[i])
        bill = world.bills[i]
        lines = await pos.settle(bill["bill_id"], bill["split"]["total_fen"])
        assert any("advice 00" in line for line in lines), lines
        assert (await pos.offline(OFFLINE_FEN))[0].startswith("offline purchase")
    records = [dict(r) for r in pos.state.records]
    lines = await pos.settle_batch()
    assert "not balanced: uploading every record" in lines, lines
    assert "end of upload: 00" in lines, lines
    return records


def test_a_scripted_day_of_pos_dialling_through_the_nac(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        world = World(daemon, tmp_path)
        await world.build(CARDS, 2)
        front = Relay(daemon.app.terminal_port)  # a switch host in front of the daemon
        ports = [await front.start(), daemon.app.terminal_port]
        (tmp_path / "lines").mkdir()
        text = table_text(
            tmp_path / "lines",
            {"0003": ports},
            lines=2,
            speed_bps=SPEED_BPS,
            framings=[f.value for f in FRAMINGS],
            answer_timeout_s=10.0,
        )
        try:
            async with running_nac(text) as nac:
                first, second = (f"127.0.0.1:{port}" for port in ports)
                morning = await asyncio.gather(pos_day(world, 0, [0]), pos_day(world, 1, [1]))
                assert nac.stats.hosts[first].answers > 0
                assert nac.stats.hosts[second].requests == 0
                await front.kill()  # the first switch host is killed
                before = nac.stats.hosts[second].answers
                afternoon = await asyncio.gather(pos_day(world, 0, [2]), pos_day(world, 1, [3]))
                assert nac.stats.hosts[second].answers > before  # the next calls went there
                assert not nac.stats.hosts[first].up
                for line, framing in zip(("line01", "line02"), FRAMINGS, strict=True):
                    stats = nac.stats.lines[line]
                    assert stats.calls["connect"] >= 1 and stats.frames_in == stats.frames_out
                    assert not stats.failures or set(stats.failures) == {"host_lost"}, framing
                await world.close()
        finally:
            await front.kill()
        terminals = [row.terminal_no for row in three_psams(world.db)]
        days = [(0, morning[0]), (1, morning[1]), (0, afternoon[0]), (1, afternoon[1])]
        records = [r for _, day in days for r in day]
        debit_ids = {
            ev.card_debit_id(terminals[n], CardData.parse(bytes.fromhex(r["card"])).psam_serial)
            for n, day in days
            for r in day
        }
        assert daemon.app.ledger is not None
        assert set(await daemon.app.ledger.lookup_transfers(sorted(debit_ids))) == debit_ids
        assert len(records) == 2 * CARDS  # a bill and an offline purchase each
        for i, on_file in enumerate(world.cards):
            assert await shadow_ed(daemon, on_file.serial) == ed(world.conns[i]), on_file.card_no
        await ledger_sums(daemon)

    run_day(tmp_path, scenario)


def test_a_line_dropped_mid_settlement_reverses_after_redial(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        world = World(daemon, tmp_path)
        await world.build(1, 1)
        (tmp_path / "lines").mkdir()
        text = table_text(
            tmp_path / "lines", {"0003": [daemon.app.terminal_port]}, lines=1, speed_bps=SPEED_BPS
        )
        async with running_nac(text) as nac:
            pos, bill = world.poses[0], world.bills[0]
            await pos.sign_on()
            await pos.link.close()  # hung up: the settlement is the next call's first answer
            nac.runners["line01"].inject(Faults(drop_answer=(1,)))
            present(pos, world.conns[0], world.cards[0])
            lines = await pos.settle(bill["bill_id"], bill["split"]["total_fen"])
            assert any("the reversal is stored" in line for line in lines), lines
            assert any("answered 00" in line for line in lines), lines  # sent after redialling
            assert pos.state.pending_reversal is None
            assert nac.stats.lines["line01"].failures["fault"] == 1
            assert nac.stats.lines["line01"].calls["connect"] == 3
            assert await shadow_ed(daemon, world.cards[0].serial) == LOAD_FEN == ed(world.conns[0])
            # the bill was reversed at the centre: settling it again is refused, not charged
            with pytest.raises(TerminalError) as refused:
                await pos.settle(bill["bill_id"], bill["split"]["total_fen"])
            assert refused.value.code == "12"
            await world.close()
        assert await shadow_ed(daemon, world.cards[0].serial) == LOAD_FEN == ed(world.conns[0])
        assert daemon.app.ledger is not None
        shadow = account_id(AccountKind.CARD_ED_SHADOW, world.cards[0].serial)
        history = await daemon.app.ledger.history(shadow)
        assert not [p for p in history if p.transfer.code == ev.TransferCode.CARD_DEBIT]
        await ledger_sums(daemon)

    run_day(tmp_path, scenario)


def run_day(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=CARDS) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=240))

"""Zone key exchange on both bank links, over real sockets: the centre changes its outbound
link's keys (HTTP trigger, `medswitch bank key-change`, and on a schedule) and savings-funded
loads go on under the new ZAK and ZPK; the bank changes its inbound link's keys, a counter
message MACed under the old ZAK is still taken within the overlap and refused (A0) after it;
an offer whose KCV does not match is refused (89) and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from hsm.keys import KeyUsage
from messages.bank import KeyChange, SavingsDebit
from simulators.bank import BankAcquirer, BankKeys
from simulators.kiosk import Kiosk
from switch.bank.keys import parse_items
from tests.support.bank import BANK, BankDaemon, bank_daemon, until
from tests.support.daemon import now
from tests.support.kiosk import PIN
from tests.support.on_file import first_card
from tests.support.scripted_day import issue_cards, terminal_link
from tests.support.sim import invoke


def run(tmp: Path, scenario: Any, **bank: Any) -> None:
    async def main() -> None:
        async with bank_daemon(tmp, **bank) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))


async def kiosk_for(bank: BankDaemon, tmp: Path) -> Kiosk:
    daemon = bank.daemon
    on_file = first_card(bank.database)
    (conn,), _ = await issue_cards(daemon, [on_file])
    port = daemon.app.terminal_port
    link = await terminal_link(daemon, "K0000001", "centre", tmp / "kiosk.json", port, 10.0)
    kiosk = Kiosk(link, conn, pan=on_file.card_no, pin=PIN)
    await kiosk.sign_on()
    return kiosk


def test_the_centre_changes_its_outbound_keys_and_loads_go_on(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        kiosk = await kiosk_for(bank, tmp_path)
        keys = bank.bank.outbound_keys
        assert keys is not None
        old_zak, old_zpk = await keys.current(), await keys.zpk()
        try:
            assert (await kiosk.ep_load(1_000))[0].startswith("loaded")
            base = f"http://127.0.0.1:{bank.app.http_port}"
            url = f"{base}/bank/{BANK}/key-change"
            custodian = await bank.bearer("kim", "key_custodian")
            async with aiohttp.ClientSession() as http:  # a login, and a key custodian's
                async with http.post(url) as response:
                    assert response.status == 401
                async with http.post(url, headers=await bank.bearer("ann", "auditor")) as answer:
                    assert answer.status == 403
                    assert "ann lacks the role key_custodian" in (await answer.json())["error"]
                async with http.post(url, headers=custodian) as response:
                    assert response.status == 200
                    answer = await response.json()
            new_zak, new_zpk = await keys.current(), await keys.zpk()
            assert new_zak is not None and old_zak is not None and new_zpk is not None
            assert (new_zak.version, answer["zak_kcv"]) == (old_zak.version + 1, new_zak.kcv)
            assert bank.issuer.zak.kcv == new_zak.kcv and new_zpk != old_zpk
            assert (await kiosk.ep_load(2_000))[0].startswith("loaded")  # under the new keys

            refused = await invoke(["bank", "key-change", "--bank", BANK, "--url", base,
                                    "--token-file", str(tmp_path / "none.token")])
            assert refused.exit_code == 1 and "no operator logged in" in refused.output
            token = await bank.operator("kim", "key_custodian")
            key_change = ["bank", "key-change", "--token-file", str(token)]
            result = await invoke([*key_change, "--bank", BANK, "--url", base])
            assert result.exit_code == 0, result.output
            newest = await keys.current()
            assert newest is not None and newest.kcv in result.output
            assert newest.version == new_zak.version + 1
            assert (await kiosk.ep_load(3_000))[0].startswith("loaded")
            debits = [r for r in bank.issuer.received if isinstance(r.typed, SavingsDebit)]
            assert len(debits) == 3 and sum(bank.issuer.applied.values()) == 6_000

            other = url.replace(BANK, "09999999")
            async with aiohttp.ClientSession() as http, http.post(
                other, headers=custodian
            ) as response:
                assert response.status == 404
            missing = await invoke([*key_change, "--bank", "x", "--url", base])
            assert missing.exit_code != 0 and "no such bank link" in missing.output
            changed = await bank.fetch("SELECT actor, subject, detail FROM audit_log "
                                       "WHERE action = 'bank.key-change' ORDER BY seq")
            assert [(who, link, json.loads(d)["zak_kcv"]) for who, link, d in changed] == [
                ("kim", BANK, answer["zak_kcv"]), ("kim", BANK, newest.kcv)]
        finally:
            await kiosk.link.close()

    run(tmp_path, scenario)


def test_keys_change_on_schedule(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        keys = bank.bank.outbound_keys
        assert keys is not None
        await until(lambda: keys.changes >= 2)
        kiosk = await kiosk_for(bank, tmp_path)
        try:
            assert (await kiosk.ep_load(1_500))[0].startswith("loaded")
        finally:
            await kiosk.link.close()
        current = await keys.current()
        assert current is not None and current.version >= 3

    run(tmp_path, scenario, key_change_interval_s=0.2)


def test_the_bank_changes_its_inbound_keys_with_an_overlap(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        on_file = first_card(bank.database)
        app = bank.app
        counter = await BankAcquirer.connect(
            "127.0.0.1", app.bank_port, bank.daemon.hsm, bank.zak_in, BANK, clock=now
        )
        try:
            assert (await counter.sign_on()).response_code == "00"
            assert (await counter.inquiry(on_file.card_no)).response_code == "00"
            bad = KeyChange(**counter.envelope(), keys=f"ZAK={'00' * 16}/000000")
            # a key change must be MACed (the dialect's network policy): unsigned, A0
            assert (await counter.exchange(bad, mac=False)).response_code == "A0"
            assert (await counter.exchange(bad)).response_code == "89"
            assert (await counter.exchange(bad, mac=False)).data is None
            assert bank.bank.service is not None
            keys = bank.bank.service.keys
            assert await keys.current() == bank.zak_in  # nothing changed

            bank_keys = BankKeys(bank.zak_in, bank.zmk, prefix="bank-sim/acquirer")
            reply = await counter.key_change(bank_keys)
            assert reply.response_code == "00", reply
            assert set(parse_items_kcvs(reply.data)) == {"ZAK", "ZPK", "FILE"}
            current = await keys.current()
            assert current is not None and current.kcv == counter.zak.kcv != bank.zak_in.kcv
            zpk = await bank.app.sessions.latest(f"bank/{BANK}/ZPK", KeyUsage.ZPK)
            assert zpk is not None and zpk.version == 2
            assert (await counter.inquiry(on_file.card_no)).response_code == "00"  # new ZAK

            new_zak, counter.zak = counter.zak, bank.zak_in  # a message still under the old
            assert (await counter.inquiry(on_file.card_no)).response_code == "00"
            overlap = keys.overlap_s
            keys.clock = lambda: time.monotonic() + overlap + 1  # the overlap is over
            assert (await counter.inquiry(on_file.card_no)).response_code == "A0"
            counter.zak = new_zak
            assert (await counter.inquiry(on_file.card_no)).response_code == "00"
        finally:
            await counter.close()

    run(tmp_path, scenario)


def parse_items_kcvs(data: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (data or "").split(";") if item)


def test_f48_items_are_checked() -> None:
    good = f"ZAK={'A' * 32}/ABCDEF;ZPK={'B' * 32}/123456"
    assert set(parse_items(good)) == {"ZAK", "ZPK"}
    for bad in ("", "TMK=00/ABCDEF", f"ZAK={'A' * 32}/AB", f"ZAK={'G' * 32}/ABCDEF"):
        try:
            parse_items(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")

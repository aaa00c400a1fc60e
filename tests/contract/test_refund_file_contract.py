"""The cardholder refund file as a bank meets it, written from specs/dayend-files.md alone,
against the LIVE centre: `make run`'s daemon with a savings bank on its bank link (the spec-only
bank host of tests/contract/bank_peer.py), a card's EP loaded from savings at the bank's counter,
a hospital bill paid by the card (personal share from the ED, self-pay from the EP) and voided at
the POS — the EP self-pay becomes the cardholder's refund payable. Day-end writes the REFUND file
for the bank of the card's latest EP load; the bank receives its file key under its ZMK by the
`medswitch keys export` the spec prints (run as printed), decrypts the file, checks its MAC and
reads every record. Its return file quoting the card number in clear is refused whole (the line
named, nothing posted); masked, as the spec says, it is accepted and pays the refund.

A live link's bank is named by its F32 acquirer id (numeric, bank-interface "Frame"), so it
cannot be one of the demo's banks b1/b2: the bank here gets its ZMK formed from a clear TEST
ONLY component and a file key generated in the key store, as any new bank would. Imports
nothing of medswitch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests.contract import files, pboc
from tests.contract.bank_codec import Dialect, pin_block
from tests.contract.bank_peer import Counter, Issuer
from tests.contract.centre import Centre, after_cutover, business_date, receive_file_key
from tests.contract.counter import (
    custodian_login,
    form_key,
    load_at_counter,
    medswitch,
    odd_parity_key,
)
from tests.contract.daemon import Deployment, free_port, running
from tests.contract.pos import CENTRE_ZONE, Terminal, card_datetime, his_submit
from tests.contract.wire import decrypt_63, encrypt_63, parse_tlv, tlv, uint

BANK = "01020000"  # the link's acquirer id: the bank's id in the ledger and its files
PIN = "123456"  # the sandbox cards' PIN
KIOSK_TERMINAL_NO = bytes.fromhex("000000000001")  # terminal-interface: kiosk K0000001's number
USAGES = {"ZAK": "ZAK", "ZPK": "ZPK", "out/ZAK": "ZAK", "out/ZPK": "ZPK", "ZMK": "ZMK"}
#: A bill with a self-pay share (class B items: 10 % self-pay in the demo's catalogue).
LINES = ({"code": "B01", "quantity": 2, "unit_price_fen": 2000},
         {"code": "A02", "quantity": 1, "unit_price_fen": 500})
PAYOUT = (files.PAYOUT_HEADER, files.PAYOUT_DETAIL, files.PAYOUT_TRAILER)


def bank_toml(port: int, issuer_port: int) -> str:
    prefix = f"bank/{BANK}"
    return (f'\n[bank]\nenabled = true\ndialect = "medswitch"\nport = {port}\n'
            f'acquirer_id = "{BANK}"\nzak_alias = "{prefix}/ZAK"\nzpk_alias = "{prefix}/ZPK"\n'
            f'zmk_alias = "{prefix}/ZMK"\noutbound_host = "127.0.0.1"\n'
            f"outbound_port = {issuer_port}\noutbound_zak_alias = \"{prefix}/out/ZAK\"\n"
            f'outbound_zpk_alias = "{prefix}/out/ZPK"\noutbound_timeout_s = 5.0\n')


def kiosk_ed_load(deployment: Deployment, kiosk: dict[str, Any], card: pboc.Card, pan: str,
                  amount: int) -> None:
    """The kiosk fills the ED from the personal fund: MAC1 → MAC2 → TAC."""
    k = Terminal(deployment.terminal_port, kiosk["terminal_id"], kiosk["institution"],
                 deployment.tmk(kiosk["terminal_id"]))
    try:
        k.sign_on()
        init = card.initialize_for_load(amount, KIOSK_TERMINAL_NO)
        load = {1: card.app_serial, 2: bytes([pboc.ED]), 3: bytes([init.key_version]),
                4: bytes([init.algorithm_id]), 5: init.card_random,
                7: uint(init.online_counter, 2), 9: uint(init.old_balance_fen, 4),
                10: uint(amount, 4), 12: init.mac1, 16: KIOSK_TERMINAL_NO}
        money = {2: pan, 3: "600000", 4: f"{amount:012d}", 25: "91"}
        reply = k.send("0200", {**money, 58: tlv(load)}, "45")
        answer = parse_tlv(bytes.fromhex(reply.fields[58]))
        tac = card.credit_for_load(answer[0x12], answer[0x0D])
        k.send("0220", {**money, 58: tlv({**load, 0x0F: tac, 0x13: uint(card.balance_fen, 4)})},
               "45")
    finally:
        k.link.close()


def advise(pos: Terminal, psam: bytes, serial: int, card: pboc.Card, pan: str, amount: int,
           bill_id: bytes) -> None:
    """The card's debit for the bill (step 4) and its debit advice 0220 (60.1 `30`)."""
    assert pos.keys is not None
    when = card_datetime(dt.datetime.now(CENTRE_ZONE))
    debit = card.debit_for_purchase(amount, psam, serial, when)
    record = tlv({1: card.app_serial, 2: bytes([card.purse]), 3: bytes([card.key_version]),
                  4: bytes([0]), 8: uint(debit.offline_counter, 2), 10: uint(amount, 4),
                  11: bytes([card.purchase_type]), 16: psam, 17: uint(serial, 4), 18: when,
                  15: debit.tac})
    pos.send("0220", {2: pan, 3: "000000", 4: f"{amount:012d}", 25: "00", 58: record,
                      63: encrypt_63(pos.keys.tdk, bytes.fromhex(tlv({1: bill_id})))}, "30")


def refund_of_a_voided_bill(deployment: Deployment, counter: Counter, zpk: bytes) -> str:
    """A bill paid by card 0 (ED: personal share; EP, loaded from savings: self-pay), then
    voided: its EP self-pay is the cardholder's refund. Returns the card number."""
    listing: Any = deployment.listing()
    pos_entry = next(t for t in listing["terminals"] if t["kind"] == "pos")
    kiosk = next(t for t in listing["terminals"] if t["kind"] == "kiosk")
    entry = listing["cards"][0]
    pan = entry["card_no"]
    ed = pboc.Card.from_image(deployment.sandbox / entry["image"], pboc.ED)
    ep = pboc.Card.from_image(deployment.sandbox / entry["image"], pboc.EP)

    bill = his_submit(deployment, pos_entry["institution"], pan, "REFUND-1", LINES)
    split = bill["split"]
    total, personal, self_pay = split["total_fen"], split["personal_account_fen"], \
        split["self_pay_fen"]
    assert self_pay > 0 and personal > 0, split
    code, _ = load_at_counter(counter, ep, pan, "601000", {52: pin_block(PIN, pan, zpk)},
                              amount=self_pay)
    assert code == "00" and ep.balance_fen >= self_pay
    kiosk_ed_load(deployment, kiosk, ed, pan, personal)

    pos = Terminal(deployment.terminal_port, pos_entry["terminal_id"], pos_entry["institution"],
                   deployment.tmk(pos_entry["terminal_id"]))
    try:
        pos.sign_on()
        assert pos.keys is not None
        bill_id = bill["bill_id"].encode()
        ask = encrypt_63(pos.keys.tdk, bytes.fromhex(tlv({1: bill_id, 2: uint(total, 4)})))
        card_58 = tlv({1: ed.app_serial, 2: bytes([pboc.ED]), 9: uint(ed.balance_fen, 4)})
        settled = pos.send("0200", {2: pan, 3: "000000", 4: f"{total:012d}", 25: "00",
                                    58: card_58, 63: ask}, "22")
        original = f"{pos.batch}{settled.fields[11]}{settled.fields[13]}"  # F61
        shares = parse_tlv(decrypt_63(pos.keys.tdk, settled.fields[63]))
        assert int.from_bytes(shares[5], "big") == self_pay
        psam = bytes.fromhex(pos_entry["psam_terminal_no"])
        advise(pos, psam, 1, ed, pan, personal, bill_id)  # completes the bill
        advise(pos, psam, 2, ep, pan, self_pay, bill_id)
        paid = tlv({1: bill_id, 6: uint(personal, 4), 7: uint(self_pay, 4)})
        pos.send("0200", {2: pan, 3: "200000", 4: f"{total:012d}", 25: "00", 61: original,
                          63: encrypt_63(pos.keys.tdk, bytes.fromhex(paid))}, "23")
    finally:
        pos.link.close()
    return str(pan)


def day_end(centre: Centre, day: dt.date, out: Path) -> None:
    """`dayend run` by a maker, `dayend approve` by a checker (dayend-files "Running day-end")."""
    ran = centre.run("dayend", "run", "--date", day.isoformat(), "--now", after_cutover(day),
                     "--operator", "alice", *centre.keys, "--out", str(out), *centre.db).out
    if "closed" not in ran:  # something to pay
        centre.run("dayend", "approve", "--date", day.isoformat(), "--operator", "bob",
                   "--out", str(out), *centre.db)


def test_a_live_refund_file_is_read_and_answered_from_the_spec(tmp_path: Path) -> None:
    keys = {name: odd_parity_key() for name in USAGES}  # clear, TEST ONLY
    issuer = Issuer(Dialect.of("medswitch"), keys["out/ZAK"], keys["out/ZPK"], PIN, BANK)
    port = free_port()
    try:
        with running(tmp_path) as first:  # the demo deployment made, then stopped
            home = first.home
        custodian_login(home)
        for name, key in keys.items():
            form_key(home, f"bank/{BANK}/{name}", USAGES[name], key, tmp_path)
        components = [str(home / "custodians" / f"{c}.component") for c in ("a", "b")]
        # dayend-files, "On the demo": a link's bank's file key, generated once, exportable
        medswitch(home, "keys", "generate", f"bank/{BANK}/FILE", "--usage", "FILE",
                  "--exportable", "-c", components[0], "-c", components[1])
        with running(tmp_path, bank_toml(port, issuer.port)) as deployment:
            first_day = business_date()
            assert issuer.next_request("08").fields[70] == "001"  # the centre signs on
            counter = Counter(Dialect.of("medswitch"), port, BANK, keys["ZAK"])
            try:
                assert counter.exchange("0800", {70: "001"}, mac=False).fields[39] == "00"
                pan = refund_of_a_voided_bill(deployment, counter, keys["ZPK"])
            finally:
                counter.close()
            centre = Centre(home)
            for day in sorted({first_day, business_date()}):  # a cut-over may have passed
                day_end(centre, day, tmp_path / "dayend")
            file_key = receive_file_key(centre, BANK, keys["ZMK"])
    finally:
        issuer.close()

    # -- the refund file: decrypted, every line read, the MAC checked ---------------------------
    (path,) = (tmp_path / "dayend" / "outbox").glob(f"REFUND_*_{BANK}_EP.enc")
    name, compact = path.name, path.name.split("_")[1]
    day = dt.datetime.strptime(compact, "%Y%m%d").date()
    sealed = path.read_bytes()
    assert pan.encode() not in sealed
    refund = files.read_fixed(file_key, files.decrypt(file_key, sealed), PAYOUT)
    assert (refund.header["format"], refund.header["version"], refund.header["date"],
            refund.header["bank"], refund.header["source"]) == ("MSREFUND", "01", compact, BANK,
                                                                 "EP")
    (line,) = refund.details
    assert (line["type"], line["line"], line["account_no"], line["currency"]) == (
        "D", "000001", pan, "CNY")
    assert line["payout_id"] == f"{compact}-R-{line['payee_id']}" and line["account_name"]
    amount = int(line["amount"])
    assert amount > 0 and int(refund.trailer["total"]) == amount

    # -- the bank's answer: the card number in clear is refused whole, masked it is paid ------
    answered = (day + dt.timedelta(days=1)).strftime("%Y%m%d")
    stem = f"RETURN_{name.rsplit('.', 1)[0]}_{answered}.txt"
    clear, masked = tmp_path / "clear" / stem, tmp_path / "masked" / stem
    for path, accounts in ((clear, {}), (masked, {line["payout_id"]: files.masked(pan)})):
        path.parent.mkdir()
        path.write_bytes(files.return_file(file_key, BANK, answered, name, refund, accounts))
    assert pan.encode() in clear.read_bytes() and pan.encode() not in masked.read_bytes()
    reviews = centre.run("review", "list", *centre.db).out

    def importing(path: Path, ok: bool) -> str:
        return centre.run("dayend", "import-returns", str(path), *centre.db, *centre.keys,
                          "--operator", "carol", ok=ok).out

    refused = importing(clear, ok=False)
    assert f"{stem}: REFUSED: " in refused and "line 1" in refused, refused
    assert pan not in refused
    assert centre.run("review", "list", *centre.db).out == reviews
    accepted = importing(masked, ok=True)  # paid now: the refused file posted nothing
    assert "1 paid, 0 returned now" in accepted, accepted

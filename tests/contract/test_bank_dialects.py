"""The bank interface as a contract, per dialect preset: a bank host written from
specs/bank-interface.md alone (`tests/contract/bank_peer.py`: the field table and the presets
read from the spec's tables, frames and the X9.19 MAC encoded by hand) against `medswitch run`'s
daemon with three banks, one per preset (`medswitch keys form` makes their zone keys from clear
TEST ONLY components). For each: the centre signs on to the bank; the bank's counters sign on;
echo both ways (the counters on the inbound link, the bank on the centre's outbound
connection); a counter ED load (MAC1 → MAC2 → TAC); an EP load from savings (the PIN under the
counter's ZPK, the savings debit checked by the bank: MAC, PIN under the outbound ZPK); a debit
the bank leaves unanswered (98), then its reversal (0420/0421, F90 naming it) acknowledged.
Plus the golden savings debits of the spec. Imports nothing of medswitch."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.contract import pboc
from tests.contract.bank_peer import (
    Counter,
    Dialect,
    Issuer,
    decode,
    mac_verifies,
    pin_block,
    pin_of,
    presets,
)
from tests.contract.counter import (
    LOAD_FEN,
    custodian_login,
    form_key,
    load_at_counter,
    odd_parity_key,
)
from tests.contract.daemon import Deployment, free_port, running

HERE = Path(__file__).resolve().parent
EXAMPLES = json.loads((HERE.parents[1] / "specs" / "examples" / "frames.json").read_text())
PIN = "123456"  # the sandbox cards' PIN
OURS = ("messages", "hsm", "routing", "ledger", "switch", "simulators", "tests.support")
BANKS = {"medswitch": "01020000", "jpos-iso87a": "01030000", "binary-header": "01040000"}
USAGES = {"ZAK": "ZAK", "ZPK": "ZPK", "out/ZAK": "ZAK", "out/ZPK": "ZPK"}


@dataclass
class Bank:
    preset: str
    bank_id: str
    dialect: Dialect
    keys: dict[str, bytes]  # ZAK, ZPK (inbound), out/ZAK, out/ZPK: clear, TEST ONLY
    issuer: Issuer
    port: int  # the centre's inbound listener for this bank


@dataclass
class Banks:
    deployment: Deployment
    banks: dict[str, Bank]


def form_keys(home: Path, banks: dict[str, Bank], tmp: Path) -> None:
    """Each bank's zone keys formed in the deployment's key store from one clear component."""
    custodian_login(home)
    for bank in banks.values():
        for name, key in bank.keys.items():
            form_key(home, f"bank/{bank.bank_id}/{name}", USAGES[name], key, tmp)


def bank_toml(bank: Bank, first: bool) -> str:
    table = "[bank]" if first else "[[bank.links]]"
    prefix = f"bank/{bank.bank_id}"
    bins = '["621234"]' if first else f'["99{bank.bank_id[2:6]}"]'
    return (
        f'\n{table}\nenabled = true\ndialect = "{bank.preset}"\nport = {bank.port}\n'
        f'acquirer_id = "{bank.bank_id}"\nzak_alias = "{prefix}/ZAK"\n'
        f'zpk_alias = "{prefix}/ZPK"\nzmk_alias = "{prefix}/ZMK"\n'
        f'outbound_host = "127.0.0.1"\noutbound_port = {bank.issuer.port}\n'
        f'outbound_zak_alias = "{prefix}/out/ZAK"\noutbound_zpk_alias = "{prefix}/out/ZPK"\n'
        f"outbound_timeout_s = 2.0\nbins = {bins}\n"
    )


@pytest.fixture(scope="module")
def three_banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banks]:
    tmp = tmp_path_factory.mktemp("bank-contract")
    banks = {}
    for preset, bank_id in BANKS.items():
        keys = {name: odd_parity_key() for name in USAGES}
        dialect = Dialect.of(preset)
        issuer = Issuer(dialect, keys["out/ZAK"], keys["out/ZPK"], PIN, bank_id)
        banks[preset] = Bank(preset, bank_id, dialect, keys, issuer, free_port())
    try:
        with running(tmp) as first:  # the demo deployment made, then stopped
            home = first.home
        form_keys(home, banks, tmp)
        # the first bank is [bank]; [[bank.links]] must follow every plain [bank] key
        extra = "".join(bank_toml(bank, i == 0) for i, bank in enumerate(banks.values()))
        with running(tmp, extra) as deployment:
            yield Banks(deployment, banks)
    finally:
        for bank in banks.values():
            bank.issuer.close()


def card_for(deployment: Deployment, index: int, purse: int) -> tuple[pboc.Card, str]:
    entry: Any = deployment.listing()["cards"][index]
    return pboc.Card.from_image(deployment.sandbox / entry["image"], purse), entry["card_no"]


@pytest.mark.parametrize("preset", list(BANKS))
def test_a_bank_speaking_the_preset_does_the_day(three_banks: Banks, preset: str) -> None:
    bank = three_banks.banks[preset]
    issuer, keys = bank.issuer, bank.keys
    # -- the centre signs on to the bank (its outbound link), the bank echoes on that line ----
    sign_on = issuer.next_request("08")
    assert sign_on.fields[70] == "001" and sign_on.fields[32] == "09990000"
    assert issuer.echo().fields[39] == "00"

    # -- the bank's counters: sign-on, echo (not MACed: network management MAC optional) ----
    counter = Counter(bank.dialect, bank.port, bank.bank_id, keys["ZAK"])
    try:
        assert counter.exchange("0800", {70: "001"}, mac=False).fields[39] == "00"
        assert counter.exchange("0800", {70: "301"}, mac=False).fields[39] == "00"

        index = list(BANKS).index(preset)  # a card of its own per bank (the sandbox lists 3)
        ed, pan = card_for(three_banks.deployment, index, pboc.ED)
        code, _ = load_at_counter(counter, ed, pan, "600000", {})
        assert code == "00" and ed.balance_fen == LOAD_FEN

        # -- EP load from savings: the PIN under the counter's ZPK, the bank debits ----------
        ep, _ = card_for(three_banks.deployment, index, pboc.EP)
        block = pin_block(PIN, pan, keys["ZPK"])
        code, tac = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00" and tac is not None and ep.balance_fen == LOAD_FEN
        debit = issuer.next_request("02")
        assert (debit.fields[3], debit.fields[4]) == ("401000", f"{LOAD_FEN:012d}")
        assert debit.fields[11] == f"{counter.stan - 1:06d}"  # the counter's F11, kept
        assert mac_verifies(bank.dialect, keys["out/ZAK"], debit)
        pin = debit.fields[52]
        assert isinstance(pin, bytes) and pin_of(pin, pan, keys["out/ZPK"]) == PIN
        assert (debit.fields[25], debit.fields[49], debit.fields[22]) == ("00", "156", "051")

        # -- a debit the bank never answers: 98, then its reversal, acknowledged ------------
        issuer.hold_debits = True
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "98"
        held = issuer.next_request("02")
        issuer.hold_debits = False
        reversal = issuer.next_request("04", timeout_s=60)
        assert reversal.mti in ("0420", "0421") and reversal.fields[3] == "401000"
        original = reversal.text(90)
        assert original[:4] == "0200" and original[4:10] == held.fields[11]
        assert original[10:20] == held.fields[7] and int(original[20:31]) == int(bank.bank_id)
        assert mac_verifies(bank.dialect, keys["out/ZAK"], reversal)
    finally:
        counter.close()


@pytest.mark.parametrize("preset", list(BANKS))
def test_the_banks_own_requests_on_the_centres_connection_are_answered(
    three_banks: Banks, preset: str
) -> None:
    """Spec: "The bank's requests on the outbound connection" — none is dropped."""
    bank = three_banks.banks[preset]
    issuer, keys = bank.issuer, bank.keys
    counter = Counter(bank.dialect, bank.port, bank.bank_id, keys["ZAK"])
    try:
        assert counter.exchange("0800", {70: "001"}, mac=False).fields[39] == "00"
        ep, pan = card_for(three_banks.deployment, list(BANKS).index(preset), pboc.EP)
        block = pin_block(PIN, pan, keys["ZPK"])
        assert issuer.request("0200", {2: pan, 3: "310000"},
                              mac=True).fields[39] == "40"  # not on this connection
        unknown = issuer.request("0800", {70: "999"})
        assert (unknown.fields[39], unknown.fields[70]) == ("30", "999")
        assert issuer.request("0800", {70: "002"}, mac=True).fields[39] == "00"  # sign-off
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "91"  # nothing goes to a bank that signed the line off
        assert issuer.request("0800", {70: "001"}).fields[39] == "00"  # signed on again
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00"
    finally:
        counter.close()


@pytest.mark.parametrize("preset", list(BANKS))
def test_the_golden_savings_debit_reads_from_the_spec(preset: str) -> None:
    golden = EXAMPLES["bank_dialects"]
    dialect = Dialect.of(preset)
    raw = bytes.fromhex(golden["frames"][preset])
    width = 4 if dialect.length_header == "ascii4" else 2
    size = int(raw[:width]) if width == 4 else int.from_bytes(raw[:width], "big")
    assert size == len(raw) - width
    msg = decode(dialect, raw[width:])
    assert (msg.mti, msg.fields[3], msg.fields[2]) == ("0200", "401000", golden["pan"])
    assert msg.fields[7] == "1207063015"  # the clock, GMT
    assert {12, 13, 22, 25, 37, 49} <= set(msg.fields)
    assert mac_verifies(dialect, bytes.fromhex(golden["zak"]), msg)
    block = msg.fields[52]
    assert isinstance(block, bytes)
    assert pin_of(block, golden["pan"], bytes.fromhex(golden["zpk"])) == golden["pin"]


def test_the_spec_names_every_preset() -> None:
    assert set(presets()) == set(BANKS)


def test_the_suite_imports_nothing_of_medswitch() -> None:
    for path in (HERE / "test_bank_dialects.py", HERE / "bank_peer.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(OURS), f"{path.name} imports {name}"

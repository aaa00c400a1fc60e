"""The bank interface as a contract, per dialect preset: a bank host written from
specs/bank-interface.md alone (`tests/contract/bank_peer.py`: the field table and the presets
read from the spec's tables, frames and the X9.19 MAC encoded by hand) against `medswitch run`'s
daemon with three banks, one per preset (`medswitch keys form` makes their zone keys from clear
TEST ONLY components). For each: the centre signs on to the bank; the bank's counters sign on;
echo both ways (the counters on the inbound link, the bank on the centre's outbound
connection); a counter ED load (MAC1 → MAC2 → TAC); an EP load from savings (the PIN under the
counter's ZPK, the savings debit checked by the bank: MAC, PIN under the outbound ZPK); a debit
the bank leaves unanswered (98), then its reversal (0420/0421, F90 naming it) acknowledged.
A second daemon does the same with banks that override their preset (BCD numerics, no length
header, network management MACed both ways, no MAC on responses, the MAC in F64 padded by
method 2, optional debit fields omitted), and with a bank
that requires MACed network management but does not MAC its own 0810s: the centre drops them,
never signs on, and says so on /metrics. Plus the golden savings debits of the spec. Imports
nothing of medswitch."""

from __future__ import annotations

import ast
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from tests.contract.daemon import Deployment, free_port, running
from tests.contract.wire import check_value, parse_tlv, tlv, uint

HERE = Path(__file__).resolve().parent
EXAMPLES = json.loads((HERE.parents[1] / "specs" / "examples" / "frames.json").read_text())
COUNTER_TERMINAL_NO = bytes.fromhex("000000000099")  # the counter's reader, in MAC1
LOAD_FEN = 10_000
PIN = "123456"  # the sandbox cards' PIN
OURS = ("messages", "hsm", "routing", "ledger", "switch", "simulators", "tests.support")
BANKS = {"medswitch": "01020000", "jpos-iso87a": "01030000", "binary-header": "01040000"}


@dataclass(frozen=True, slots=True)
class Profile:
    """A bank of the suite: its preset, the settings its section overrides, its deployment."""

    preset: str
    bank_id: str
    overrides: dict[str, str] = field(default_factory=dict)
    deployment: str = "presets"
    macs_network: bool = True  # the bank MACs its 0810s when network_mac is required
    omit: tuple[int, ...] = ()  # omit_fields: the savings debit's optional fields left off


PROFILES = {
    **{preset: Profile(preset, bank_id) for preset, bank_id in BANKS.items()},
    "bcd-network-mac": Profile("medswitch", "01050000",
                               {"numerics": "bcd", "network_mac": "required"}, "overrides"),
    # the spec's own example: a jPOS-style bank that MACs no response (here with no header)
    "jpos-no-header": Profile("jpos-iso87a", "01060000",
                              {"length_header": "none", "response_mac": "none"}, "overrides"),
    "bcd-no-header-f64": Profile("binary-header", "01070000",
                                 {"numerics": "bcd", "length_header": "none", "mac_field": "64",
                                  "mac_padding": "method2"}, "overrides", omit=(12, 13, 37)),
    "network-mac-unsigned": Profile("medswitch", "01080000", {"network_mac": "required"},
                                    "overrides", macs_network=False),
}
DAYS = [name for name, profile in PROFILES.items() if profile.macs_network]
USAGES = {"ZAK": "ZAK", "ZPK": "ZPK", "out/ZAK": "ZAK", "out/ZPK": "ZPK"}


def odd_parity_key() -> bytes:
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in secrets.token_bytes(16))


@dataclass
class Bank:
    profile: Profile
    bank_id: str
    dialect: Dialect
    keys: dict[str, bytes]  # ZAK, ZPK (inbound), out/ZAK, out/ZPK: clear, TEST ONLY
    issuer: Issuer
    port: int  # the centre's inbound listener for this bank
    card_index: int  # its own card of the deployment's sandbox (which lists 3)
    cards: dict[int, tuple[pboc.Card, str]] = field(default_factory=dict)  # purse → card, PAN


@dataclass
class Banks:
    deployment: Deployment
    banks: dict[str, Bank]


def form_keys(home: Path, banks: dict[str, Bank], tmp: Path) -> None:
    """Each bank's zone keys formed in the deployment's key store from one clear component."""
    medswitch = str(Path(sys.executable).parent / "medswitch")
    custodians = [str(home / "custodians" / f"{c}.component") for c in ("a", "b")]
    env = {"MEDSWITCH_HOME": str(home), "PATH": "/usr/bin:/bin"}
    # The demo's key custodian logs in (README, "Operators": TEST ONLY password).
    subprocess.run([medswitch, "operators", "login", "demo-custodian"], check=True,
                   input=b"demo-custodian-password\n", capture_output=True, timeout=60, env=env)
    for bank in banks.values():
        for name, key in bank.keys.items():
            part = tmp / f"{bank.bank_id}-{name.replace('/', '-')}.component"
            part.write_text(f"{key.hex().upper()}\nKCV:{check_value(key).hex().upper()[:6]}\n")
            subprocess.run(
                [medswitch, "keys", "--home", str(home), "form",
                 f"bank/{bank.bank_id}/{name}", "--usage", USAGES[name], "-k", str(part),
                 "--key-components", "1", "-c", custodians[0], "-c", custodians[1]],
                check=True, capture_output=True, timeout=60, env=env,
            )


def bank_toml(bank: Bank, first: bool) -> str:
    table = "[bank]" if first else "[[bank.links]]"
    prefix = f"bank/{bank.bank_id}"
    bins = '["621234"]' if first else f'["99{bank.bank_id[2:6]}"]'
    overrides = "".join(f'{name} = "{value}"\n' for name, value in bank.profile.overrides.items())
    if bank.profile.omit:
        overrides += f"omit_fields = {[str(n) for n in bank.profile.omit]}\n".replace("'", '"')
    return (
        f'\n{table}\nenabled = true\ndialect = "{bank.profile.preset}"\n{overrides}'
        f"port = {bank.port}\n"
        f'acquirer_id = "{bank.bank_id}"\nzak_alias = "{prefix}/ZAK"\n'
        f'zpk_alias = "{prefix}/ZPK"\nzmk_alias = "{prefix}/ZMK"\n'
        f'outbound_host = "127.0.0.1"\noutbound_port = {bank.issuer.port}\n'
        f'outbound_zak_alias = "{prefix}/out/ZAK"\noutbound_zpk_alias = "{prefix}/out/ZPK"\n'
        f"outbound_timeout_s = 2.0\nbins = {bins}\n"
    )


def serve(tmp: Path, deployment: str) -> Iterator[Banks]:
    """The daemon with the deployment's banks, each a bank host of its own on a free port."""
    banks = {}
    for name, profile in PROFILES.items():
        if profile.deployment != deployment:
            continue
        keys = {usage: odd_parity_key() for usage in USAGES}
        dialect = Dialect.of(profile.preset, **profile.overrides)
        issuer = Issuer(dialect, keys["out/ZAK"], keys["out/ZPK"], PIN, profile.bank_id,
                        mac_network=profile.macs_network)
        banks[name] = Bank(profile, profile.bank_id, dialect, keys, issuer, free_port(),
                           len(banks))
    try:
        with running(tmp) as first:  # the demo deployment made, then stopped
            home = first.home
        form_keys(home, banks, tmp)
        # the first bank is [bank]; [[bank.links]] must follow every plain [bank] key
        extra = "".join(bank_toml(bank, i == 0) for i, bank in enumerate(banks.values()))
        with running(tmp, extra) as served:
            yield Banks(served, banks)
    finally:
        for bank in banks.values():
            bank.issuer.close()


@pytest.fixture(scope="module")
def three_banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banks]:
    """One bank per preset, as the preset has it."""
    yield from serve(tmp_path_factory.mktemp("bank-contract"), "presets")


@pytest.fixture(scope="module")
def overriding_banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banks]:
    """Banks whose sections override their preset's settings."""
    yield from serve(tmp_path_factory.mktemp("bank-overrides"), "overrides")


def bank_of(request: pytest.FixtureRequest, name: str) -> tuple[Banks, Bank]:
    fixture = {"presets": "three_banks", "overrides": "overriding_banks"}
    banks: Banks = request.getfixturevalue(fixture[PROFILES[name].deployment])
    return banks, banks.banks[name]


def balances(f54: str) -> dict[str, int]:
    """F54 ("Private fields"): 20-character entries of account type (2), amount type (2: 02),
    currency (3: 156), sign (1: C/D) and amount (12, fen) → account type: signed fen."""
    assert f54 and len(f54) % 20 == 0 and len(f54) <= 120, f54
    found = {}
    for at in range(0, len(f54), 20):
        entry = f54[at : at + 20]
        assert (entry[2:4], entry[4:7], entry[7] in "CD") == ("02", "156", True), entry
        found[entry[:2]] = int(entry[8:]) * (1 if entry[7] == "C" else -1)
    return found


def card_for(banks: Banks, bank: Bank, purse: int) -> tuple[pboc.Card, str]:
    """The bank's own card of the sandbox (read from its image once: the card, its counters
    and balance, then lives on from test to test as a real card would)."""
    if purse not in bank.cards:
        entry: Any = banks.deployment.listing()["cards"][bank.card_index]
        card = pboc.Card.from_image(banks.deployment.sandbox / entry["image"], purse)
        bank.cards[purse] = card, entry["card_no"]
    return bank.cards[purse]


def load_tlv(card: pboc.Card, init: pboc.LoadInit, amount: int) -> dict[int, bytes]:
    """INITIALIZE FOR LOAD as terminal field 58 carries it (F122 is the same TLV)."""
    return {1: card.app_serial, 2: bytes([card.purse]), 3: bytes([init.key_version]),
            4: bytes([init.algorithm_id]), 5: init.card_random, 7: uint(init.online_counter, 2),
            9: uint(init.old_balance_fen, 4), 10: uint(amount, 4), 12: init.mac1,
            16: COUNTER_TERMINAL_NO}


def load_at_counter(counter: Counter, card: pboc.Card, pan: str, f3: str,
                    extra: dict[int, str | bytes]) -> tuple[str, bytes | None]:
    """0200 then, when approved, the card's credit and 0220 with its TAC: (code, TAC)."""
    init = card.initialize_for_load(LOAD_FEN, COUNTER_TERMINAL_NO)
    data = load_tlv(card, init, LOAD_FEN)
    money = {2: pan, 3: f3, 4: f"{LOAD_FEN:012d}", 25: "91"}
    reply = counter.exchange("0200", {**money, **extra, 122: bytes.fromhex(tlv(data))})
    code = reply.text(39)
    if code != "00":
        return code, None
    answer = reply.fields[122]
    assert isinstance(answer, bytes)
    element = parse_tlv(answer)
    tac = card.credit_for_load(element[0x12], element[0x0D])  # the card checks MAC2
    # the spec's confirmation: TAC, new balance and the card date/time the load was made at
    confirm = {**data, 0x0F: tac, 0x12: element[0x12], 0x13: uint(card.balance_fen, 4)}
    confirmed = counter.exchange("0220", {**money, 122: bytes.fromhex(tlv(confirm))})
    assert confirmed.text(39) == "00", confirmed.fields
    return code, tac


def signs_network(bank: Bank) -> bool:
    return bank.dialect.network_mac == "required"


def sign_on_counter(bank: Bank) -> Counter:
    """The bank's counters connect and sign on (network management MACed only when the
    dialect requires it: then an unsigned sign-on is refused A0 first)."""
    counter = Counter(bank.dialect, bank.port, bank.bank_id, bank.keys["ZAK"])
    if signs_network(bank):
        assert counter.exchange("0800", {70: "001"}, mac=False).fields[39] == "A0"
    assert counter.exchange("0800", {70: "001"}, mac=signs_network(bank)).fields[39] == "00"
    return counter


@pytest.mark.parametrize("name", DAYS)
def test_a_bank_speaking_the_dialect_does_the_day(
    request: pytest.FixtureRequest, name: str
) -> None:
    banks, bank = bank_of(request, name)
    issuer, keys = bank.issuer, bank.keys
    # -- the centre signs on to the bank (its outbound link), the bank echoes on that line ----
    sign_on = issuer.next_request("08")
    assert sign_on.fields[70] == "001" and sign_on.fields[32] == "09990000"
    if signs_network(bank):
        assert mac_verifies(bank.dialect, keys["out/ZAK"], sign_on)
    assert issuer.echo().fields[39] == "00"

    # -- the bank's counters: sign-on, echo -------------------------------------------------
    counter = sign_on_counter(bank)
    try:
        assert counter.exchange("0800", {70: "301"}, mac=signs_network(bank)).fields[39] == "00"

        ed, pan = card_for(banks, bank, pboc.ED)
        code, _ = load_at_counter(counter, ed, pan, "600000", {})
        assert code == "00" and ed.balance_fen == LOAD_FEN

        # -- EP load from savings: the PIN under the counter's ZPK, the bank debits ----------
        ep, _ = card_for(banks, bank, pboc.EP)
        block = pin_block(PIN, pan, keys["ZPK"])
        code, tac = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00" and tac is not None and ep.balance_fen == LOAD_FEN
        debit = issuer.next_request("02")
        assert (debit.fields[3], debit.fields[4]) == ("401000", f"{LOAD_FEN:012d}")
        assert debit.fields[11] == f"{counter.stan - 1:06d}"  # the counter's F11, kept
        assert mac_verifies(bank.dialect, keys["out/ZAK"], debit)
        expected_mac = 64 if bank.dialect.mac_field == 64 else 128  # no field above 64
        assert expected_mac in debit.fields and (192 - expected_mac) not in debit.fields
        pin = debit.fields[52]
        assert isinstance(pin, bytes) and pin_of(pin, pan, keys["out/ZPK"]) == PIN
        assert (debit.fields[25], debit.fields[49], debit.fields[22]) == ("00", "156", "051")
        carried = {12, 13, 22, 25, 37, 49} - set(bank.profile.omit)
        assert carried <= set(debit.fields) and not set(bank.profile.omit) & set(debit.fields)

        # -- the counter's balance inquiry: both loads confirmed into the card's shadows -----
        inquiry = counter.exchange("0200", {2: pan, 3: "310000"})
        assert inquiry.fields[39] == "00"
        shown = balances(inquiry.text(54))
        assert (shown["92"], shown["93"]) == (LOAD_FEN, LOAD_FEN), shown

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


@pytest.mark.parametrize("name", DAYS)
def test_the_banks_own_requests_on_the_centres_connection_are_answered(
    request: pytest.FixtureRequest, name: str
) -> None:
    """Spec: "The bank's requests on the outbound connection" — none is dropped."""
    banks, bank = bank_of(request, name)
    issuer, keys = bank.issuer, bank.keys
    signed = signs_network(bank)
    counter = sign_on_counter(bank)
    try:
        ep, pan = card_for(banks, bank, pboc.EP)
        block = pin_block(PIN, pan, keys["ZPK"])
        assert issuer.request("0200", {2: pan, 3: "310000"},
                              mac=True).fields[39] == "40"  # not on this connection
        unknown = issuer.request("0800", {70: "999"})
        assert (unknown.fields[39], unknown.fields[70]) == ("30", "999")
        if signed:  # network management must be MACed: an unsigned echo is refused
            assert issuer.request("0800", {70: "301"}).fields[39] == "A0"
        assert issuer.request("0800", {70: "002"}, mac=True).fields[39] == "00"  # sign-off
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "91"  # nothing goes to a bank that signed the line off
        assert issuer.request("0800", {70: "001"}, mac=signed).fields[39] == "00"  # on again
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00"
    finally:
        counter.close()


def metric(banks: Banks, name: str, **labels: str) -> float | None:
    """One sample of the daemon's /metrics (its [http] port), None when absent."""
    url = f"http://127.0.0.1:{banks.deployment.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=15) as response:
        text = response.read().decode()
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found[1])) == labels:
            return float(found[2])
    return None


def test_a_bank_that_does_not_mac_its_network_replies_is_never_signed_on(
    overriding_banks: Banks,
) -> None:
    """network_mac = "required": the centre MACs its sign-on, and drops the bank's unsigned
    0810 as `missing_mac`, so the link never signs on; /metrics says both."""
    bank = overriding_banks.banks["network-mac-unsigned"]
    sign_on = bank.issuer.next_request("08")
    assert sign_on.fields[70] == "001"
    assert mac_verifies(bank.dialect, bank.keys["out/ZAK"], sign_on)
    labels = {"bank": bank.bank_id}
    dropped = None
    for _ in range(100):  # bounded: the 0810 is dropped as soon as it arrives
        dropped = metric(overriding_banks, "medswitch_bank_responses_dropped_total",
                         **labels, reason="missing_mac")
        if dropped:
            break
        time.sleep(0.2)
    assert dropped is not None and dropped >= 1
    assert metric(overriding_banks, "medswitch_bank_signed_on", **labels,
                  connection="outbound") == 0


def test_stray_replies_get_no_answer_and_undefined_requests_a_code(
    overriding_banks: Banks,
) -> None:
    """A reply where a request belongs is not answered (inbound); on the centre's connection a
    reply to nothing it sent is dropped as `unmatched`. A request MTI the interface does not
    define is refused 30 under its response MTI on either connection."""
    bank = overriding_banks.banks["jpos-no-header"]  # no header: a stray must not desync
    counter = sign_on_counter(bank)
    try:
        counter.send("0810", {70: "301", 39: "00"})
        echo = counter.exchange("0800", {70: "301"}, mac=False)  # the next answer is the echo's
        assert echo.fields[39] == "00"
        assert counter.exchange("0600", {70: "301"}, mac=False).fields[39] == "30"
        assert counter.exchange("0800", {70: "301"}, mac=False).fields[39] == "00"  # still open
    finally:
        counter.close()
    assert bank.issuer.request("0600", {70: "301"}).fields[39] == "30"
    assert dropped_once(overriding_banks, bank, "unmatched",
                        lambda: bank.issuer.send("0810", {70: "301", 39: "00"}))


def dropped_once(banks: Banks, bank: Bank, reason: str, send: Callable[[], None]) -> bool:
    """Whether what ``send`` sends the centre drops, counted once under ``reason``."""
    labels = {"bank": bank.bank_id, "reason": reason}
    before = metric(banks, "medswitch_bank_responses_dropped_total", **labels) or 0
    send()
    after = before
    for _ in range(100):  # bounded
        after = metric(banks, "medswitch_bank_responses_dropped_total", **labels) or 0
        if after > before:
            break
        time.sleep(0.2)
    return after == before + 1


def test_responses_dropped_are_counted_by_reason(overriding_banks: Banks) -> None:
    """On the centre's connection, a response whose MAC is wrong is dropped as `bad_mac`, one
    that does not decode as `unreadable`; the link stays up."""
    bank = overriding_banks.banks["bcd-network-mac"]  # a length header: a cut frame is whole
    wrong = odd_parity_key()
    reply = {70: "301", 39: "00"}
    assert dropped_once(overriding_banks, bank, "bad_mac",
                        lambda: bank.issuer.send("0810", reply, zak=wrong))
    assert dropped_once(overriding_banks, bank, "unreadable",
                        lambda: bank.issuer.send("0810", reply, cut=3))
    assert bank.issuer.echo().fields[39] == "00"  # the connection serves on


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


def test_metrics_show_each_links_state(overriding_banks: Banks) -> None:
    """/metrics: per bank and connection, whether the link is up and signed on."""
    bank = overriding_banks.banks["bcd-network-mac"]
    labels = {"bank": bank.bank_id}
    counter = sign_on_counter(bank)
    try:
        for connection in ("inbound", "outbound"):
            for name in ("medswitch_bank_link_up", "medswitch_bank_signed_on"):
                value = metric(overriding_banks, name, **labels, connection=connection)
                assert value == 1, (name, connection)
        assert metric(overriding_banks, "medswitch_saf_depth", **labels) == 0
    finally:
        counter.close()

"""The bank interface as a contract, per dialect preset: a bank host written from
specs/bank-interface.md alone (`bank_peer.py`, `bank_codec.py`: the field table and the presets
read from the spec's tables, frames and the X9.19 MAC encoded by hand; the banks and their
deployment in `bank_banks.py`) against `medswitch run`'s
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
never signs on, and says so on /metrics; and with banks whose request_mac is "none" or
"optional" (unMACed requests served, a wrong MAC refused A0 under optional). Plus the golden
savings debits of the spec. The deployments are `conftest.py`'s, shared with
`test_bank_key_change.py`. Imports nothing of medswitch."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from tests.contract import pboc
from tests.contract.bank_banks import (
    BANKS,
    DAYS,
    PIN,
    PROFILES,
    Bank,
    Banks,
    balances,
    card_for,
    dropped_once,
    metric,
    sign_on_counter,
    signs_network,
)
from tests.contract.bank_codec import Dialect, decode, mac_verifies, pin_block, pin_of, presets
from tests.contract.counter import LOAD_FEN, load_at_counter, odd_parity_key

HERE = Path(__file__).resolve().parent
EXAMPLES = json.loads((HERE.parents[1] / "specs" / "examples" / "frames.json").read_text())
OURS = ("messages", "hsm", "routing", "ledger", "switch", "simulators", "tests.support")


def bank_of(request: pytest.FixtureRequest, name: str) -> tuple[Banks, Bank]:
    fixture = {"presets": "three_banks", "overrides": "overriding_banks"}
    banks: Banks = request.getfixturevalue(fixture[PROFILES[name].deployment])
    return banks, banks.banks[name]


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
        before = ed.balance_fen
        code, _ = load_at_counter(counter, ed, pan, "600000", {})
        assert code == "00" and ed.balance_fen == before + LOAD_FEN

        # -- EP load from savings: the PIN under the counter's ZPK, the bank debits ----------
        ep, _ = card_for(banks, bank, pboc.EP)
        before = ep.balance_fen
        block = pin_block(PIN, pan, keys["ZPK"])
        code, tac = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00" and tac is not None and ep.balance_fen == before + LOAD_FEN
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
        assert (shown["92"], shown["93"]) == (ed.balance_fen, ep.balance_fen), shown

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
    for path in (HERE / "test_bank_dialects.py", HERE / "bank_peer.py", HERE / "bank_codec.py",
                 HERE / "bank_banks.py", HERE / "bank_keys.py", HERE / "counter.py",
                 HERE / "conftest.py", HERE / "test_bank_key_change.py"):
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


@pytest.mark.parametrize("name", ["request-mac-none", "request-mac-optional"])
def test_request_mac_none_and_optional_serve_unmaced_requests(
    overriding_banks: Banks, name: str
) -> None:
    """Spec: MAC policy. request_mac = "none": the bank's financial requests are served
    without a MAC (none checked), the centre's savings debit carries none. "optional": served
    with or without one, a wrong one refused A0; the centre MACs its debit."""
    banks, bank = overriding_banks, overriding_banks.banks[name]
    counter = sign_on_counter(bank)
    try:
        ep, pan = card_for(banks, bank, pboc.EP)
        inquiry = {2: pan, 3: "310000"}
        unsigned = counter.exchange("0200", inquiry, mac=False)
        assert unsigned.fields[39] == "00" and 128 not in unsigned.fields
        wrong = counter.exchange("0200", inquiry, zak=odd_parity_key()).fields[39]
        if name == "request-mac-optional":
            assert counter.exchange("0200", inquiry).fields[39] == "00"  # reply MAC checked
            assert wrong == "A0"
        else:
            assert wrong == "00"  # not checked
        block = pin_block(PIN, pan, bank.keys["ZPK"])
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})  # unMACed too
        assert code == "00"
    finally:
        counter.close()
    debit = bank.issuer.next_request("02")
    assert (128 in debit.fields) == (name == "request-mac-optional")

"""The bank hosts of the bank contract suite (`test_bank_dialects.py`,
`test_bank_key_change.py`): each bank's profile (a preset and the settings its section
overrides), its clear TEST ONLY zone keys formed in the deployment's key store (and a ZMK for a
bank whose keys change), its `[bank]` / `[[bank.links]]` section, `medswitch run` serving them,
and what a bank's counter does (sign-on, a load at the counter with its confirmation, a balance
inquiry's F54) and sees on /metrics. Written from the specs alone; imports nothing of medswitch."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.contract import pboc
from tests.contract.bank_codec import Dialect
from tests.contract.bank_peer import Counter, Issuer
from tests.contract.counter import custodian_login, form_key, odd_parity_key
from tests.contract.daemon import Deployment, free_port, running

PIN = "123456"  # the sandbox cards' PIN
OVERLAP_S = 1.0  # the key-change bank's key_overlap_s
FORMING_AT_ONCE = 4  # `medswitch keys form` processes at a time
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
    settings: str = ""  # more of its section's settings, as TOML lines
    day: bool = True  # does the whole day (test_a_bank_speaking_the_dialect_does_the_day)
    zmk: bool = False  # has a ZMK: its keys change both ways


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
    # keys changed both ways; the previous ZAK verifies 1 s after a change
    "key-change": Profile("medswitch", "01090000", {}, "overrides",
                          settings=f"key_overlap_s = {OVERLAP_S}\n", day=False, zmk=True),
    "request-mac-none": Profile("medswitch", "01100000", {"request_mac": "none"}, "overrides",
                                day=False),
    "request-mac-optional": Profile("medswitch", "01110000", {"request_mac": "optional"},
                                    "overrides", day=False),
}

DAYS = [name for name, profile in PROFILES.items() if profile.macs_network and profile.day]
USAGES = {"ZAK": "ZAK", "ZPK": "ZPK", "out/ZAK": "ZAK", "out/ZPK": "ZPK", "ZMK": "ZMK"}


@dataclass
class Bank:
    profile: Profile
    bank_id: str
    dialect: Dialect
    keys: dict[str, bytes]  # ZAK, ZPK (inbound), out/ZAK, out/ZPK: clear, TEST ONLY
    issuer: Issuer
    port: int  # the centre's inbound listener for this bank
    card_index: int  # its card of the deployment's sandbox (which lists 3: banks share them)


@dataclass
class Banks:
    deployment: Deployment
    banks: dict[str, Bank]
    cards: dict[tuple[int, int], tuple[pboc.Card, str]] = field(default_factory=dict)


def form_keys(home: Path, banks: dict[str, Bank], tmp: Path) -> None:
    """Each bank's zone keys formed in the deployment's key store from one clear component,
    a few `medswitch keys form` at a time (the key store takes appends from several processes;
    each key is its own alias): some thirty one after the other were most of a deployment's
    start."""
    custodian_login(home)
    steps = [(f"bank/{bank.bank_id}/{name}", USAGES[name], key)
             for bank in banks.values() for name, key in bank.keys.items()]
    with ThreadPoolExecutor(max_workers=FORMING_AT_ONCE) as pool:
        for done in [pool.submit(form_key, home, *step, tmp) for step in steps]:
            done.result()


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
        f"outbound_timeout_s = 2.0\nbins = {bins}\n{bank.profile.settings}"
    )


def serve(tmp: Path, deployment: str) -> Iterator[Banks]:
    """The daemon with the deployment's banks, each a bank host of its own on a free port."""
    banks = {}
    for name, profile in PROFILES.items():
        if profile.deployment != deployment:
            continue
        keys = {name: odd_parity_key() for name in USAGES if name != "ZMK" or profile.zmk}
        dialect = Dialect.of(profile.preset, **profile.overrides)
        issuer = Issuer(dialect, keys["out/ZAK"], keys["out/ZPK"], PIN, profile.bank_id,
                        mac_network=profile.macs_network, zmk=keys.get("ZMK"))
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
    """The bank's card of the sandbox (read from its image once: the card, its counters and
    balance, then lives on from test to test as a real card would; banks past the sandbox's
    count share one)."""
    cards: Any = banks.deployment.listing()["cards"]
    index = bank.card_index % len(cards)
    if (index, purse) not in banks.cards:
        entry = cards[index]
        card = pboc.Card.from_image(banks.deployment.sandbox / entry["image"], purse)
        banks.cards[index, purse] = card, entry["card_no"]
    return banks.cards[index, purse]


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

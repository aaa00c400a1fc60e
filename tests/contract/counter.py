"""A bank joined to `make run`'s daemon as specs/bank-interface.md tells an outsider to: its zone
keys formed in the deployment's key store from clear TEST ONLY components (`medswitch keys
form`, by the demo's key custodian), and a load at the bank's counter (MAC1 → MAC2 → TAC, the
TLV in F122). Imports nothing of medswitch."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from tests.contract import pboc
from tests.contract.bank_peer import Counter
from tests.contract.wire import check_value, parse_tlv, tlv, uint

COUNTER_TERMINAL_NO = bytes.fromhex("000000000099")  # the counter's reader, in MAC1
LOAD_FEN = 10_000


def odd_parity_key() -> bytes:
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in secrets.token_bytes(16))


def medswitch(home: Path, *args: str, typed: bytes | None = None) -> str:
    """`medswitch ARGS` in the deployment's home (exit 0 asserted): its standard output."""
    env = {"MEDSWITCH_HOME": str(home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(Path(sys.executable).parent / "medswitch"), *args], input=typed,
                          capture_output=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout.decode()


def custodian_login(home: Path) -> None:
    """The demo's key custodian logs in (README, "Operators": TEST ONLY password)."""
    medswitch(home, "operators", "login", "demo-custodian", typed=b"demo-custodian-password\n")


def form_key(home: Path, alias: str, usage: str, key: bytes, tmp: Path) -> None:
    """ALIAS formed in the key store from one clear component (the key itself, with its KCV)."""
    part = tmp / f"{alias.replace('/', '-')}.component"
    part.write_text(f"{key.hex().upper()}\nKCV:{check_value(key).hex().upper()[:6]}\n")
    custodians = [str(home / "custodians" / f"{c}.component") for c in ("a", "b")]
    medswitch(home, "keys", "--home", str(home), "form", alias, "--usage", usage, "-k",
              str(part), "--key-components", "1", "-c", custodians[0], "-c", custodians[1])


def load_tlv(card: pboc.Card, init: pboc.LoadInit, amount: int) -> dict[int, bytes]:
    """INITIALIZE FOR LOAD as terminal field 58 carries it (F122 is the same TLV)."""
    return {1: card.app_serial, 2: bytes([card.purse]), 3: bytes([init.key_version]),
            4: bytes([init.algorithm_id]), 5: init.card_random, 7: uint(init.online_counter, 2),
            9: uint(init.old_balance_fen, 4), 10: uint(amount, 4), 12: init.mac1,
            16: COUNTER_TERMINAL_NO}


def load_at_counter(counter: Counter, card: pboc.Card, pan: str, f3: str,
                    extra: dict[int, str | bytes],
                    amount: int = LOAD_FEN) -> tuple[str, bytes | None]:
    """0200 then, when approved, the card's credit and 0220 with its TAC: (code, TAC)."""
    init = card.initialize_for_load(amount, COUNTER_TERMINAL_NO)
    data = load_tlv(card, init, amount)
    money = {2: pan, 3: f3, 4: f"{amount:012d}", 25: "91"}
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

"""Item 6 of issue 19: custodians' key cards through `medswitch keys`. Each custodian's LMK
component (and a transport-key component) is written at the ceremony onto the custodian's
PIN-protected card and read back only into the HSM: the channel never carries a component in
clear, a wrong PIN counts down and blocks the card, a slot is written once. The cards sit in
readers as virtual cards here (the CLI's ``connect`` hook); tests/switch/test_pcsc.py runs the
same through pcscd and vpcd."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from hsm.des import kcv
from hsm.keycard import HsmIdentity, ReadRequest
from hsm.lmk import Component, combine
from simulators import keycard as keycard_simulator
from simulators.keycard import KeyCardState, VirtualKeyCard
from switch.card_io import keycard
from switch.card_io.connection import DirectConnection
from switch.cli import main
from switch.key_home import hsm_identity


class Sniffed:
    """A card whose every command and answer is recorded (what a reader's wire shows)."""

    def __init__(self, card: VirtualKeyCard) -> None:
        self.card = card
        self.wire: list[bytes] = []

    def power_on(self) -> bytes:
        return self.card.power_on()

    def power_off(self) -> None:
        self.card.power_off()

    def process(self, apdu: bytes) -> bytes:
        answer = self.card.process(apdu)
        self.wire += [apdu, answer]
        return answer


def cli(home: Path, readers: dict[str, Sniffed], *args: str, typed: str = "",
        ok: bool = True) -> Result:
    def connect(name: str) -> DirectConnection:
        return DirectConnection(readers[name], name)

    result = CliRunner().invoke(main, ["keys", "--home", str(home), "--operator", "alice", *args],
                                input=typed, obj={"connect": connect})
    assert (result.exit_code == 0) is ok, result.output
    return result


def test_components_live_on_pin_protected_cards(tmp_path: Path) -> None:
    home = tmp_path / "home"
    readers = {r: Sniffed(VirtualKeyCard(KeyCardState.new())) for r in ("r-alice", "r-bob")}
    pins = {"r-alice": "1234", "r-bob": "567890"}
    for reader, who in (("r-alice", "alice"), ("r-bob", "bob")):
        pin = pins[reader]
        cli(home, readers, "key-card", "init", "--reader", reader, "--custodian", who,
            typed=f"{pin}\n{pin}\n")
        out = cli(home, readers, "component", "--custodian", who, "--key-card", reader,
                  typed=f"{pin}\n").output
        assert f"written to the key card in {reader}, slot 1" in out
    again = cli(home, readers, "key-card", "init", "--reader", "r-alice", "--custodian", "eve",
                typed="9999\n9999\n", ok=False)
    assert "already has a PIN" in again.output

    # The LMK formed from both cards, each after its custodian's PIN.
    clear = [readers[r].card.state.slots[1].value for r in ("r-alice", "r-bob")]
    lmk_kcv = kcv(combine([Component(c) for c in clear], minimum=2))
    cards = ["-c", "key-card:r-alice", "-c", "key-card:r-bob"]
    both = f"{pins['r-alice']}\n{pins['r-bob']}\n"
    out = cli(home, readers, "lmk-form", "--new", *cards, typed=both).output
    assert f"LMK KCV {lmk_kcv}" in out
    cli(home, readers, "generate", "zmk/bank1", "--usage", "ZMK", *cards, typed=both)

    # A transport-key component in slot 2 of alice's card, with bob's on paper.
    cli(home, readers, "component", "--custodian", "alice", "--key-card", "r-alice", "--slot",
        "2", "--label", "BUREAU", typed="1234\n")
    paper = tmp_path / "bureau.bob"
    cli(home, readers, "component", "--custodian", "bob", "--out", str(paper))
    out = cli(home, readers, "form", "bureau/acme", "--usage", "BUREAU_KEK", "-k",
              "key-card:r-alice#2", "-k", str(paper), *cards, typed=both + "1234\n").output
    bureau = combine([Component(readers["r-alice"].card.state.slots[2].value),
                      Component.parse(paper.read_text().splitlines()[0])])
    assert f"bureau/acme v1 BUREAU_KEK KCV {kcv(bureau)}" in out
    status = cli(home, readers, "key-card", "status", "--reader", "r-alice").output
    assert "3 PIN tries left" in status
    assert f"slot 1\tLMK\tKCV {kcv(clear[0])}" in status and "slot 2\tBUREAU" in status

    # Nothing on the readers' wire, in the home or the audit log shows a component in clear.
    secrets = [*clear, readers["r-alice"].card.state.slots[2].value]
    wire = b"".join(b"".join(r.wire) for r in readers.values())
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in wire and secret.hex().upper().encode() not in written
    audit = [json.loads(line)["what"] for line in (home / "audit.jsonl").read_text().split("\n")
             if line]
    assert audit.count("keycard.init") == 2 and audit.count("keycard.write") == 3

    # A slot is written once.
    refused = cli(home, readers, "component", "--custodian", "alice", "--key-card", "r-alice",
                  typed="1234\n", ok=False)
    assert "written already" in refused.output


def test_wrong_pins_count_down_and_block(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keycard_simulator.main(["new", str(tmp_path / "alice.keycard.json")])  # a blank card's file
    card = VirtualKeyCard.load(tmp_path / "alice.keycard.json")
    assert card.state.pin is None and not card.state.slots
    readers = {"r": Sniffed(card)}
    cli(home, readers, "key-card", "init", "--reader", "r", "--custodian", "alice",
        typed="2468\n2468\n")
    cli(home, readers, "component", "--custodian", "alice", "--key-card", "r", typed="2468\n")
    paper = tmp_path / "b.component"
    cli(home, readers, "component", "--custodian", "bob", "--out", str(paper))
    sources = ["-c", "key-card:r", "-c", str(paper)]

    out = cli(home, readers, "lmk-form", "--new", *sources, typed="1111\n", ok=False).output
    assert "wrong PIN: 2 tries left" in out
    out = cli(home, readers, "lmk-form", "--new", *sources, typed="2222\n", ok=False).output
    assert "wrong PIN: 1 try left" in out
    cli(home, readers, "lmk-form", "--new", *sources, typed="2468\n")  # the count starts again
    assert "3 PIN tries left" in cli(home, readers, "key-card", "status", "--reader", "r").output
    for left in ("2 tries left", "1 try left", "blocked"):
        out = cli(home, readers, "lmk-form", *sources, typed="0000\n", ok=False).output
        assert left in out, out
    out = cli(home, readers, "lmk-form", *sources, typed="2468\n", ok=False).output
    assert "the key card is blocked" in out
    assert "blocked" in cli(home, readers, "key-card", "status", "--reader", "r").output
    assert VirtualKeyCard.load(tmp_path / "alice.keycard.json").state.tries_left == 0

    # Without the PIN the card answers READ COMPONENT with 6982, to anyone.
    fresh = VirtualKeyCard(KeyCardState.new())
    conn = DirectConnection(fresh)
    conn.connect()
    assert conn.transmit(bytes.fromhex("00A4040007D1560000054B43"))[1] == 0x9000
    assert conn.transmit(bytes.fromhex("80B2010060") + bytes(96) + b"\x00")[1] == 0x6982


def test_a_card_answers_only_the_hsm_it_is_bound_to(tmp_path: Path) -> None:
    """A custodian's card and PIN in another deployment's machine give nothing: the CLI says
    whose card it is, and the card itself refuses a read its HSM did not sign (6988)."""
    home, other = tmp_path / "home", tmp_path / "other"
    card = VirtualKeyCard(KeyCardState.new())
    readers = {"r": Sniffed(card)}
    cli(home, readers, "key-card", "init", "--reader", "r", "--custodian", "alice",
        typed="2468\n2468\n")
    cli(home, readers, "component", "--custodian", "alice", "--key-card", "r", typed="2468\n")
    identity = hsm_identity(home)
    status = cli(home, readers, "key-card", "status", "--reader", "r").output
    assert f"bound to HSM {identity.fingerprint}" in status
    paper = tmp_path / "b.component"
    cli(other, readers, "component", "--custodian", "bob", "--out", str(paper))
    hsm_identity(other, create=True)
    out = cli(other, readers, "lmk-form", "--new", "-c", "key-card:r", "-c", str(paper),
              typed="2468\n", ok=False).output
    assert f"is bound to HSM {identity.fingerprint}, not this one" in out

    conn = DirectConnection(card)
    conn.connect()
    keycard.select(conn)
    keycard.verify(conn, "2468")
    stranger = ReadRequest(HsmIdentity.generate(), 1)
    assert conn.transmit(bytes.fromhex("80B2010060") + stranger.data + b"\x00")[1] == 0x6988
    own = ReadRequest(identity, 1)
    answer = keycard.read_component(conn, 1, own.data)
    part = own.open(keycard.public_key(conn), 1, answer, card.state.slots[1].kcv)
    assert part.kcv == card.state.slots[1].kcv
    assert card.state.tries_left == 3  # the refused read cost no PIN try

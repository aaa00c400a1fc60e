"""A virtual card with the record key, and the centre's scripts MACed for its challenges as the
HSM does it (hsm.cardcrypto): the card-level tests of the record book and of chained scripts."""

from __future__ import annotations

from collections.abc import Sequence

from hsm import cardcrypto
from simulators.card import CardKey, VirtualCard
from simulators.card.state import KEY_APP_MAINT
from tests.support.cards import SELECT_APP, ok, v4_card

DRK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def book_card() -> VirtualCard:
    """The V4 card with the record key, its challenges random (not scripted)."""
    state = v4_card().state
    state.keys[(KEY_APP_MAINT, 2)] = CardKey(KEY_APP_MAINT, 2, 1, 0, DRK)
    card = VirtualCard(state)
    ok(card, SELECT_APP)
    return card


def scripted(card: VirtualCard, command: bytes, key: bytes = DRK) -> bytes:
    """The command MACed for the card's fresh challenge, as the centre's HSM does it."""
    challenge = ok(card, "0084000004")
    return command + cardcrypto.script_mac(key, challenge, command)


def chained(challenge: bytes, commands: Sequence[bytes], key: bytes = DRK) -> list[bytes]:
    """A multi-command script for one challenge: command i MACed with IV challenge ‖ i."""
    return [
        command + cardcrypto.script_mac(key, challenge, command, sequence)
        for sequence, command in enumerate(commands)
    ]

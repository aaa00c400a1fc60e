"""Which HSM key a card operation uses: the card master key of the card's key version,
diversified by the card's application serial (its last 8 bytes; reference §1.2).

>>> from datetime import date
>>> card = CardRecord("6212340000000016", "3100000000000001", "c1", 1, "active", date(2030, 1, 1))
>>> path = card_key(KeyUsage.MK_LOAD, card)
>>> path.master.alias, path.master.version, path.factors[0].hex()
('card/MK_LOAD', 1, '3100000000000001')
"""

from __future__ import annotations

from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from hsm.pboc import card_factor
from routing.context import CardRecord


def card_master_alias(usage: KeyUsage) -> str:
    """Card master keys: one alias per usage, one version per card key version."""
    return f"card/{usage.value}"


def card_key(usage: KeyUsage, card: CardRecord) -> CardKeyPath:
    master = KeyRef(card_master_alias(usage), card.key_version, usage)
    return CardKeyPath(master, (card_factor(card.serial_bytes),))

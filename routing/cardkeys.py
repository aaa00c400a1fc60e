"""Which HSM key a card operation uses: the card master key of the card's key version,
diversified by the card's application serial (its last 8 bytes; reference §1.2).

>>> from datetime import date
>>> card = CardRecord("6212340000000016", "3100000000000001", "c1", 1, "active", date(2030, 1, 1))
>>> path = card_key(KeyUsage.MK_LOAD, card)
>>> path.master.alias, path.master.version, path.factors[0].hex()
('card/MK_LOAD', 1, '3100000000000001')
"""

from __future__ import annotations

from functools import lru_cache

from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from hsm.pboc import card_factor
from routing.context import CardRecord


def card_master_alias(usage: KeyUsage) -> str:
    """Card master keys: one alias per usage, one version per card key version."""
    return f"card/{usage.value}"


def card_key(usage: KeyUsage, card: CardRecord, key_version: int | None = None) -> CardKeyPath:
    """The path of the card's key version, or of ``key_version`` (a record made by an older
    card generation)."""
    version = card.key_version if key_version is None else key_version
    return _card_key(usage, card.serial_bytes, version)


@lru_cache(maxsize=4096)
def _card_key(usage: KeyUsage, serial: bytes, key_version: int) -> CardKeyPath:
    """Kept for the card's next operation (a cardholder comes back; an upload holds many of a
    card's records): building a path — reference, factor, checks — costs about as much Python
    as the TAC check it serves. Paths are values: a kept one is never stale."""
    master = KeyRef(card_master_alias(usage), key_version, usage)
    return CardKeyPath(master, (card_factor(serial),))

"""Key usages (DESIGN §4 hierarchy) and the references other layers hold instead of keys.

>>> KeyRef("tmk/00000001", 1, KeyUsage.TMK, "08D7B4")
KeyRef(alias='tmk/00000001', version=1, usage=<KeyUsage.TMK: 'TMK'>, kcv='08D7B4')
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hsm.errors import InvalidInputError, KeyUsageError


class KeyUsage(enum.StrEnum):
    """What a key may be used for. One key, one usage."""

    ZMK = "ZMK"  # zone master key per bank: wraps ZPK/ZAK/file keys on exchange
    ZPK = "ZPK"  # zone PIN key on a bank link
    ZAK = "ZAK"  # zone MAC key on a bank link (X9.19)
    FILE = "FILE"  # file key per counterparty: MAC and encryption of batch files
    TMK = "TMK"  # terminal master key: wraps the sign-on working keys
    PIK = "PIK"  # terminal PIN key
    MAK = "MAK"  # terminal MAC key
    TDK = "TDK"  # terminal data (track/bill) encryption key
    MK_LOAD = "MK_LOAD"  # card master keys per key version, diversified per card
    MK_PURCHASE = "MK_PURCHASE"
    MK_TAC = "MK_TAC"
    MK_UNLOAD = "MK_UNLOAD"
    MK_PIN_RELOAD = "MK_PIN_RELOAD"
    MK_PIN_UNBLOCK = "MK_PIN_UNBLOCK"
    MK_APP_MAINT = "MK_APP_MAINT"
    MK_CONTROL = "MK_CONTROL"  # card/application master control key (personalisation)
    MK_RECORD = "MK_RECORD"  # the card's record book: health data and visit records (DRK)
    DATA_CHECK = "DATA_CHECK"  # card data check code key
    PSAM_TRANSPORT = "PSAM_TRANSPORT"  # PSAM transport key: wraps the purchase key into PSAMs
    PERSONAL_DATA = "PERSONAL_DATA"  # seals names and ID numbers at rest (hsm.personal)
    PERSONAL_INDEX = "PERSONAL_INDEX"  # keyed hash of ID numbers: lookups without clear text
    # The centre's RSA-2048 key signing the card's holder and health data (hsm.signing): its
    # private part never leaves the HSM, its public part is published (specs/card-layout.md).
    CARD_SIGN = "CARD_SIGN"
    # Transport keys shared with outside parties (specs/key-ceremony.md): what leaves goes
    # under one of them, as hsm.policy allows.
    KIF_KEK = "KIF_KEK"  # a key-injection facility's: terminals' TMKs travel under it
    BUREAU_KEK = "BUREAU_KEK"  # a card personalisation bureau's: card master keys
    PSAM_KEK = "PSAM_KEK"  # the PSAM issuer's: the purchase master key and PSAM transport key


# TR-31 header usage, mode of use and exportability for each usage (the exact usage is bound
# again in a proprietary optional block, see hsm.keyblock). A key generated or formed
# `exportable` gets "E" instead (hsm.policy: keys leaving in a TR-31 block or as components).
TR31_ATTRIBUTES: dict[KeyUsage, tuple[str, str, str]] = {
    KeyUsage.ZMK: ("K0", "B", "N"),
    KeyUsage.TMK: ("K0", "B", "N"),
    KeyUsage.PSAM_TRANSPORT: ("K0", "E", "N"),
    KeyUsage.KIF_KEK: ("K0", "B", "N"),
    KeyUsage.BUREAU_KEK: ("K0", "B", "N"),
    KeyUsage.PSAM_KEK: ("K0", "B", "N"),
    KeyUsage.ZPK: ("P0", "B", "E"),
    KeyUsage.PIK: ("P0", "B", "E"),
    KeyUsage.ZAK: ("M3", "C", "E"),
    KeyUsage.MAK: ("M0", "C", "E"),
    KeyUsage.TDK: ("D0", "B", "E"),
    KeyUsage.FILE: ("D0", "B", "N"),
    KeyUsage.MK_LOAD: ("E6", "X", "N"),
    KeyUsage.MK_PURCHASE: ("E6", "X", "N"),
    KeyUsage.MK_TAC: ("E6", "X", "N"),
    KeyUsage.MK_UNLOAD: ("E6", "X", "N"),
    KeyUsage.MK_PIN_RELOAD: ("E6", "X", "N"),
    KeyUsage.MK_PIN_UNBLOCK: ("E6", "X", "N"),
    KeyUsage.MK_APP_MAINT: ("E6", "X", "N"),
    KeyUsage.MK_CONTROL: ("E5", "X", "N"),
    KeyUsage.MK_RECORD: ("E6", "X", "N"),
    KeyUsage.DATA_CHECK: ("E3", "X", "N"),
    KeyUsage.PERSONAL_DATA: ("D0", "B", "N"),
    KeyUsage.PERSONAL_INDEX: ("M7", "C", "N"),  # HMAC
    KeyUsage.CARD_SIGN: ("S0", "S", "N"),  # asymmetric key pair for signatures, sign only
}

CARD_MASTER_USAGES = frozenset(
    u for u in KeyUsage if u.name.startswith("MK_") or u is KeyUsage.DATA_CHECK
)

_ALIAS = re.compile(r"^[A-Za-z0-9._:/@-]{1,64}$")


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias):
        raise InvalidInputError("alias must be 1-64 of A-Z a-z 0-9 . _ : / @ -")
    return alias


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A reference to a stored key: what every layer outside hsm/ holds. No key material."""

    alias: str
    version: int
    usage: KeyUsage
    kcv: str = ""  # 6H, for display and for cross-checking; not an identifier

    def require(self, *usages: KeyUsage) -> None:
        if self.usage not in usages:
            names = "/".join(u.value for u in usages)
            raise KeyUsageError(
                f"key {self.alias} v{self.version} is {self.usage.value}, this needs {names}"
            )


@dataclass(frozen=True, slots=True)
class CardKeyPath:
    """A card key: a master key diversified by zero or more 8-byte factors, left to right.

    Usually one factor, the card's application serial (`card_factor`); none when the master is
    itself the card's key (test cards, vectors); two for issuer-then-card schemes.
    """

    master: KeyRef
    factors: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.factors) > 3:
            raise InvalidInputError("card key factors are up to three of 8 bytes")
        for factor in self.factors:  # a loop, not any(): a path is made per card debit
            if len(factor) != 8:
                raise InvalidInputError("card key factors are up to three of 8 bytes")

"""The HSM port: operations on key references, never on clear keys (DESIGN §2, §4).

Two implementations: `hsm.soft.SoftHsm` in process, and the network client in
`switch.hsm_net` speaking the payShield-style protocol to a server wrapping a SoftHsm. The
methods are coroutines so both backends are used the same way; SoftHsm never suspends.

Conventions: a verification that fails returns False (a value the handler maps to a response
code); misuse — a key of the wrong usage, malformed input, a tampered key — raises an
`HsmError` subclass. Times are passed in (`now`, card date/time), never read from a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from hsm.keys import CardKeyPath, KeyRef, KeyUsage


class MacAlgorithm(enum.StrEnum):
    CUP_ECB = "CUP_ECB"  # CUP POS field 64: returns/takes the 8 ASCII hex characters
    X9_9 = "X9_9"  # ISO 9797-1 alg 1, pad method 1, 8 bytes (single DES with an 8-byte key)
    X9_19 = "X9_19"  # ISO 9797-1 alg 3 (retail), pad method 1, 8 bytes; 16-byte key


@dataclass(frozen=True, slots=True)
class OnlineTxn:
    """A load (type 01/02) or unload (03): the card's INITIALIZE response and the request."""

    txn_type: int
    old_balance_fen: int
    amount_fen: int
    online_ctr: int  # as returned by INITIALIZE (before the card increments it)
    rnd: bytes  # card random, 4 bytes
    terminal_id: bytes  # 6 bytes
    mac1: bytes  # 4 bytes


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """A card debit (type 04/05/06/09) as a TAC covers it."""

    txn_type: int
    amount_fen: int
    terminal_id: bytes  # 6 bytes: the PSAM's terminal number
    term_serial: int  # the PSAM transaction serial (4 bytes)
    when: datetime  # the terminal date and time the card MACed


@dataclass(frozen=True, slots=True)
class SignOnKeys:
    """New working keys: field 62 for the 0810 and the references now stored."""

    field62: bytes
    pik: KeyRef
    mak: KeyRef
    tdk: KeyRef | None


@dataclass(frozen=True, slots=True)
class ExportedKey:
    encrypted: bytes  # under the KEK, 3DES-ECB block by block
    kcv: str  # 6H


class Hsm(Protocol):
    async def close(self) -> None:
        """SoftHsm: erase the LMK and keys from memory. Network client: close the connection."""
        ...

    # -- keys -------------------------------------------------------------------------------
    async def diagnostics(self) -> str:
        """The LMK's check value (payShield NC)."""
        ...

    async def generate_key(self, alias: str, usage: KeyUsage, *, now: datetime) -> KeyRef:
        """A new random key as the next version of `alias`."""
        ...

    async def import_key(
        self,
        alias: str,
        usage: KeyUsage,
        kek: KeyRef,
        encrypted: bytes,
        kcv: str,
        *,
        now: datetime,
    ) -> KeyRef:
        """A key received under a ZMK or TMK; KcvMismatchError when it is not the one sent."""
        ...

    async def export_key(self, key: KeyRef, kek: KeyRef) -> ExportedKey: ...

    async def kcv(self, key: KeyRef | CardKeyPath) -> str:
        """6H check value, recomputed from the key itself (for a CardKeyPath, the card key)."""
        ...

    # -- MACs -------------------------------------------------------------------------------
    async def generate_mac(self, key: KeyRef, algorithm: MacAlgorithm, data: bytes) -> bytes: ...

    async def verify_mac(
        self, key: KeyRef, algorithm: MacAlgorithm, data: bytes, mac: bytes
    ) -> bool: ...

    # -- terminals --------------------------------------------------------------------------
    async def sign_on(
        self, tmk: KeyRef, layout: int, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        """New PIK/MAK(/TDK) under the TMK in a field-62 layout of 24, 40 or 60 bytes."""
        ...

    async def accept_sign_on(
        self, tmk: KeyRef, field62: bytes, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        """The terminal's side: store the working keys of a field 62, checking their CVs."""
        ...

    async def encrypt_data(self, key: KeyRef, data: bytes) -> bytes:
        """TDK or file key: 3DES-CBC, IV zero, ISO 9797-1 pad method 2. A file key encrypts
        under its variant K ⊕ F0…F0 and MACs (X9_19, `generate_mac`) under K itself."""
        ...

    async def decrypt_data(self, key: KeyRef, data: bytes) -> bytes: ...

    # -- personal data at rest (hsm.personal) --------------------------------------------------
    async def encrypt_personal(self, key: KeyRef, context: bytes, data: bytes) -> bytes:
        """PERSONAL_DATA key: ``data`` sealed (AES-GCM, a fresh nonce) for ``context``."""
        ...

    async def decrypt_personal(self, key: KeyRef, context: bytes, sealed: bytes) -> bytes:
        """What `encrypt_personal` sealed for ``context``; KeyTamperedError otherwise."""
        ...

    async def index_personal(self, key: KeyRef, data: bytes) -> bytes:
        """PERSONAL_INDEX key: the keyed hash of ``data`` (16 bytes) for equality lookups."""
        ...

    # -- PINs -------------------------------------------------------------------------------
    async def translate_pin(
        self, source: KeyRef, destination: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        """Format 0 under a PIK or ZPK → format 0 under a bank's ZPK."""
        ...

    async def pin_reload_mac(
        self, reload_key: CardKeyPath, pin_key: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        """The RELOAD PIN MAC (DRPK halves XORed) over the new PIN, which arrives encrypted."""
        ...

    async def pin_unblock_command(
        self,
        unblock_key: CardKeyPath,
        pin_key: KeyRef,
        pin_block: bytes,
        pan: str,
        challenge: bytes,
        key_index: int = 0,
    ) -> bytes:
        """The whole PIN UNBLOCK APDU 84 24 P1 00 Lc enc(len||PIN) MAC under the card's DPUK."""
        ...

    # -- PBOC ED/EP -------------------------------------------------------------------------
    async def verify_mac1(self, key: CardKeyPath, txn: OnlineTxn) -> bool:
        """Load (DLK) or unload (DULK) MAC1: authenticates the card."""
        ...

    async def generate_mac2(self, key: CardKeyPath, txn: OnlineTxn, host_time: datetime) -> bytes:
        """MAC2 for CREDIT FOR LOAD / DEBIT FOR UNLOAD. Checks MAC1 again and refuses to
        produce a MAC2 for a card that did not authenticate (CardNotAuthenticatedError)."""
        ...

    async def verify_mac3(
        self, key: CardKeyPath, txn: OnlineTxn, new_balance_fen: int, host_time: datetime,
        mac3: bytes,
    ) -> bool:
        """The unload's MAC3 (session key, not the TAC key)."""
        ...

    async def verify_load_tac(
        self, key: CardKeyPath, txn: OnlineTxn, new_balance_fen: int, host_time: datetime,
        tac: bytes,
    ) -> bool: ...

    async def generate_purchase_mac1(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int
    ) -> bytes:
        """The PSAM's MAC1 for DEBIT FOR PURCHASE (online purchases, simulators)."""
        ...

    async def verify_purchase_mac2(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int,
        mac2: bytes,
    ) -> bool: ...

    async def verify_purchase_tac(
        self, key: CardKeyPath, record: PurchaseRecord, tac: bytes
    ) -> bool: ...

    async def verify_purchase_tacs(
        self, items: Sequence[tuple[CardKeyPath, PurchaseRecord, bytes]]
    ) -> list[bool]:
        """`verify_purchase_tac` of each (key, record, TAC), in order: a batch upload's
        window in one call. Misuse in any item raises, as the single call would."""
        ...

    async def script_mac(
        self, key: CardKeyPath, challenge: bytes, command: bytes, sequence: int = 0
    ) -> bytes:
        """Line-protection MAC (DAMK, or the record key DRK) for APPLICATION BLOCK/UNBLOCK,
        CARD BLOCK, UPDATE BINARY/RECORD, APPEND RECORD: `command` is CLA INS P1 P2 Lc(+4)
        data; IV challenge ‖ `sequence` (command `sequence` of a chained script, from 0)."""
        ...

    # -- card data signatures (CARD_SIGN, hsm.rsakey) -------------------------------------
    async def sign(self, key: KeyRef, message: bytes) -> bytes:
        """RSA-2048 PKCS#1 v1.5 SHA-256 signature (256 bytes) under a CARD_SIGN key."""
        ...

    async def public_key(self, key: KeyRef) -> bytes:
        """A CARD_SIGN key's public part, SubjectPublicKeyInfo PEM: what the centre publishes."""
        ...

    async def write_card_key(
        self,
        control: CardKeyPath,
        key: CardKeyPath,
        challenge: bytes,
        header: bytes,
        attributes: bytes,
    ) -> bytes:
        """A secure-messaging WRITE KEY APDU: header(4) Lc enc(attributes||card key) MAC,
        encrypted and MACed under the card's master control key."""
        ...

    async def write_psam_key(
        self,
        transport: CardKeyPath,
        key: KeyRef,
        challenge: bytes,
        header: bytes,
        attributes: bytes,
    ) -> bytes:
        """The purchase master key into a PSAM under its transport key (same APDU shape)."""
        ...

    async def card_data_check_code(self, key: CardKeyPath, data: bytes) -> bytes:
        """MAC (alg 3, pad 2, 4 bytes) over the cardholder and authorisation file bytes."""
        ...

    async def verify_card_data_check_code(
        self, key: CardKeyPath, data: bytes, code: bytes
    ) -> bool: ...


class PinPad(Protocol):
    """A terminal's secure module (the kiosk's EPP): a PIN typed in leaves it only as an ISO
    9564 format 0 block under the terminal's PIK. A terminal's operation, not the centre's: the
    centre's HSM translates such blocks, never makes them (SoftHsm does both)."""

    async def encrypt_pin(self, pin_key: KeyRef, pin: str, pan: str) -> bytes: ...

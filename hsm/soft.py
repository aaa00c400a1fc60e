"""SoftHsm: the HSM in process. Keys live wrapped in a KeyStore under an LMK held in memory.

Usage is enforced on every call, from the reference and again from the key block's bound
usage: a load master key never serves a purchase, a MAK never touches a PIN.

    >>> import asyncio
    >>> from hsm.keystore import MemoryKeyStore
    >>> from hsm.lmk import Component, Lmk
    >>> a, b = Component(bytes(range(16))), Component(bytes(range(16, 32)))
    >>> hsm = SoftHsm(Lmk([a, b], "82E136"), MemoryKeyStore())
    >>> asyncio.run(hsm.diagnostics())
    '82E136'
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime

from hsm import cardcrypto, distribution, mac, personal, pinblock, policy, signon
from hsm.des import Des, adjust_parity
from hsm.errors import (
    CardNotAuthenticatedError,
    InvalidInputError,
    KcvMismatchError,
    KeyUsageError,
)
from hsm.interface import ExportedKey, MacAlgorithm, OnlineTxn, PurchaseRecord, SignOnKeys
from hsm.keycache import KeyCache, LoadedKey
from hsm.keys import CARD_MASTER_USAGES, CardKeyPath, KeyRef, KeyUsage
from hsm.keystore import KeyStore
from hsm.lmk import Component, Lmk, combine, is_test_only
from hsm.padding import pad_method_2, unpad_method_2
from hsm.pboc import LOAD_TYPES, PURCHASE_TYPES, TYPE_ED_UNLOAD
from hsm.signing import SigningKeys

U = KeyUsage
# Key lengths a new key of each usage gets (MAKs are single length: the CUP layouts carry 8).
KEY_LENGTH = {U.MAK: 8}
_CUP_ECB = MacAlgorithm.CUP_ECB
_cup_ecb = mac.cup_ecb  # verify_mac's parameter ``mac`` hides the module
MAC_USAGES = {
    MacAlgorithm.CUP_ECB: (U.MAK,),
    MacAlgorithm.X9_9: (U.MAK, U.ZAK),
    MacAlgorithm.X9_19: (U.MAK, U.ZAK, U.FILE),
}
SESSIONS_MAX = 1024
FILE_ENCRYPTION_VARIANT = 0xF0  # a file key encrypts as K ⊕ F0…F0 and MACs as K


class SoftHsm:
    def __init__(
        self,
        lmk: Lmk,
        store: KeyStore,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._keys = KeyCache(lmk, store)
        self._signing = SigningKeys(self._keys)  # CARD_SIGN: RSA, hsm.signing
        self._random = random_bytes
        # Session keys of recent loads, so MAC1 verify → MAC2 derive the session once.
        self._sessions: dict[tuple[object, ...], Des] = {}

    def __repr__(self) -> str:
        return f"SoftHsm(lmk={self._keys.lmk_kcv!r})"

    async def close(self) -> None:
        """Erase the LMK and every key in memory; later operations raise LmkError."""
        self._sessions.clear()
        self._signing.erase()
        self._keys.erase()

    # -- keys ---------------------------------------------------------------------------------
    async def diagnostics(self) -> str:
        return self._keys.lmk_kcv

    def _new_key(self, usage: KeyUsage) -> bytes:
        return adjust_parity(self._random(KEY_LENGTH.get(usage, 16)))

    async def generate_key(
        self, alias: str, usage: KeyUsage, *, now: datetime, exportable: bool = False
    ) -> KeyRef:
        """`exportable`: the key may leave as hsm.policy's rules marked so allow (fixed now).
        CARD_SIGN: an RSA-2048 key pair (hsm.signing), never exportable."""
        if usage is U.CARD_SIGN:
            return await self._signing.generate(alias, now=now, exportable=exportable)
        return await self._keys.put(
            alias, usage, self._new_key(usage), now, exportable=exportable
        )

    async def form_key(
        self,
        alias: str,
        usage: KeyUsage,
        components: Sequence[Component],
        *,
        now: datetime,
        exportable: bool = False,
    ) -> KeyRef:
        """A key from 1–9 clear components entered at a ceremony (XOR, odd parity). Under an
        LMK that is not TEST ONLY, a published TEST ONLY component is refused."""
        if not self._keys.lmk_test_only and is_test_only(components):
            raise InvalidInputError(
                f"{alias}: a published TEST ONLY component is refused: this HSM's LMK is not "
                "TEST ONLY"
            )
        return await self._keys.put(alias, usage, combine(components), now, exportable=exportable)

    async def import_signing_key(self, alias: str, pem: bytes, *, now: datetime) -> KeyRef:
        """A CARD_SIGN key pair given in clear: only the published TEST ONLY key under the TEST
        ONLY LMK makes sense (hsm.signing); a console operation, not on the network."""
        return await self._signing.import_private(alias, pem, now=now)

    # -- card data signatures (hsm.rsakey) -------------------------------------------------------
    async def sign(self, key: KeyRef, message: bytes) -> bytes:
        return await self._signing.sign(key, message)

    async def public_key(self, key: KeyRef) -> bytes:
        return await self._signing.public_key(key)

    # Key distribution to outside parties (console operations: `medswitch keys`, not on the
    # network HSM's command set).
    async def export_key_block(self, key: KeyRef, kek: KeyRef) -> str:
        """KEY as a TR-31 block under a transport key, as hsm.policy allows."""
        return await distribution.export_block(self._keys, key, kek)

    async def import_key_block(
        self, kek: KeyRef, block: str, *, now: datetime, alias: str | None = None
    ) -> KeyRef:
        """A TR-31 block received under KEK, stored as the next version of its alias."""
        return await distribution.import_block(self._keys, kek, block, now, alias)

    async def export_components(self, key: KeyRef, count: int) -> list[Component]:
        """A TMK as 2-3 clear components for a key-loading device (hsm.policy)."""
        return await distribution.export_components(self._keys, key, count, self._random)

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
        if not 4 <= len(kcv) <= 16:
            raise InvalidInputError("an imported key needs its check value (4 to 16 hex)")
        wrapping = await self._kek(kek, usage)
        key = adjust_parity(wrapping.des.decrypt_ecb(encrypted))
        if Des(key).kcv(8)[: len(kcv)] != kcv.upper():
            raise KcvMismatchError(f"imported {usage.value} does not match its check value")
        return await self._keys.put(alias, usage, key, now)

    async def export_key(self, key: KeyRef, kek: KeyRef) -> ExportedKey:
        wrapping = await self._kek(kek, key.usage)
        loaded = await self._keys.load(key)
        return ExportedKey(wrapping.des.encrypt_ecb(loaded.key), loaded.ref.kcv)

    async def _kek(self, kek: KeyRef, usage: KeyUsage) -> LoadedKey:
        policy.check(usage, kek.usage, policy.Form.ECB)
        return await self._keys.load(kek)

    async def kcv(self, key: KeyRef | CardKeyPath) -> str:
        if isinstance(key, CardKeyPath):
            return (await self._keys.card(key)).des.kcv()
        return (await self._keys.load(key)).des.kcv()

    # -- MACs ---------------------------------------------------------------------------------
    # The hot calls take a key in memory without awaiting (KeyCache.loaded): a coroutine
    # layer per call costs more than a CUP MAC's Python.
    async def generate_mac(self, key: KeyRef, algorithm: MacAlgorithm, data: bytes) -> bytes:
        if algorithm is _CUP_ECB:  # every terminal message: no table, no dispatch
            loaded = self._keys.loaded(key, U.MAK) or await self._keys.load(key, U.MAK)
            return _cup_ecb(loaded.des, data)
        usages = MAC_USAGES[algorithm]
        loaded = self._keys.loaded(key, *usages) or await self._keys.load(key, *usages)
        return _mac(loaded, algorithm, data)

    async def verify_mac(
        self, key: KeyRef, algorithm: MacAlgorithm, data: bytes, mac: bytes
    ) -> bool:
        if algorithm is _CUP_ECB:
            loaded = self._keys.loaded(key, U.MAK) or await self._keys.load(key, U.MAK)
            expected = _cup_ecb(loaded.des, data)
        else:
            usages = MAC_USAGES[algorithm]
            loaded = self._keys.loaded(key, *usages) or await self._keys.load(key, *usages)
            expected = _mac(loaded, algorithm, data)
        if not 4 <= len(mac) <= 8:
            raise InvalidInputError("a MAC is 4 to 8 bytes")
        return hmac.compare_digest(expected[: len(mac)], mac)

    # -- terminals ----------------------------------------------------------------------------
    async def sign_on(
        self, tmk: KeyRef, layout: int, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        wrapping = await self._keys.load(tmk, U.TMK)
        pik_len, mak_len, tdk_len = signon.key_lengths(layout)
        pik = adjust_parity(self._random(pik_len))
        mak = adjust_parity(self._random(mak_len))
        tdk = adjust_parity(self._random(tdk_len)) if tdk_len else None
        working = signon.WorkingKeys(pik, mak, tdk)
        field62 = signon.build_field62(wrapping.des, working)
        return await self._store_working(alias_prefix, working, field62, now)

    async def accept_sign_on(
        self, tmk: KeyRef, field62: bytes, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        wrapping = await self._keys.load(tmk, U.TMK)
        working = signon.parse_field62(wrapping.des, field62)
        return await self._store_working(alias_prefix, working, field62, now)

    async def _store_working(
        self, prefix: str, working: signon.WorkingKeys, field62: bytes, now: datetime
    ) -> SignOnKeys:
        pik = await self._keys.put(f"{prefix}/PIK", U.PIK, working.pik, now)
        mak = await self._keys.put(f"{prefix}/MAK", U.MAK, working.mak, now)
        tdk = None
        if working.tdk is not None:
            tdk = await self._keys.put(f"{prefix}/TDK", U.TDK, working.tdk, now)
        return SignOnKeys(field62, pik, mak, tdk)

    async def encrypt_data(self, key: KeyRef, data: bytes) -> bytes:
        loaded = self._keys.loaded(key, U.TDK, U.FILE) or await self._keys.load(key, U.TDK, U.FILE)
        des = loaded.des if loaded.ref.usage is U.TDK else _data_key(loaded)  # a TDK: as it is
        return des.encrypt_cbc(pad_method_2(data))

    async def decrypt_data(self, key: KeyRef, data: bytes) -> bytes:
        loaded = self._keys.loaded(key, U.TDK, U.FILE) or await self._keys.load(key, U.TDK, U.FILE)
        des = loaded.des if loaded.ref.usage is U.TDK else _data_key(loaded)
        return unpad_method_2(des.decrypt_cbc(data))

    # -- personal data at rest ------------------------------------------------------------------
    async def encrypt_personal(self, key: KeyRef, context: bytes, data: bytes) -> bytes:
        loaded = self._keys.loaded(key, U.PERSONAL_DATA) or await self._keys.load(
            key, U.PERSONAL_DATA
        )
        return personal.seal(loaded.key, self._random(personal.NONCE_BYTES), context, data)

    async def decrypt_personal(self, key: KeyRef, context: bytes, sealed: bytes) -> bytes:
        loaded = self._keys.loaded(key, U.PERSONAL_DATA) or await self._keys.load(
            key, U.PERSONAL_DATA
        )
        return personal.open_sealed(loaded.key, context, sealed)

    async def index_personal(self, key: KeyRef, data: bytes) -> bytes:
        loaded = self._keys.loaded(key, U.PERSONAL_INDEX) or await self._keys.load(
            key, U.PERSONAL_INDEX
        )
        return personal.index(loaded.key, data)

    # -- PINs ---------------------------------------------------------------------------------
    async def _clear_pin(self, pin_key: KeyRef, pin_block: bytes, pan: str) -> str:
        loaded = await self._keys.load(pin_key, U.PIK, U.ZPK)
        if len(pin_block) != 8:
            raise InvalidInputError("a PIN block is 8 bytes")
        return pinblock.decode_format0(loaded.des.decrypt_ecb(pin_block), pan)

    async def encrypt_pin(self, pin_key: KeyRef, pin: str, pan: str) -> bytes:
        """A PIN pad's operation (:class:`hsm.interface.PinPad`): the PIN keyed in, as a
        format 0 block under the terminal's PIK (or a counter's ZPK)."""
        loaded = await self._keys.load(pin_key, U.PIK, U.ZPK)
        return loaded.des.encrypt_ecb(pinblock.encode_format0(pin, pan))

    async def translate_pin(
        self, source: KeyRef, destination: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        out = await self._keys.load(destination, U.ZPK)
        pin = await self._clear_pin(source, pin_block, pan)
        return out.des.encrypt_ecb(pinblock.encode_format0(pin, pan))

    async def pin_reload_mac(
        self, reload_key: CardKeyPath, pin_key: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        drpk = await self._keys.card_key(reload_key, U.MK_PIN_RELOAD)
        pin = await self._clear_pin(pin_key, pin_block, pan)
        return cardcrypto.pin_reload_mac(drpk, pin)

    async def pin_unblock_command(
        self,
        unblock_key: CardKeyPath,
        pin_key: KeyRef,
        pin_block: bytes,
        pan: str,
        challenge: bytes,
        key_index: int = 0,
    ) -> bytes:
        dpuk = await self._keys.card_key(unblock_key, U.MK_PIN_UNBLOCK)
        pin = await self._clear_pin(pin_key, pin_block, pan)
        return cardcrypto.pin_unblock_command(dpuk, challenge, key_index, pin)

    # -- PBOC ED/EP ---------------------------------------------------------------------------
    async def _online_session(self, key: CardKeyPath, txn: OnlineTxn) -> Des:
        if txn.txn_type in LOAD_TYPES:
            usage = U.MK_LOAD
        elif txn.txn_type == TYPE_ED_UNLOAD:
            usage = U.MK_UNLOAD
        else:
            raise InvalidInputError(f"transaction type {txn.txn_type:02X} is no load or unload")
        card = await self._keys.card(key, usage)
        ident = (key, txn.rnd, txn.online_ctr)
        session = self._sessions.get(ident)
        if session is None:
            session = cardcrypto.online_session(card.des, txn)
            if len(self._sessions) >= SESSIONS_MAX:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[ident] = session
        return session

    async def verify_mac1(self, key: CardKeyPath, txn: OnlineTxn) -> bool:
        return cardcrypto.verify_mac1(await self._online_session(key, txn), txn)

    async def generate_mac2(self, key: CardKeyPath, txn: OnlineTxn, host_time: datetime) -> bytes:
        session = await self._online_session(key, txn)
        if not cardcrypto.verify_mac1(session, txn):
            raise CardNotAuthenticatedError("MAC1 does not verify: no MAC2 for this card")
        return cardcrypto.mac2(session, txn, host_time)

    async def verify_mac3(
        self,
        key: CardKeyPath,
        txn: OnlineTxn,
        new_balance_fen: int,
        host_time: datetime,
        mac3: bytes,
    ) -> bool:
        if txn.txn_type != TYPE_ED_UNLOAD:
            raise InvalidInputError("MAC3 belongs to an unload (type 03)")
        session = await self._online_session(key, txn)
        return cardcrypto.verify_mac3(session, txn, new_balance_fen, host_time, mac3)

    async def verify_load_tac(
        self,
        key: CardKeyPath,
        txn: OnlineTxn,
        new_balance_fen: int,
        host_time: datetime,
        tac: bytes,
    ) -> bool:
        if txn.txn_type not in LOAD_TYPES:
            raise InvalidInputError("a load TAC belongs to a load (type 01/02)")
        dtk = await self._keys.card(key, U.MK_TAC)
        return cardcrypto.verify_load_tac(dtk.halves_xor, txn, new_balance_fen, host_time, tac)

    async def _purchase_session(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int
    ) -> Des:
        if record.txn_type not in PURCHASE_TYPES:
            raise InvalidInputError(f"transaction type {record.txn_type:02X} is not a debit")
        card = await self._keys.card(key, U.MK_PURCHASE)
        return cardcrypto.purchase_session(card.des, record, rnd, offline_ctr)

    async def generate_purchase_mac1(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int
    ) -> bytes:
        session = await self._purchase_session(key, record, rnd, offline_ctr)
        return cardcrypto.purchase_mac1(session, record)

    async def verify_purchase_mac2(
        self,
        key: CardKeyPath,
        record: PurchaseRecord,
        rnd: bytes,
        offline_ctr: int,
        mac2: bytes,
    ) -> bool:
        session = await self._purchase_session(key, record, rnd, offline_ctr)
        return cardcrypto.verify_purchase_mac2(session, record, mac2)

    async def verify_purchase_tac(
        self, key: CardKeyPath, record: PurchaseRecord, tac: bytes
    ) -> bool:
        if record.txn_type not in PURCHASE_TYPES:
            raise InvalidInputError(f"transaction type {record.txn_type:02X} is not a debit")
        dtk = self._keys.loaded_card(key, U.MK_TAC) or await self._keys.card(key, U.MK_TAC)
        return cardcrypto.verify_purchase_tac(dtk.halves_xor, record, tac)

    async def verify_purchase_tacs(
        self, items: Sequence[tuple[CardKeyPath, PurchaseRecord, bytes]]
    ) -> list[bool]:
        """One call for a batch upload's window: one tight loop, each card's TAC key looked
        up once per path object (a caller passing one path for a card's records saves the
        lookup; the items hold their paths, so an object id is not reused during the call)."""
        tac_keys: dict[int, Des] = {}
        results = []
        for key, record, tac in items:
            if record.txn_type not in PURCHASE_TYPES:
                raise InvalidInputError(f"transaction type {record.txn_type:02X} is not a debit")
            tac_key = tac_keys.get(id(key))
            if tac_key is None:
                dtk = self._keys.loaded_card(key, U.MK_TAC) or await self._keys.card(key, U.MK_TAC)
                tac_key = tac_keys[id(key)] = dtk.halves_xor
            results.append(cardcrypto.verify_purchase_tac(tac_key, record, tac))
        return results

    async def script_mac(
        self, key: CardKeyPath, challenge: bytes, command: bytes, sequence: int = 0
    ) -> bytes:
        # The DAMK (files and blocks) or the record key DRK (the record book): both MAC scripts.
        damk = await self._keys.card_key(key, U.MK_APP_MAINT, U.MK_RECORD)
        return cardcrypto.script_mac(damk, challenge, command, sequence)

    async def write_card_key(
        self,
        control: CardKeyPath,
        key: CardKeyPath,
        challenge: bytes,
        header: bytes,
        attributes: bytes,
    ) -> bytes:
        if key.master.usage is U.MK_CONTROL and key == control:
            raise KeyUsageError("a control key is not written under itself")
        if key.master.usage not in CARD_MASTER_USAGES:
            raise KeyUsageError("only card keys are written into cards")
        protecting = await self._keys.card_key(control, U.MK_CONTROL)
        card_key = await self._keys.card_key(key, key.master.usage)
        return cardcrypto.protected_apdu(protecting, challenge, header, attributes + card_key)

    async def write_psam_key(
        self,
        transport: CardKeyPath,
        key: KeyRef,
        challenge: bytes,
        header: bytes,
        attributes: bytes,
    ) -> bytes:
        protecting = await self._keys.card_key(transport, U.PSAM_TRANSPORT)
        purchase = await self._keys.load(key, U.MK_PURCHASE)
        return cardcrypto.protected_apdu(protecting, challenge, header, attributes + purchase.key)

    async def card_data_check_code(self, key: CardKeyPath, data: bytes) -> bytes:
        return cardcrypto.data_check_code(await self._keys.card_key(key, U.DATA_CHECK), data)

    async def verify_card_data_check_code(self, key: CardKeyPath, data: bytes, code: bytes) -> bool:
        if len(code) != 4:
            raise InvalidInputError("a data check code is 4 bytes")
        expected = await self.card_data_check_code(key, data)
        return hmac.compare_digest(expected, code)


def _mac(loaded: LoadedKey, algorithm: MacAlgorithm, data: bytes) -> bytes:
    if algorithm is MacAlgorithm.CUP_ECB:
        return mac.cup_ecb(loaded.des, data)
    if algorithm is MacAlgorithm.X9_9:
        return mac.iso9797_alg1(loaded.des, data)
    if len(loaded.key) != 16:
        raise InvalidInputError("X9.19 needs a double-length key")
    return mac.iso9797_alg3(loaded.left, loaded.des, data)


def _data_key(loaded: LoadedKey) -> Des:
    """A TDK as it is; a file key under its encryption variant."""
    if loaded.ref.usage is U.FILE:
        return Des(bytes(b ^ FILE_ENCRYPTION_VARIANT for b in loaded.key))
    return loaded.des

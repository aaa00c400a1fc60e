"""Typed values of the structured fields: 60, 61, 48, 54, and medswitch's private 58/62/63.

Layouts are documented in ``specs/terminal-interface.md``; the bank interface carries the same
card data in field 122 and bill data in field 123.

>>> parse_field60("22000123000")
('22', '000123', '000', '')
>>> build_field60(*parse_field60("22000123000"))
'22000123000'
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar

from messages.errors import CodecError
from messages.tlv import (
    EncodePlan,
    Tag,
    TagKind,
    TagTable,
    TlvReader,
    TlvWriter,
    decode_tlv,
    encoders,
    index_layout,
    tlv_reader,
    tlv_writer,
)

T = TypeVar("T")


class Purse(enum.IntEnum):
    """Which card purse: the medical passbook (ED) or the electronic purse (EP)."""

    ED = 1
    EP = 2


class Prove(enum.IntEnum):
    """A GET TRANSACTION PROVE result a terminal reports for an interrupted load or unload."""

    HAPPENED = 1  # 9000 with MAC/TAC: the card's balance changed
    NOT_HAPPENED = 2  # 9406: the card did not change


def parse_field60(value: str) -> tuple[str, str, str, str]:
    """60.1 transaction type, 60.2 batch, 60.3 network management code, then the optional
    digits after them, carried as received. Strings, not a record: every message has a field 60
    and only the table lookup and the typed message read its parts."""
    if len(value) < 11:
        raise CodecError("60 needs at least 11 digits (60.1, 60.2, 60.3)", field="60")
    return value[:2], value[2:8], value[8:11], value[11:]


def build_field60(txn_type: str, batch: str, network_code: str, rest: str) -> str:
    return f"{txn_type}{batch}{network_code}{rest}"


def construct(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls(**values)`` for a frozen dataclass without slots, without its ``__init__``.

    That ``__init__`` sets each field through ``object.__setattr__``: 2-3 us for CardData's 22
    fields, most of them absent, on every message. Only where every name in ``values`` is a
    field and every field without a default is given (a parser's checked values, a reply's echo):
    a field left out reads its default from the class, where ``dataclass`` puts it, so the result
    equals ``cls(**values)``."""
    instance: T = object.__new__(cls)
    instance.__dict__.update(values)
    return instance


@dataclass(frozen=True, slots=True)
class OriginalData:
    """Field 61 of voids and reversals: the original's batch, STAN and date (MMDD)."""

    batch: str
    stan: str
    date: str = "0000"

    @classmethod
    def parse(cls, value: str) -> Self:
        if len(value) != 16:
            raise CodecError("61 is original batch(6), STAN(6) and date(4)", field="61")
        return cls(value[:6], value[6:12], value[12:16])

    def build(self) -> str:
        return f"{self.batch}{self.stan}{self.date}"


class _TlvRecord:
    """Shared parse/build for TLV-coded dataclasses; subclasses set LAYOUT and FIELD."""

    LAYOUT: ClassVar[tuple[Tag, ...]]
    FIELD: ClassVar[str]
    _ENUMS: ClassVar[dict[str, type[enum.IntEnum]]] = {}
    _BY_TAG: ClassVar[TagTable]
    _ENCODERS: ClassVar[EncodePlan]
    _READ: ClassVar[TlvReader]  # the layout's straight-line decode_tlv (tags in order)
    _WRITE: ClassVar[TlvWriter]  # and its encode_tlv
    # (name, enum, its members by value) of each _ENUMS entry: a dict get instead of the
    # enum's call (~0.5 us each); a value that is no member's still goes through the call.
    _MEMBERS: ClassVar[tuple[tuple[str, type[enum.IntEnum], Mapping[Any, enum.IntEnum]], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Index the layout once per record class, not on every parse and build."""
        super().__init_subclass__(**kwargs)
        cls._BY_TAG = index_layout(cls.LAYOUT)
        cls._ENCODERS = encoders(cls.LAYOUT)
        cls._READ = tlv_reader(cls.LAYOUT)
        cls._WRITE = tlv_writer(cls.LAYOUT)  # a plain function: called as a method
        cls._MEMBERS = tuple(
            (name, kind, {member.value: member for member in kind})
            for name, kind in cls._ENUMS.items()
        )

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if not data:  # a settlement's field 58: no tag, nothing to read
            return construct(cls, {})
        values = cls._READ(data)
        if values is None:  # not in layout order, or not readable: the loop says why
            values = decode_tlv(cls._BY_TAG, data, cls.FIELD)
        for name, kind, members in cls._MEMBERS:
            if name in values:
                value = values[name]
                member = members.get(value)
                if member is None:
                    try:
                        member = kind(value)
                    except ValueError:
                        raise CodecError(f"bad value for {name}", field=cls.FIELD) from None
                values[name] = member
        return construct(cls, values)

    def build(self) -> bytes:
        return self._WRITE()


@dataclass(frozen=True)  # no slots: parse builds it with construct()
class CardData(_TlvRecord):
    """PBOC ED/EP card data (terminal field 58, bank field 122). Every element is optional;
    each transaction's row in the spec lists which it needs."""

    app_serial: bytes | None = None  # 10-byte application serial number (EF 0015)
    purse: Purse | None = None
    key_version: int | None = None
    algorithm_id: int | None = None
    card_random: bytes | None = None  # INITIALIZE random
    challenge: bytes | None = None  # GET CHALLENGE value, for issuer scripts
    online_counter: int | None = None
    offline_counter: int | None = None
    old_balance_fen: int | None = None
    amount_fen: int | None = None  # the amount the card operation covers
    pboc_type: int | None = None  # transaction type identifier of the card operation
    mac1: bytes | None = None
    mac2: bytes | None = None
    mac3: bytes | None = None
    tac: bytes | None = None
    psam_terminal: bytes | None = None  # 6-byte terminal number bound into MACs and TAC
    psam_serial: int | None = None  # PSAM / terminal transaction serial
    card_datetime: str | None = None  # yyyymmddhhmmss the card MACs cover
    new_balance_fen: int | None = None
    prove: Prove | None = None
    issuer_script: bytes | None = None  # APDU(s) the terminal sends to the card
    overdraft_limit_fen: int | None = None

    FIELD: ClassVar[str] = "58"
    _ENUMS: ClassVar[dict[str, type[enum.IntEnum]]] = {"purse": Purse, "prove": Prove}
    LAYOUT: ClassVar[tuple[Tag, ...]] = (
        Tag(0x01, "app_serial", TagKind.BYTES, 10),
        Tag(0x02, "purse", TagKind.UINT, 1),
        Tag(0x03, "key_version", TagKind.UINT, 1),
        Tag(0x04, "algorithm_id", TagKind.UINT, 1),
        Tag(0x05, "card_random", TagKind.BYTES, 4),
        Tag(0x06, "challenge", TagKind.BYTES, 4),
        Tag(0x07, "online_counter", TagKind.UINT, 2),
        Tag(0x08, "offline_counter", TagKind.UINT, 2),
        Tag(0x09, "old_balance_fen", TagKind.UINT, 4),
        Tag(0x0A, "amount_fen", TagKind.UINT, 4),
        Tag(0x0B, "pboc_type", TagKind.UINT, 1),
        Tag(0x0C, "mac1", TagKind.BYTES, 4),
        Tag(0x0D, "mac2", TagKind.BYTES, 4),
        Tag(0x0E, "mac3", TagKind.BYTES, 4),
        Tag(0x0F, "tac", TagKind.BYTES, 4),
        Tag(0x10, "psam_terminal", TagKind.BYTES, 6),
        Tag(0x11, "psam_serial", TagKind.UINT, 4),
        Tag(0x12, "card_datetime", TagKind.BCD, 7),
        Tag(0x13, "new_balance_fen", TagKind.UINT, 4),
        Tag(0x14, "prove", TagKind.UINT, 1),
        Tag(0x15, "issuer_script", TagKind.BYTES),
        Tag(0x16, "overdraft_limit_fen", TagKind.UINT, 3),
    )


@dataclass(frozen=True)  # no slots: parse builds it with construct()
class BillData(_TlvRecord):
    """The bill reference and its settlement split (terminal field 63, bank field 123).

    On the wire the record is encrypted under the session's TDK (see the spec); this is the
    plaintext."""

    bill_id: str | None = None
    total_fen: int | None = None
    personal_fen: int | None = None  # personal account (card ED)
    pooled_fen: int | None = None  # pooled fund
    self_pay_fen: int | None = None
    ed_fen: int | None = None  # to debit from the card's ED
    ep_fen: int | None = None  # to debit from the card's EP
    cash_fen: int | None = None
    explanation: str | None = None  # receipt lines, newline separated
    health_data: bytes | None = None
    department: str | None = None  # the visit's department code (specs/card-layout.md)
    diagnoses: str | None = None  # the visit's ICD-10 codes, comma separated (at most 4)
    visit_script: bytes | None = None  # APPEND RECORD of the visit, MACed for the challenge
    card_visit: bytes | None = None  # the card's newest visit record, as the POS read it
    health_script: bytes | None = None  # the centre's health script: commands, 1-byte length
    # each, over as many consecutive tag 0F elements as it needs (255 bytes but the last)
    card_health: bytes | None = None  # EF 0019 as the POS read it after VERIFY (96 bytes)
    script_refused: bytes | None = None  # the script's tag (0D/0F) and the card's status word
    card_visit_file: bytes | None = None  # each record of EF 001A: bill id and digest, 16 bytes

    FIELD: ClassVar[str] = "63"
    LAYOUT: ClassVar[tuple[Tag, ...]] = (
        Tag(0x01, "bill_id", TagKind.TEXT),
        Tag(0x02, "total_fen", TagKind.UINT, 4),
        Tag(0x03, "personal_fen", TagKind.UINT, 4),
        Tag(0x04, "pooled_fen", TagKind.UINT, 4),
        Tag(0x05, "self_pay_fen", TagKind.UINT, 4),
        Tag(0x06, "ed_fen", TagKind.UINT, 4),
        Tag(0x07, "ep_fen", TagKind.UINT, 4),
        Tag(0x08, "cash_fen", TagKind.UINT, 4),
        Tag(0x09, "explanation", TagKind.TEXT),
        Tag(0x0A, "health_data", TagKind.BYTES),
        Tag(0x0B, "department", TagKind.TEXT),
        Tag(0x0C, "diagnoses", TagKind.TEXT),
        Tag(0x0D, "visit_script", TagKind.BYTES),
        Tag(0x0E, "card_visit", TagKind.BYTES),
        Tag(0x0F, "health_script", TagKind.CHAINED),
        Tag(0x10, "card_health", TagKind.BYTES, 96),
        Tag(0x11, "script_refused", TagKind.BYTES, 3),
        Tag(0x12, "card_visit_file", TagKind.BYTES),
    )


@dataclass(frozen=True)  # no slots: parse builds it with construct()
class TerminalParameters(_TlvRecord):
    """Parameter download (0810, 60.3 = 360): offline limits and the category table."""

    offline_floor_fen: int | None = None
    offline_count_max: int | None = None
    offline_age_max_h: int | None = None
    blacklist_version: int | None = None
    categories: str | None = None  # "code=name" lines
    parameters_version: int | None = None  # 0: the centre's configured defaults

    FIELD: ClassVar[str] = "62"
    LAYOUT: ClassVar[tuple[Tag, ...]] = (
        Tag(0x01, "offline_floor_fen", TagKind.UINT, 4),
        Tag(0x02, "offline_count_max", TagKind.UINT, 2),
        Tag(0x03, "offline_age_max_h", TagKind.UINT, 2),
        Tag(0x04, "blacklist_version", TagKind.UINT, 4),
        Tag(0x05, "categories", TagKind.TEXT),
        Tag(0x06, "parameters_version", TagKind.UINT, 4),
    )


@dataclass(frozen=True, slots=True)
class BlacklistDelta:
    """Blacklist download (0810, 60.3 = 370): entries after ``from_version`` up to ``version``.

    Layout: version(4) | more(1: 1 = another download needed) | n × (action(1: A add, D delete)
    | application serial(10))."""

    version: int
    more: bool
    entries: tuple[tuple[str, bytes], ...]

    ENTRY_BYTES: ClassVar[int] = 11

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if len(data) < 5 or (len(data) - 5) % cls.ENTRY_BYTES:
            raise CodecError("blacklist download has a wrong length", field="62")
        entries = []
        for index in range(5, len(data), cls.ENTRY_BYTES):
            action = chr(data[index])
            if action not in "AD":
                raise CodecError("blacklist action is not A or D", field="62", offset=index)
            entries.append((action, data[index + 1 : index + cls.ENTRY_BYTES]))
        return cls(int.from_bytes(data[:4], "big"), data[4] == 1, tuple(entries))

    def build(self) -> bytes:
        out = bytearray(self.version.to_bytes(4, "big") + bytes((1 if self.more else 0,)))
        for action, serial in self.entries:
            if action not in ("A", "D") or len(serial) != 10:
                raise CodecError("blacklist entry is action A/D and a 10-byte serial", field="62")
            out += action.encode() + serial
        return bytes(out)


@dataclass(frozen=True, slots=True)
class WorkingKeys:
    """Sign-on field 62 (reference §2.5): keys under the TMK with their check values.

    24 bytes (60.3 = 001): PIK(8) CV(4) MAK(8) CV(4); 40 (003): PIK(16) CV(4) MAK(8) 00×8 CV(4);
    60 (004): the 40-byte layout then TDK(16) CV(4)."""

    pik: bytes
    pik_cv: bytes
    mak: bytes
    mak_cv: bytes
    tdk: bytes | None = None
    tdk_cv: bytes | None = None

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if len(data) == 24:
            return cls(data[0:8], data[8:12], data[12:20], data[20:24])
        if len(data) in (40, 60):
            keys = cls(data[0:16], data[16:20], data[20:28], data[36:40])
            if len(data) == 60:
                keys = cls(keys.pik, keys.pik_cv, keys.mak, keys.mak_cv, data[40:56], data[56:60])
            return keys
        raise CodecError("sign-on keys are 24, 40 or 60 bytes", field="62")

    def build(self) -> bytes:
        if len(self.pik) == 8 and self.tdk is None:
            return self.pik + self.pik_cv + self.mak + self.mak_cv
        body = self.pik + self.pik_cv + self.mak + bytes(8) + self.mak_cv
        if self.tdk is not None and self.tdk_cv is not None:
            body += self.tdk + self.tdk_cv
        if len(body) not in (40, 60):
            raise CodecError("sign-on keys do not fit the 40/60-byte layout", field="62")
        return body


@dataclass(frozen=True, slots=True)
class SettlementTotals:
    """Field 48 of batch settlement 0500: debit amount n12, count n3, credit amount n12,
    count n3, reconciliation code n1 (1 balanced, 2 not balanced, 3 error); domestic then
    foreign (62 digits). The foreign half is carried but always zero here."""

    debit_fen: int
    debit_count: int
    credit_fen: int
    credit_count: int
    result: int = 0

    @classmethod
    def parse(cls, value: str) -> Self:
        if len(value) not in (31, 62):
            raise CodecError("settlement totals are 31 or 62 digits", field="48")
        return cls(
            int(value[0:12]),
            int(value[12:15]),
            int(value[15:27]),
            int(value[27:30]),
            int(value[30]),
        )

    def build(self) -> str:
        half = (
            f"{self.debit_fen:012d}{self.debit_count:03d}"
            f"{self.credit_fen:012d}{self.credit_count:03d}{self.result:d}"
        )
        if len(half) != 31:
            raise CodecError("settlement totals overflow their digits", field="48")
        return half + "0" * 31


@dataclass(frozen=True, slots=True)
class Balance:
    """One 20-character balance of field 54: account type(2) amount type(2) currency(3)
    sign C/D(1) amount(12). Account types: 91 personal fund, 92 card ED, 93 card EP."""

    account_type: str
    amount_fen: int
    amount_type: str = "02"
    currency: str = "156"

    @staticmethod
    def parse_all(value: str) -> tuple[Balance, ...]:
        if len(value) % 20:
            raise CodecError("balances are 20 characters each", field="54")
        out = []
        for i in range(0, len(value), 20):
            part = value[i : i + 20]
            sign, digits = part[7], part[8:20]
            if sign not in "CD" or not digits.isdigit():
                raise CodecError("malformed balance", field="54", offset=i)
            amount = int(digits) * (-1 if sign == "D" else 1)
            out.append(Balance(part[0:2], amount, part[2:4], part[4:7]))
        return tuple(out)

    @staticmethod
    def build_all(balances: tuple[Balance, ...]) -> str:
        return "".join(
            f"{b.account_type}{b.amount_type}{b.currency}{'D' if b.amount_fen < 0 else 'C'}"
            f"{abs(b.amount_fen):012d}"
            for b in balances
        )


def record_fields(record: Any) -> tuple[str, ...]:
    """Attribute names of a record dataclass (for strategies and documentation)."""
    return tuple(f.name for f in fields(record))

"""Typed messages of the terminal interface (CUP-POS): requests and replies.

The transaction table that ties them to message codes is :mod:`messages.terminal_table`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from messages.binding import (
    AMOUNT,
    BALANCES,
    BINARY,
    BLACKLIST,
    CARD,
    KEYS,
    ORIGINAL,
    PARAMETERS,
    TOTALS,
    Bind,
    BuildPlan,
    ParsePlan,
    PlannedBuild,
    PlannedParse,
    build_plan,
    parse_plan,
    planned_build,
    planned_parse,
)
from messages.envelope import Row
from messages.private import (
    Balance,
    BlacklistDelta,
    CardData,
    OriginalData,
    SettlementTotals,
    TerminalParameters,
    WorkingKeys,
)

DEFAULT_TPDU = bytes.fromhex("6000030000")
DEFAULT_HEADER = bytes.fromhex("613100310000")

_ENVELOPE: tuple[Bind, ...] = (
    Bind("stan", 11),
    Bind("terminal_id", 41),
    Bind("institution_id", 42),
    Bind("mac", 64, BINARY, required=False),
)
_REPLY: tuple[Bind, ...] = (
    Bind("response_code", 39),
    Bind("host_time", 12, required=False),
    Bind("host_date", 13, required=False),
    Bind("acquirer_id", 32, required=False),
    Bind("rrn", 37, required=False),
    Bind("auth_code", 38, required=False),
    Bind("pan", 2, required=False),
    Bind("amount_fen", 4, AMOUNT, required=False),
    Bind("balances", 54, BALANCES, required=False),
    Bind("card", 58, CARD, required=False),
    Bind("bill", 63, BINARY, required=False),
)
_PAN = Bind("pan", 2)
_AMOUNT = Bind("amount_fen", 4, AMOUNT)
_CARD = Bind("card", 58, CARD)


@dataclass(frozen=True, kw_only=True)
class TerminalMessage:
    """Fields every terminal message carries: who, which batch, the frame's TPDU and header.

    No slots, here and in the subclasses: the table's parse builds them with
    :func:`~messages.private.construct`, which fills the instance's ``__dict__``."""

    stan: str
    terminal_id: str
    institution_id: str
    batch: str = "000000"
    field60_rest: str = ""  # 60.4 onwards, carried as received
    mac: bytes | None = None
    tpdu: bytes = DEFAULT_TPDU
    header: bytes = DEFAULT_HEADER

    ROW: ClassVar[Row]  # set by the transaction table
    BINDS: ClassVar[tuple[Bind, ...]] = ()
    WIRE_BINDS: ClassVar[tuple[Bind, ...]] = _ENVELOPE  # the envelope's, then BINDS
    PARSE_PLAN: ClassVar[ParsePlan] = parse_plan(_ENVELOPE)  # WIRE_BINDS', for the table
    BUILD_PLAN: ClassVar[BuildPlan] = build_plan(_ENVELOPE)
    # The plans as straight-line code (parse_planned and build_planned of them): a plain
    # function on the class, so ``typed.BUILD(fields)`` builds ``typed``'s fields.
    PARSE: ClassVar[PlannedParse] = planned_parse(PARSE_PLAN)
    BUILD: ClassVar[PlannedBuild] = planned_build(BUILD_PLAN)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Join each class's binds to the envelope's, and plan them, once, not on every parse
        and build."""
        super().__init_subclass__(**kwargs)
        cls.WIRE_BINDS = (*_ENVELOPE, *cls.BINDS)
        cls.PARSE_PLAN = parse_plan(cls.WIRE_BINDS)
        cls.BUILD_PLAN = build_plan(cls.WIRE_BINDS)
        cls.PARSE = planned_parse(cls.PARSE_PLAN)
        cls.BUILD = planned_build(cls.BUILD_PLAN)

    def codes(self) -> tuple[str, str | None, str | None, str | None, str | None]:
        """(MTI, F3, F25, 60.1, 60.3) of this message."""
        row = self.ROW
        return (row.mti, row.processing_code, row.condition_code, row.txn_type, row.network_code)

    def card_number(self) -> str | None:
        """The PAN this message carries; None for a type without one (sign-on, echo...)."""
        return None

    def amount(self) -> int | None:
        """The amount (F4) in fen this message carries; None for a type without one."""
        return None


@dataclass(frozen=True, kw_only=True)
class TerminalReply(TerminalMessage):
    """A response: the request's envelope and codes, the response code and host stamps.

    Build one with :func:`reply_to`, which copies what a response echoes."""

    mti: str
    processing_code: str | None
    condition_code: str | None
    txn_type: str | None
    network_code: str | None
    response_code: str
    host_time: str | None = None
    host_date: str | None = None
    acquirer_id: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    pan: str | None = field(default=None, repr=False)
    amount_fen: int | None = None
    balances: tuple[Balance, ...] | None = None
    card: CardData | None = None
    bill: bytes | None = None  # field 63, ciphertext under TDK

    BINDS: ClassVar[tuple[Bind, ...]] = _REPLY

    def codes(self) -> tuple[str, str | None, str | None, str | None, str | None]:
        return (
            self.mti,
            self.processing_code,
            self.condition_code,
            self.txn_type,
            self.network_code,
        )

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


# ---- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignOn(TerminalMessage):
    key_scheme: str = "004"  # 60.3: 001 single, 003 double, 004 double with TDK
    operator: bytes | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (Bind("operator", 63, BINARY, required=False),)

    def codes(self) -> tuple[str, str | None, str | None, str | None, str | None]:
        return ("0800", None, None, "00", self.key_scheme)


@dataclass(frozen=True, kw_only=True)
class SignOff(TerminalMessage):
    pass


@dataclass(frozen=True, kw_only=True)
class Echo(TerminalMessage):
    pass


@dataclass(frozen=True, kw_only=True)
class ParameterDownload(TerminalMessage):
    pass


@dataclass(frozen=True, kw_only=True)
class BlacklistDownload(TerminalMessage):
    from_version: str  # F48, 8 digits
    BINDS: ClassVar[tuple[Bind, ...]] = (Bind("from_version", 48),)


@dataclass(frozen=True, kw_only=True)
class BalanceInquiry(TerminalMessage):
    pan: str = field(repr=False)
    card: CardData | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (_PAN, Bind("card", 58, CARD, required=False))

    def card_number(self) -> str | None:
        return self.pan


@dataclass(frozen=True, kw_only=True)
class HistoryInquiry(BalanceInquiry):
    pass


@dataclass(frozen=True, kw_only=True)
class Settlement(TerminalMessage):
    """Medical settlement of a HIS bill: the bill reference travels in field 63 under TDK."""

    pan: str = field(repr=False)
    amount_fen: int
    card: CardData
    bill: bytes
    BINDS: ClassVar[tuple[Bind, ...]] = (_PAN, _AMOUNT, _CARD, Bind("bill", 63, BINARY))

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class DebitAdvice(TerminalMessage):
    """The card's DEBIT FOR PURCHASE happened: its TAC, PSAM number and serial in field 58."""

    pan: str = field(repr=False)
    amount_fen: int
    card: CardData
    bill: bytes | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        _CARD,
        Bind("bill", 63, BINARY, required=False),
    )

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class CashClose(TerminalMessage):
    """A settled bill closed with its personal-account share paid in cash, no card debit (the
    card cannot pay it, or the share is nil and the self-pay was taken in cash): the amount in
    field 4, the bill in field 63 under the TDK."""

    pan: str = field(repr=False)
    amount_fen: int
    bill: bytes
    card: CardData | None = None  # the card's challenge, for the health data's script
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        Bind("card", 58, CARD, required=False),
        Bind("bill", 63, BINARY),
    )

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class Void(TerminalMessage):
    pan: str = field(repr=False)
    amount_fen: int
    original: OriginalData
    card: CardData | None = None
    bill: bytes | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        Bind("original", 61, ORIGINAL),
        Bind("card", 58, CARD, required=False),
        Bind("bill", 63, BINARY, required=False),
    )

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class Reversal(TerminalMessage):
    """0400: repeats its original's STAN, batch and codes; the reason in field 39."""

    processing_code: str
    txn_type: str
    condition_code: str | None = "00"
    reason: str = "98"
    repeat: bool = False
    pan: str | None = field(default=None, repr=False)
    amount_fen: int | None = None
    original: OriginalData | None = None
    card: CardData | None = None
    bill: bytes | None = None  # field 63 of the original, under the session's TDK
    BINDS: ClassVar[tuple[Bind, ...]] = (
        Bind("reason", 39),
        Bind("pan", 2, required=False),
        Bind("amount_fen", 4, AMOUNT, required=False),
        Bind("original", 61, ORIGINAL, required=False),
        Bind("card", 58, CARD, required=False),
        Bind("bill", 63, BINARY, required=False),
    )

    def codes(self) -> tuple[str, str | None, str | None, str | None, str | None]:
        mti = "0401" if self.repeat else "0400"
        return (mti, self.processing_code, self.condition_code, self.txn_type, "000")

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class EdLoad(TerminalMessage):
    """Load 圈存 of the medical passbook from the personal fund: INITIALIZE FOR LOAD data
    (old balance, online counter, key version, algorithm, random, MAC1) in field 58."""

    pan: str = field(repr=False)
    amount_fen: int
    card: CardData
    BINDS: ClassVar[tuple[Bind, ...]] = (_PAN, _AMOUNT, _CARD)

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, kw_only=True)
class EpLoad(EdLoad):
    """Load of the purse from the cardholder's bank savings: the bank PIN in field 52."""

    pin_block: bytes | None = field(default=None, repr=False)
    security: str | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        _CARD,
        Bind("pin_block", 52, BINARY, required=False),
        Bind("security", 53, required=False),
    )


@dataclass(frozen=True, kw_only=True)
class Unload(EdLoad):
    pass


@dataclass(frozen=True, kw_only=True)
class EdLoadConfirm(EdLoad):
    """After CREDIT FOR LOAD: the card's TAC, or a GET TRANSACTION PROVE result."""


@dataclass(frozen=True, kw_only=True)
class EpLoadConfirm(EdLoad):
    pass


@dataclass(frozen=True, kw_only=True)
class UnloadConfirm(EdLoad):
    """After DEBIT FOR UNLOAD: the card's MAC3, or a GET TRANSACTION PROVE result."""


@dataclass(frozen=True, kw_only=True)
class BatchUploadRecord(EdLoad):
    """0320, 60.3 = 201: one offline card debit with its TAC, key version and PSAM serial; the
    bill it paid, if any, in field 63 (the advice's TLV under the session's TDK)."""

    bill: bytes | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        _CARD,
        Bind("bill", 63, BINARY, required=False),
    )


@dataclass(frozen=True, kw_only=True)
class BatchUploadEnd(TerminalMessage):
    """0320, 60.3 = 207: end of upload, with the number of records sent (F48, 4 digits)."""

    count: str
    BINDS: ClassVar[tuple[Bind, ...]] = (Bind("count", 48),)


@dataclass(frozen=True, kw_only=True)
class BatchSettlement(TerminalMessage):
    totals: SettlementTotals
    BINDS: ClassVar[tuple[Bind, ...]] = (Bind("totals", 48, TOTALS),)


# ---- responses ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignOnReply(TerminalReply):
    keys: WorkingKeys | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (*_REPLY, Bind("keys", 62, KEYS, required=False))


@dataclass(frozen=True, kw_only=True)
class ParameterReply(TerminalReply):
    parameters: TerminalParameters | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        *_REPLY,
        Bind("parameters", 62, PARAMETERS, required=False),
    )


@dataclass(frozen=True, kw_only=True)
class BlacklistReply(TerminalReply):
    blacklist: BlacklistDelta | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (*_REPLY, Bind("blacklist", 62, BLACKLIST, required=False))


@dataclass(frozen=True, kw_only=True)
class HistoryReply(TerminalReply):
    history: bytes | None = None  # UTF-8 lines: yyyymmddhhmmss|type|amount_fen|institution
    BINDS: ClassVar[tuple[Bind, ...]] = (*_REPLY, Bind("history", 62, BINARY, required=False))


@dataclass(frozen=True, kw_only=True)
class BatchSettlementReply(TerminalReply):
    totals: SettlementTotals | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (*_REPLY, Bind("totals", 48, TOTALS, required=False))

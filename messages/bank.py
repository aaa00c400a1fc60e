"""Typed messages of the bank-host interface (ISO 8583:1987) and its transaction table.

Identification is by MTI + F3 (financial and card services) or MTI + F70 (network
management); reversals (0420/0421) carry their original's F3 and original data in F90. A
bank-link message's key is (F32, F7, F11, message class).

>>> request = BankSignOn(stan="000001", transmitted="1125101500", acquirer_id="01020000")
>>> message = build(request)
>>> message.mti, message.fields[70]
('0800', '001')
>>> parse(message) == request
True
>>> parse(build(reply_to(request, "00"))).response_code
'00'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from messages.binding import AMOUNT, BALANCES, BINARY, CARD, TEXT, Bind, build_fields, parse_fields
from messages.codec import FieldValue, Message
from messages.envelope import Row
from messages.errors import UnknownTransaction
from messages.private import Balance, CardData

_ENVELOPE: tuple[Bind, ...] = (
    Bind("stan", 11),
    Bind("transmitted", 7),
    Bind("acquirer_id", 32),
    Bind("terminal_id", 41, required=False),
    Bind("branch_id", 42, required=False),
    Bind("mac", 128, BINARY, required=False),
)
_PAN = Bind("pan", 2)
_AMOUNT = Bind("amount_fen", 4, AMOUNT)
_CARD = Bind("card", 122, CARD)
_PIN = Bind("pin_block", 52, BINARY, required=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BankMessage:
    stan: str
    transmitted: str  # F7 MMDDhhmmss
    acquirer_id: str  # F32: the bank (inbound) or the centre (outbound)
    terminal_id: str | None = None
    branch_id: str | None = None
    mac: bytes | None = None

    ROW: ClassVar[Row]
    BINDS: ClassVar[tuple[Bind, ...]] = ()

    def codes(self) -> tuple[str, str | None, str | None]:
        """(MTI, F3, F70)."""
        return (self.ROW.mti, self.ROW.processing_code, self.ROW.network_code)

    def card_number(self) -> str | None:
        """The PAN this message carries; None for a type without one (network management)."""
        return None

    def amount(self) -> int | None:
        """The amount (F4) in fen this message carries; None for a type without one."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BankSignOn(BankMessage):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BankSignOff(BankMessage):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BankEcho(BankMessage):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyChange(BankMessage):
    """New ZAK/ZPK/file keys under the link's ZMK with KCVs: F48 ``USAGE=<key hex>/<KCV>`` items
    joined by ``;`` (specs/bank-interface.md, "Private fields")."""

    keys: str
    BINDS: ClassVar[tuple[Bind, ...]] = (Bind("keys", 48),)


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterInquiry(BankMessage):
    pan: str = field(repr=False)
    card: CardData | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (_PAN, Bind("card", 122, CARD, required=False))

    def card_number(self) -> str | None:
        return self.pan


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterLoad(BankMessage):
    """A load or unload on the card in the counter's reader (card data in F122)."""

    pan: str = field(repr=False)
    amount_fen: int
    card: CardData
    pin_block: bytes | None = field(default=None, repr=False)
    BINDS: ClassVar[tuple[Bind, ...]] = (_PAN, _AMOUNT, _CARD, _PIN)

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterEpLoad(CounterLoad):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterUnload(CounterLoad):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterLoadConfirm(CounterLoad):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterEpLoadConfirm(CounterLoad):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterUnloadConfirm(CounterLoad):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SavingsDebit(BankMessage):
    """Switch → bank: debit the cardholder's savings account to fund an EP load."""

    pan: str = field(repr=False)
    amount_fen: int
    pin_block: bytes = field(repr=False)
    account: str | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        _AMOUNT,
        Bind("pin_block", 52, BINARY),
        Bind("account", 102, required=False),
    )

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, slots=True, kw_only=True)
class CardService(BankMessage):
    """PIN reload/unblock (new PIN block in F52, the card's challenge in F122), loss report,
    unloss, cancel, card replacement (new card number in F102)."""

    service: str  # the row name: pin_reload, pin_unblock, loss_report, unloss, cancel, ...
    pan: str = field(repr=False)
    card: CardData | None = None
    pin_block: bytes | None = field(default=None, repr=False)
    new_card: str | None = None
    BINDS: ClassVar[tuple[Bind, ...]] = (
        _PAN,
        Bind("card", 122, CARD, required=False),
        _PIN,
        Bind("new_card", 102, required=False),
    )

    def codes(self) -> tuple[str, str | None, str | None]:
        row = _SERVICES.get(self.service)
        if row is None:
            raise UnknownTransaction(f"no card service named {self.service!r}", field="3")
        return (row.mti, row.processing_code, None)

    def card_number(self) -> str | None:
        return self.pan


@dataclass(frozen=True, slots=True, kw_only=True)
class BankReversal(BankMessage):
    """0420/0421: original data elements in F90 (MTI 4, STAN 6, F7 10, F32 11, F33 11)."""

    processing_code: str
    original: str
    amount_fen: int | None = None
    pan: str | None = field(default=None, repr=False)
    repeat: bool = False
    BINDS: ClassVar[tuple[Bind, ...]] = (
        Bind("original", 90),
        Bind("amount_fen", 4, AMOUNT, required=False),
        Bind("pan", 2, required=False),
    )

    def codes(self) -> tuple[str, str | None, str | None]:
        return ("0421" if self.repeat else "0420", self.processing_code, None)

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


@dataclass(frozen=True, slots=True, kw_only=True)
class BankReply(BankMessage):
    mti: str
    processing_code: str | None
    network_code: str | None
    response_code: str
    pan: str | None = field(default=None, repr=False)
    amount_fen: int | None = None
    balances: tuple[Balance, ...] | None = None
    card: CardData | None = None
    auth_code: str | None = None
    rrn: str | None = None
    data: str | None = None  # F48: key-change answers
    BINDS: ClassVar[tuple[Bind, ...]] = (
        Bind("response_code", 39),
        Bind("pan", 2, required=False),
        Bind("amount_fen", 4, AMOUNT, required=False),
        Bind("balances", 54, BALANCES, required=False),
        Bind("card", 122, CARD, required=False),
        Bind("auth_code", 38, required=False),
        Bind("rrn", 37, required=False),
        Bind("data", 48, TEXT, required=False),
    )

    def codes(self) -> tuple[str, str | None, str | None]:
        return (self.mti, self.processing_code, self.network_code)

    def card_number(self) -> str | None:
        return self.pan

    def amount(self) -> int | None:
        return self.amount_fen


TABLE: tuple[tuple[Row, type[BankMessage]], ...] = (
    (Row("bank_sign_on", "0800", None, None, None, "001", "link sign-on"), BankSignOn),
    (Row("bank_sign_off", "0800", None, None, None, "002", "link sign-off"), BankSignOff),
    (Row("bank_echo", "0800", None, None, None, "301", "link echo"), BankEcho),
    (Row("key_change", "0800", None, None, None, "101", "ZPK/ZAK/file keys under ZMK"), KeyChange),
    (
        Row("counter_inquiry", "0200", "310000", "00", None, None, "balances at a counter"),
        CounterInquiry,
    ),
    (
        Row(
            "counter_ed_load",
            "0200",
            "600000",
            "91",
            None,
            None,
            "counter ED load: MAC1, MAC2",
            reversible=True,
        ),
        CounterLoad,
    ),
    (
        Row(
            "counter_ep_load",
            "0200",
            "601000",
            "91",
            None,
            None,
            "counter EP load from savings",
            reversible=True,
        ),
        CounterEpLoad,
    ),
    (
        Row(
            "counter_unload",
            "0200",
            "610000",
            "91",
            None,
            None,
            "counter ED unload",
            reversible=True,
        ),
        CounterUnload,
    ),
    (
        Row("counter_ed_load_confirm", "0220", "600000", "91", None, None, "load TAC or proof"),
        CounterLoadConfirm,
    ),
    (
        Row("counter_ep_load_confirm", "0220", "601000", "91", None, None, "load TAC or proof"),
        CounterEpLoadConfirm,
    ),
    (
        Row("counter_unload_confirm", "0220", "610000", "91", None, None, "unload MAC3 or proof"),
        CounterUnloadConfirm,
    ),
    (
        Row(
            "savings_debit",
            "0200",
            "401000",
            "00",
            None,
            None,
            "switch → bank: savings debit for an EP load",
            reversible=True,
        ),
        SavingsDebit,
    ),
    (Row("pin_reload", "0100", "700000", "00", None, None, "PIN reload (DRPK MAC)"), CardService),
    (Row("pin_unblock", "0100", "710000", "00", None, None, "PIN unblock (DPUK)"), CardService),
    (Row("loss_report", "0100", "720000", "00", None, None, "loss report 挂失"), CardService),
    (Row("unloss", "0100", "730000", "00", None, None, "unloss 解挂"), CardService),
    (Row("cancel", "0100", "740000", "00", None, None, "cancel 注销"), CardService),
    (Row("card_replacement", "0100", "750000", "00", None, None, "card replacement"), CardService),
)

_Key = tuple[str, str | None, str | None]


def _index() -> MappingProxyType[_Key, tuple[Row, type[BankMessage]]]:
    index: dict[_Key, tuple[Row, type[BankMessage]]] = {}
    for row, cls in TABLE:
        for mti, kind in ((row.mti, cls), (row.response_mti, BankReply)):
            key = (mti, row.processing_code, row.network_code)
            if key in index:
                raise RuntimeError(f"bank transaction table: {row.name} is ambiguous")
            index[key] = (row, kind)
    return MappingProxyType(index)


_BY_KEY = _index()
_SERVICES = MappingProxyType({row.name: row for row, cls in TABLE if cls is CardService})
for _row, _cls in TABLE:
    if _cls is not CardService:
        _cls.ROW = _row


def row_of(message: Message) -> Row:
    mti = message.mti
    processing = message.fields.get(3)
    network = message.fields.get(70)
    if mti in ("0420", "0421", "0430", "0431"):
        found = _BY_KEY.get(("0200", processing if isinstance(processing, str) else None, None))
        if found is None or not found[0].reversible:
            raise UnknownTransaction("reversal of a transaction that is not reversible", field="3")
        return found[0]
    key = (
        mti,
        processing if isinstance(processing, str) else None,
        network if isinstance(network, str) else None,
    )
    found = _BY_KEY.get(key)
    if found is None:
        raise UnknownTransaction("no transaction matches MTI, F3 and F70", field="3")
    return found[0]


def parse(message: Message) -> BankMessage:
    """The typed bank request or reply for ``message``."""
    row = row_of(message)
    mti = message.mti
    fields = message.fields
    values: dict[str, Any] = parse_fields(_ENVELOPE, fields)
    if mti in ("0420", "0421"):
        cls: type[BankMessage] = BankReversal
        values.update(processing_code=fields.get(3), repeat=mti == "0421")
    elif int(mti[2]) % 2 == 1:  # x1x0 / x3x0: a response
        cls = BankReply
        values.update(mti=mti, processing_code=fields.get(3), network_code=fields.get(70))
    else:
        cls = _BY_KEY[(row.mti, row.processing_code, row.network_code)][1]
        if cls is CardService:
            values["service"] = row.name
    values.update(parse_fields(cls.BINDS, fields))
    return cls(**values)


def build(typed: BankMessage) -> Message:
    mti, processing_code, network_code = typed.codes()
    fields: dict[int, FieldValue] = {}
    if processing_code is not None:
        fields[3] = processing_code
    if network_code is not None:
        fields[70] = network_code
    build_fields(_ENVELOPE, typed, fields)
    build_fields(typed.BINDS, typed, fields)
    return Message(mti, fields)


def reply_to(request: BankMessage, response_code: str, **values: Any) -> BankReply:
    mti, processing_code, network_code = request.codes()
    return BankReply(
        mti=f"{(int(mti) // 10) * 10 + 10:04d}",
        processing_code=processing_code,
        network_code=network_code,
        response_code=response_code,
        stan=request.stan,
        transmitted=request.transmitted,
        acquirer_id=request.acquirer_id,
        terminal_id=request.terminal_id,
        branch_id=request.branch_id,
        **values,
    )

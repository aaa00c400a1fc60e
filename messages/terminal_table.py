"""The terminal interface's transaction table, and typed ↔ message conversion.

:func:`parse` turns a decoded :class:`~messages.codec.Message` into a typed request or reply;
:func:`build` does the reverse. Identification is by MTI + F3 + 60.1 + 60.3; F25 is listed and
echoed; reversals (0400/0401) match by MTI and carry their original's codes.

>>> request = SignOn(stan="000001", terminal_id="POS00001", institution_id="101320000000001",
...                 batch="000001")
>>> message = build(request)
>>> message.mti, message.fields[60]
('0800', '00000001004')
>>> parse(message) == request
True
>>> reply = reply_to(request, "00", SignOnReply)
>>> build(reply).mti, parse(build(reply)) == reply
('0810', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from messages.codec import FieldValue, Message
from messages.envelope import Row, response_mti
from messages.errors import CodecError, UnknownTransaction
from messages.message import message
from messages.private import build_field60, construct, parse_field60
from messages.terminal import (
    BalanceInquiry,
    BatchSettlement,
    BatchSettlementReply,
    BatchUploadEnd,
    BatchUploadRecord,
    BlacklistDownload,
    BlacklistReply,
    CashClose,
    DebitAdvice,
    Echo,
    EdLoad,
    EdLoadConfirm,
    EpLoad,
    EpLoadConfirm,
    HistoryInquiry,
    HistoryReply,
    ParameterDownload,
    ParameterReply,
    Reversal,
    Settlement,
    SignOff,
    SignOn,
    SignOnReply,
    TerminalMessage,
    TerminalReply,
    Unload,
    UnloadConfirm,
    Void,
)

# (row, request class, reply class)
TABLE: tuple[tuple[Row, type[TerminalMessage], type[TerminalReply]], ...] = (
    (
        Row("sign_on", "0800", None, None, "00", "004", "sign-on, double-length keys with TDK"),
        SignOn,
        SignOnReply,
    ),
    (
        Row("sign_on_double", "0800", None, None, "00", "003", "sign-on, double-length PIK+MAK"),
        SignOn,
        SignOnReply,
    ),
    (
        Row("sign_on_single", "0800", None, None, "00", "001", "sign-on, single-length keys"),
        SignOn,
        SignOnReply,
    ),
    (Row("sign_off", "0820", None, None, "00", "002", "sign-off"), SignOff, TerminalReply),
    (Row("echo", "0820", None, None, "00", "301", "echo test"), Echo, TerminalReply),
    (
        Row(
            "parameter_download",
            "0800",
            None,
            None,
            "00",
            "360",
            "parameter download: offline limits, categories",
        ),
        ParameterDownload,
        ParameterReply,
    ),
    (
        Row(
            "blacklist_download",
            "0800",
            None,
            None,
            "00",
            "370",
            "incremental blacklist download by version",
        ),
        BlacklistDownload,
        BlacklistReply,
    ),
    (
        Row(
            "balance_inquiry",
            "0200",
            "310000",
            "00",
            "01",
            "000",
            "balances: personal fund, card ED and EP shadows",
        ),
        BalanceInquiry,
        TerminalReply,
    ),
    (
        Row("history_inquiry", "0200", "320000", "00", "02", "000", "recent transactions"),
        HistoryInquiry,
        HistoryReply,
    ),
    (
        Row(
            "settlement",
            "0200",
            "000000",
            "00",
            "22",
            "000",
            "medical settlement of a HIS bill: split, accumulators reserved",
            reversible=True,
        ),
        Settlement,
        TerminalReply,
    ),
    (
        Row(
            "debit_advice",
            "0220",
            "000000",
            "00",
            "30",
            "000",
            "card debit (DEBIT FOR PURCHASE) confirmed by its TAC",
        ),
        DebitAdvice,
        TerminalReply,
    ),
    (
        Row(
            "cash_close",
            "0220",
            "000000",
            "00",
            "22",
            "000",
            "settled bill closed with its personal-account share paid in cash",
        ),
        CashClose,
        TerminalReply,
    ),
    (
        Row("void", "0200", "200000", "00", "23", "000", "void of a settlement", reversible=True),
        Void,
        TerminalReply,
    ),
    (
        Row(
            "ed_load",
            "0200",
            "600000",
            "91",
            "45",
            "000",
            "ED load from the personal fund: MAC1 in, MAC2 out",
            reversible=True,
        ),
        EdLoad,
        TerminalReply,
    ),
    (
        Row(
            "ep_load",
            "0200",
            "601000",
            "91",
            "46",
            "000",
            "EP load from bank savings: MAC1 in, bank debit, MAC2 out",
            reversible=True,
        ),
        EpLoad,
        TerminalReply,
    ),
    (
        Row(
            "unload",
            "0200",
            "610000",
            "91",
            "47",
            "000",
            "ED unload to the personal fund: MAC1 in, MAC2 out",
            reversible=True,
        ),
        Unload,
        TerminalReply,
    ),
    (
        Row(
            "ed_load_confirm",
            "0220",
            "600000",
            "91",
            "45",
            "000",
            "ED load confirmed by TAC or proven by GET TRANSACTION PROVE",
        ),
        EdLoadConfirm,
        TerminalReply,
    ),
    (
        Row(
            "ep_load_confirm",
            "0220",
            "601000",
            "91",
            "46",
            "000",
            "EP load confirmed by TAC or proven",
        ),
        EpLoadConfirm,
        TerminalReply,
    ),
    (
        Row(
            "unload_confirm",
            "0220",
            "610000",
            "91",
            "47",
            "000",
            "unload confirmed by MAC3 or proven",
        ),
        UnloadConfirm,
        TerminalReply,
    ),
    (
        Row(
            "batch_upload",
            "0320",
            "000000",
            "00",
            "30",
            "201",
            "batch upload of one offline card debit with its TAC",
        ),
        BatchUploadRecord,
        TerminalReply,
    ),
    (
        Row("batch_upload_end", "0320", None, None, "00", "207", "end of batch upload"),
        BatchUploadEnd,
        TerminalReply,
    ),
    (
        Row(
            "batch_settlement",
            "0500",
            None,
            None,
            "00",
            "201",
            "batch settlement with totals (F48)",
        ),
        BatchSettlement,
        BatchSettlementReply,
    ),
)

_Key = tuple[str, str | None, str | None, str | None]


def _key(
    mti: str, processing_code: str | None, txn_type: str | None, network_code: str | None
) -> _Key:
    return (mti, processing_code, txn_type, network_code)


def _index() -> tuple[Mapping[_Key, tuple[Row, type[Any]]], Mapping[type[Any], Row]]:
    by_key: dict[_Key, tuple[Row, type[Any]]] = {}
    by_class: dict[type[Any], Row] = {}
    for row, request, reply in TABLE:
        for mti, cls in ((row.mti, request), (row.response_mti, reply)):
            key = _key(mti, row.processing_code, row.txn_type, row.network_code)
            if key in by_key:
                raise RuntimeError(f"transaction table: {row.name} is ambiguous")
            by_key[key] = (row, cls)
        by_class.setdefault(request, row)
        if request not in (SignOn, Reversal):
            request.ROW = by_class[request]
    return MappingProxyType(by_key), MappingProxyType(by_class)


_BY_KEY, _BY_CLASS = _index()
_FIND = dict(_BY_KEY).get  # a read-only proxy's get is a method call through the proxy
# Each reply class's field names, to check what reply_to is given.
_REPLY_FIELDS: Mapping[type[TerminalReply], frozenset[str]] = MappingProxyType(
    {reply: frozenset(f.name for f in dataclasses.fields(reply)) for _, _, reply in TABLE}
)
# What reply_to echoes; the fields of each reply class it may be given besides, so that one
# subset test tells whether its values may go in without the class's __init__.
_ECHOED = frozenset(
    (
        *("mti", "processing_code", "condition_code", "txn_type", "network_code"),
        *("response_code", "stan", "terminal_id", "institution_id", "batch", "field60_rest"),
        *("tpdu", "header"),
    )
)
_REPLY_EXTRAS: Mapping[type[TerminalReply], frozenset[str]] = MappingProxyType(
    {reply: names - _ECHOED for reply, names in _REPLY_FIELDS.items()}
)
# The response MTI of each request MTI of the table (reversals' included), read, not computed.
_RESPONSE_MTIS: Mapping[str, str] = MappingProxyType(
    {mti: response_mti(mti) for mti in {row.mti for row, _, _ in TABLE} | {"0400", "0401"}}
)
REVERSAL_MTIS = frozenset({"0400", "0401"})

M = TypeVar("M", bound=TerminalMessage)


def row_of(message: Message) -> Row:
    """The table row a message belongs to; :class:`UnknownTransaction` if none."""
    txn_type, _, network_code, _ = _field60(message)
    return _lookup(message, txn_type, network_code)[0]


def _lookup(message: Message, txn_type: str, network_code: str) -> tuple[Row, type[Any]]:
    processing = message.fields.get(3)
    if processing is not None and not isinstance(processing, str):
        raise CodecError("processing code must be digits", field="3")
    mti = message.mti
    if mti in REVERSAL_MTIS or mti == "0410":
        original = _FIND(("0200", processing, txn_type, "000"))
        if original is None or not original[0].reversible:
            raise UnknownTransaction("reversal of a transaction that is not reversible", field="3")
        return original[0], Reversal if mti != "0410" else TerminalReply
    found = _FIND((mti, processing, txn_type, network_code))  # _key's tuple, written out
    if found is None and processing is not None:
        found = _FIND((mti, None, txn_type, network_code))
    if found is None:
        raise UnknownTransaction("no transaction matches MTI, F3, 60.1 and 60.3", field="60")
    return found


def parse(message: Message) -> TerminalMessage:
    """The typed request or reply for ``message``."""
    txn_type, batch, network_code, rest = _field60(message)
    _, cls = _lookup(message, txn_type, network_code)
    fields = message.fields
    values = cls.PARSE(fields)  # parse_planned(cls.PARSE_PLAN, fields), written out
    values["batch"] = batch
    values["field60_rest"] = rest
    values["tpdu"] = message.tpdu
    values["header"] = message.header
    if issubclass(cls, TerminalReply):
        values["mti"] = message.mti
        values["processing_code"] = fields.get(3)
        values["condition_code"] = fields.get(25)
        values["txn_type"] = txn_type
        values["network_code"] = network_code
    elif cls is SignOn:
        values["key_scheme"] = network_code
    elif cls is Reversal:
        values.update(
            processing_code=message.text(3),
            condition_code=fields.get(25),
            txn_type=txn_type,
            repeat=message.mti == "0401",
        )
    result: TerminalMessage = construct(cls, values)
    return result


def build(typed: TerminalMessage, mac: bytes | None = None) -> Message:
    """The message for a typed request or reply; with ``mac``, that in field 64 (the MAC's
    placeholder of a reply to be MACed, without copying the message to put it there)."""
    mti, processing_code, condition_code, txn_type, network_code = typed.codes()
    fields: dict[int, FieldValue] = {}
    if processing_code is not None:
        fields[3] = processing_code
    if condition_code is not None:
        fields[25] = condition_code
    fields[60] = build_field60(
        txn_type or "00", typed.batch, network_code or "000", typed.field60_rest
    )
    typed.BUILD(fields)  # build_planned(typed.BUILD_PLAN, typed, fields), written out
    if mac is not None:
        fields[64] = mac
    return message(mti, fields, typed.tpdu, typed.header)


def reply_to(
    request: TerminalMessage,
    response_code: str,
    cls: type[TerminalReply] = TerminalReply,
    **values: Any,
) -> TerminalReply:
    """A reply of class ``cls`` echoing ``request``'s envelope and codes.

    The TPDU's destination and source addresses are swapped. A reply is built on every
    exchange, so without the frozen dataclass's ``__init__`` (5 us for its 26 fields) when
    ``values`` only name other fields of ``cls``; anything else goes to ``cls(...)``, which
    refuses it as it always did."""
    mti, processing_code, condition_code, txn_type, network_code = request.codes()
    tpdu = request.tpdu
    if len(tpdu) == 5:
        tpdu = tpdu[:1] + tpdu[3:5] + tpdu[1:3]
    reply_mti = _RESPONSE_MTIS.get(mti)
    echoed: dict[str, Any] = {
        "mti": response_mti(mti) if reply_mti is None else reply_mti,
        "processing_code": processing_code,
        "condition_code": condition_code,
        "txn_type": txn_type,
        "network_code": network_code,
        "response_code": response_code,
        "stan": request.stan,
        "terminal_id": request.terminal_id,
        "institution_id": request.institution_id,
        "batch": request.batch,
        "field60_rest": request.field60_rest,
        "tpdu": tpdu,
        "header": request.header,
    }
    extras = _REPLY_EXTRAS.get(cls)
    if extras is None or not values.keys() <= extras:
        return cls(**echoed, **values)
    echoed.update(values)
    return construct(cls, echoed)


def _field60(message: Message) -> tuple[str, str, str, str]:
    value = message.fields.get(60)
    if not isinstance(value, str):
        raise CodecError("mandatory field missing", field="60")
    return parse_field60(value)

"""The terminal table's parse: which error a malformed message gets, pinned by reason and field
(the first failing check wins: field 60, then the transaction's codes, then the binds in order)."""

from __future__ import annotations

import pytest

from messages.codec import Message
from messages.errors import CodecError, UnknownTransaction
from messages.terminal import DebitAdvice, TerminalReply
from messages.terminal_table import parse, reply_to

ADVICE: dict[int, str | bytes] = {
    2: "6212340000000019",
    3: "000000",
    4: "000000001000",
    11: "000301",
    25: "00",
    41: "P0000001",
    42: "h1             ",
    58: bytes.fromhex("020101"),
    60: "30000002000",
    64: b"12345678",
}


def advice(mti: str = "0220", **changes: str | bytes | None) -> Message:
    fields = dict(ADVICE)
    for name, value in changes.items():
        number = int(name[1:])
        if value is None:
            fields.pop(number, None)
        else:
            fields[number] = value
    return Message(mti, fields)


def test_an_advice_parses() -> None:
    typed = parse(advice())
    assert type(typed) is DebitAdvice
    assert (typed.amount_fen, typed.batch, typed.card.purse, typed.mac) == (
        1000,
        "000002",
        1,
        b"12345678",
    )
    reply = reply_to(typed, "00", host_time="101500", host_date="1126")
    assert type(reply) is TerminalReply and reply.mti == "0230" and reply.amount_fen is None


@pytest.mark.parametrize(
    ("message", "error", "reason", "field"),
    [
        (advice(f60=None), CodecError, "mandatory field missing", "60"),
        (advice(f60=b"30000002000"), CodecError, "mandatory field missing", "60"),
        (
            advice(f60="3000000200"),
            CodecError,
            "60 needs at least 11 digits (60.1, 60.2, 60.3)",
            "60",
        ),
        (advice(f3=b"000000"), CodecError, "processing code must be digits", "3"),
        (
            advice(f60="99000002000"),
            UnknownTransaction,
            "no transaction matches MTI, F3, 60.1 and 60.3",
            "60",
        ),
        (
            advice("0400"),
            UnknownTransaction,
            "reversal of a transaction that is not reversible",
            "3",
        ),
        (advice(f11=None, f2=None), CodecError, "mandatory field missing", "11"),
        (advice(f41=b"P0000001"), CodecError, "field has the wrong type for its use", "41"),
        (advice(f64="12345678"), CodecError, "field has the wrong type for its use", "64"),
        (advice(f2=None, f4=None), CodecError, "mandatory field missing", "2"),
        (advice(f58="020101"), CodecError, "field has the wrong type for its use", "58"),
        (advice(f58=bytes.fromhex("020103")), CodecError, "bad value for purse", "58"),
        (advice(f58=None, f4=b"1"), CodecError, "field has the wrong type for its use", "4"),
        (advice(f58=None), CodecError, "mandatory field missing", "58"),
    ],
)
def test_parse_errors(message: Message, error: type[CodecError], reason: str, field: str) -> None:
    with pytest.raises(CodecError) as caught:
        parse(message)
    assert type(caught.value) is error
    assert (caught.value.reason, caught.value.field) == (reason, field)

"""The compiled fast path against the pyiso8583 reference path, for both interfaces.

Whatever the fast path answers must be exactly what the reference path answers (the same
Message: fields, their order and types, TPDU and header; the same bytes); where it declines
(``None``) the codec falls back, so the codec's answer, result or CodecError, is the reference's
on any input. And it must not decline the messages it exists for.
"""

from __future__ import annotations

import copy
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages import bank, terminal_table
from messages.codec import Codec, Message
from messages.compiled import compile_decoder, compile_encoder
from messages.errors import CodecError
from messages.fieldspec import Align, Encoding, InterfaceSpec, Kind, Var
from messages.private import CardData, Purse
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from messages.terminal import DebitAdvice, Settlement
from tests.support import message_strategies as s
from tests.support.frames import v8_payload

CODECS = {"terminal": Codec(TERMINAL), "bank": Codec(BANK)}
TERMINAL_CODEC, BANK_CODEC = CODECS["terminal"], CODECS["bank"]
TERMINAL_ROWS = [row.name for row, _, _ in terminal_table.TABLE]
BANK_ROWS = [row.name for row, _ in bank.TABLE]


def outcome(operation: Any, argument: Any) -> tuple[Any, ...]:
    """What ``operation(argument)`` gives: its result, or its error's every attribute."""
    try:
        result = operation(argument)
    except CodecError as err:
        return ("error", type(err), str(err), err.reason, err.field, err.offset, err.envelope)
    except Exception as err:  # what pyiso8583 lets through (TypeError, ...) must stay so
        return ("raised", type(err), str(err))
    return ("ok", exact(result))


def exact(result: Any) -> Any:
    """A comparable image of a result that == alone would not tell apart (order, types)."""
    if isinstance(result, Message):
        fields = [(n, type(v), v) for n, v in result.fields.items()]
        return (
            result.mti,
            fields,
            type(result.tpdu),
            result.tpdu,
            type(result.header),
            result.header,
        )
    return (type(result), result)


def same_decode(codec: Codec, payload: bytes, *, fast_expected: bool = False) -> None:
    reference = outcome(codec.reference_decode, payload)
    assert outcome(codec.decode, payload) == reference
    fast = codec.fast_decode(payload)
    if fast is None:
        assert not fast_expected, "the fast path declined a message it was built for"
    else:
        assert ("ok", exact(fast)) == reference


def same_encode(codec: Codec, message: Message, *, fast_expected: bool = False) -> None:
    reference = outcome(codec.reference_encode, message)
    assert outcome(codec.encode, message) == reference
    fast = codec.fast_encode(message)
    if fast is None:
        assert not fast_expected, "the fast path declined a message it was built for"
    else:
        assert ("ok", exact(fast)) == reference


# --- messages of any fields of the interface -----------------------------------------------


# Strategies are built once per (interface, field) and reused: one built inside a draw is
# validated again on every example.
_VALUES: dict[tuple[int, int], st.SearchStrategy[Any]] = {}


def value_of(interface: InterfaceSpec, number: int) -> st.SearchStrategy[Any]:
    key = (id(interface), number)  # an interface is not hashable; there are two
    if key not in _VALUES:
        _VALUES[key] = _value_of(interface, number)
    return _VALUES[key]


def _value_of(interface: InterfaceSpec, number: int) -> st.SearchStrategy[Any]:
    spec = interface.fields[number]
    if spec.kind is Kind.Z and interface.encoding is Encoding.BCD:  # track data: digits and D
        low = spec.length if spec.var is Var.FIXED else 0
        return st.text("0123456789D", min_size=low, max_size=spec.length)
    value = s.field_value(spec)
    if spec.var is not Var.FIXED and not spec.kind.is_digits:
        return value | st.just(b"" if spec.kind is Kind.B else "")
    return value


@st.composite
def any_message(draw: st.DrawFn, interface: InterfaceSpec) -> Message:
    numbers = draw(st.lists(st.sampled_from(sorted(interface.fields)), unique=True, max_size=12))
    fields = {n: draw(value_of(interface, n)) for n in numbers}  # in any order
    mti = draw(s.digits(4))
    if not interface.prefix_bytes:
        return Message(mti, fields)
    tpdu, header = draw(st.binary(min_size=5, max_size=5)), draw(st.binary(min_size=6, max_size=6))
    return Message(mti, fields, tpdu, header)


def any_interface() -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(CODECS))


@settings(max_examples=300)
@given(name=any_interface(), data=st.data())
def test_valid_messages_take_the_fast_path_both_ways(name: str, data: st.DataObject) -> None:
    codec = CODECS[name]
    message = data.draw(any_message(codec.interface))
    same_encode(codec, message, fast_expected=bool(message.fields))
    same_decode(codec, codec.reference_encode(message), fast_expected=bool(message.fields))


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    size = len(payload)
    at = draw(st.integers(0, size))
    near = draw(st.integers(0, min(size, 40)))  # prefixes, MTI, bitmaps, first lengths
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return payload[:at]
    if choice == 1:
        return payload + draw(st.binary(min_size=1, max_size=8))
    if choice == 2:
        return payload[:at] + draw(st.binary(min_size=1, max_size=4)) + payload[at:]
    if choice == 3:
        return payload[:at] + draw(st.binary(min_size=1, max_size=1)) + payload[at + 1 :]
    if choice == 4 and size:
        where = min(draw(st.sampled_from([near, at])), size - 1)
        flipped = payload[where] ^ 1 << draw(st.integers(0, 7))
        return payload[:where] + bytes([flipped]) + payload[where + 1 :]
    return draw(st.binary(max_size=64))


@settings(max_examples=500)
@given(name=any_interface(), data=st.data())
def test_mutated_payloads_decode_as_the_reference_decodes(name: str, data: st.DataObject) -> None:
    codec = CODECS[name]
    payload = codec.reference_encode(data.draw(any_message(codec.interface)))
    same_decode(codec, data.draw(mutated(payload)))


ODD_VALUES = st.one_of(
    st.text(max_size=6),
    st.text(string.hexdigits, max_size=40),
    st.binary(max_size=40),
    st.just("٠١٢"),  # digits to str.isdigit, not to a hex decoder
    st.sampled_from(["62 25 88", "6225\n\n", " 6225 "]),  # spaces bytes.fromhex would skip
    st.integers(0, 99),
    st.none(),
)


def retyped(value: Any) -> st.SearchStrategy[Any]:
    """``value`` in a type near the right one: what the reference path refuses."""
    if isinstance(value, bytes):
        return st.sampled_from([bytearray(value), memoryview(value), value.hex()])
    return st.sampled_from([value.encode(), bytearray(value.encode())])


@st.composite
def odd_message(draw: st.DrawFn, interface: InterfaceSpec) -> Message:
    """A message of the interface with one irregularity (or, now and then, none)."""
    message = draw(any_message(interface))
    fields: dict[Any, Any] = dict(message.fields)
    mti: Any = message.mti
    tpdu: Any = message.tpdu
    number = draw(st.sampled_from(sorted(interface.fields)))
    irregularity = draw(st.sampled_from(["value", "type", "number", "mti", "tpdu", "none"]))
    if irregularity == "value":
        fields[number] = draw(ODD_VALUES)
    elif irregularity == "type":
        fields[number] = draw(value_of(interface, number).flatmap(retyped))
    elif irregularity == "number":
        fields[draw(st.sampled_from([0, 1, 65, 129, 200, "3"]))] = draw(ODD_VALUES | st.just("0"))
    elif irregularity == "mti":
        mti = draw(st.sampled_from(["02A0", "021", "02100", "02 10", b"0210", "٠٢١٠", 200]))
    elif irregularity == "tpdu":
        tpdu = draw(st.sampled_from([b"", bytes(4), bytes(6), "12345"]))
    return Message(mti, fields, tpdu, message.header)


@settings(max_examples=500)
@given(name=any_interface(), data=st.data())
def test_irregular_messages_encode_as_the_reference_encodes(name: str, data: st.DataObject) -> None:
    codec = CODECS[name]
    same_encode(codec, data.draw(odd_message(codec.interface)))


@pytest.mark.parametrize(
    ("name", "number"),
    [(name, n) for name, c in sorted(CODECS.items()) for n in c.interface.fields],
)
def test_a_value_of_a_near_type_encodes_as_the_reference_encodes(name: str, number: int) -> None:
    codec = CODECS[name]
    spec = codec.interface.fields[number]
    value: Any = bytes(spec.length) if spec.kind is Kind.B else "1" * spec.length
    near = [bytearray(value), memoryview(value), value.hex()] if spec.kind is Kind.B else []
    near += [] if spec.kind is Kind.B else [value.encode(), bytearray(value.encode())]
    for odd in near:
        same_encode(codec, Message("0200", {3: "000000", number: odd}, bytes(5), bytes(6)))


@pytest.mark.parametrize(
    ("name", "number"),
    [(name, n) for name, c in sorted(CODECS.items()) for n in c.interface.fields],
)
@pytest.mark.parametrize("spaced", ["62 25 ", " 62 25", "6225\n\n", "62\t\t25", "6 2"])
def test_hex_with_whitespace_encodes_as_the_reference_encodes(
    name: str, number: int, spaced: str
) -> None:
    # bytes.fromhex skips ASCII whitespace between bytes, pyiso8583's binascii.a2b_hex never
    codec = CODECS[name]
    same_encode(codec, Message("0200", {3: "000000", number: spaced}, bytes(5), bytes(6)))
    same_encode(codec, Message(spaced.replace("62", "02", 1), {3: "000000"}, bytes(5), bytes(6)))


# --- the daemon's messages -----------------------------------------------------------------

ENVELOPE: dict[str, Any] = {
    "stan": "000040",
    "terminal_id": "P0000001",
    "institution_id": "h1".ljust(15),
    "batch": "000002",
    "tpdu": bytes.fromhex("6000030000"),
    "header": bytes.fromhex("613100310000"),
    "mac": b"392FDE09",
}
SETTLEMENT = Settlement(
    **ENVELOPE, pan="6212340000000035", amount_fen=1000, card=CardData(), bill=bytes(range(24))
)
ADVICE = DebitAdvice(
    **{**ENVELOPE, "stan": "000041"},
    pan="6212340000000035",
    amount_fen=1000,
    card=CardData(
        app_serial=bytes.fromhex("00003100000000000003"),
        purse=Purse.ED,
        offline_counter=9,
        amount_fen=1000,
        pboc_type=5,
        tac=bytes.fromhex("1c955f98"),
        psam_terminal=bytes.fromhex("000000000001"),
        psam_serial=20,
        card_datetime="20261126041206",
    ),
    bill=bytes(range(24)),
)


def replies() -> list[Message]:
    """The settlement's 0210 (with the bill's split) and the advice's 0230, as the daemon
    encodes them: MAC field zeroed, filled after."""
    stamps: dict[str, Any] = {"host_time": "121207", "host_date": "1126", "mac": bytes(8)}
    return [
        terminal_table.build(terminal_table.reply_to(SETTLEMENT, "00", bill=bytes(312), **stamps)),
        terminal_table.build(terminal_table.reply_to(ADVICE, "00", **stamps)),
    ]


@pytest.mark.parametrize("typed", [SETTLEMENT, ADVICE], ids=["0200", "0220"])
def test_the_daemons_requests_and_replies_take_the_fast_path(typed: Any) -> None:
    payload = TERMINAL_CODEC.reference_encode(terminal_table.build(typed))
    same_decode(TERMINAL_CODEC, payload, fast_expected=True)
    assert terminal_table.parse(TERMINAL_CODEC.fast_decode(payload)) == typed  # type: ignore[arg-type]
    same_encode(TERMINAL_CODEC, terminal_table.build(typed), fast_expected=True)


@pytest.mark.parametrize("reply", replies(), ids=["0210", "0230"])
def test_the_daemons_replies_take_the_fast_path(reply: Message) -> None:
    same_encode(TERMINAL_CODEC, reply, fast_expected=True)
    same_decode(TERMINAL_CODEC, TERMINAL_CODEC.reference_encode(reply), fast_expected=True)


def test_the_published_v8_frame_takes_the_fast_path() -> None:
    same_decode(TERMINAL_CODEC, v8_payload(), fast_expected=True)


@pytest.mark.parametrize("mask", [0x01, 0x10, 0x80, 0xFF])
def test_every_byte_of_the_daemons_frames_altered_decodes_as_the_reference_decodes(
    mask: int,
) -> None:
    frames = [TERMINAL_CODEC.encode(terminal_table.build(t)) for t in (SETTLEMENT, ADVICE)]
    for payload in [*frames, *(TERMINAL_CODEC.encode(reply) for reply in replies()), v8_payload()]:
        for at in range(len(payload)):
            same_decode(TERMINAL_CODEC, payload[:at])
            same_decode(
                TERMINAL_CODEC, payload[:at] + bytes([payload[at] ^ mask]) + payload[at + 1 :]
            )


ODD_DIGIT_FIELDS = [
    (name, number)
    for name, codec in sorted(CODECS.items())
    for number, spec in codec.interface.fields.items()
    if spec.kind.is_digits and codec.interface.encoding is Encoding.BCD
    if spec.var is not Var.FIXED or spec.length % 2
]


@pytest.mark.parametrize(("name", "number"), ODD_DIGIT_FIELDS)
@pytest.mark.parametrize("pad", range(16))
def test_any_pad_nibble_of_an_odd_bcd_field_decodes_as_the_reference_decodes(
    name: str, number: int, pad: int
) -> None:
    codec = CODECS[name]
    spec = codec.interface.fields[number]
    size = spec.length if spec.length % 2 else spec.length - 1  # an odd digit count
    tpdu, header = bytes(5), bytes(6)
    payload = bytearray(codec.encode(Message("0200", {number: "7" * size}, tpdu, header)))
    if spec.bcd_align is Align.RIGHT:  # the pad is the data's first nibble
        at = len(payload) - (size + 1) // 2
        payload[at] = pad << 4 | payload[at] & 0x0F
    else:  # the data's last nibble
        payload[-1] = payload[-1] & 0xF0 | pad
    same_decode(codec, bytes(payload), fast_expected=pad == 0)


@pytest.mark.parametrize("index", range(len(TERMINAL_ROWS)), ids=TERMINAL_ROWS)
@settings(max_examples=30)  # test_roundtrip draws more of them, through the codec
@given(data=st.data())
def test_every_terminal_transaction_takes_the_fast_path(index: int, data: st.DataObject) -> None:
    request = s.terminal_request(index)
    for typed in (data.draw(request), data.draw(s.terminal_reply(request, index))):
        message = terminal_table.build(typed)
        same_encode(TERMINAL_CODEC, message, fast_expected=True)
        same_decode(TERMINAL_CODEC, TERMINAL_CODEC.reference_encode(message), fast_expected=True)


@pytest.mark.parametrize("index", range(len(BANK_ROWS)), ids=BANK_ROWS)
@settings(max_examples=30)  # test_roundtrip draws more of them, through the codec
@given(data=st.data())
def test_every_bank_transaction_takes_the_fast_path(index: int, data: st.DataObject) -> None:
    request = s.bank_request(index)
    for typed in (data.draw(request), data.draw(s.bank_reply(request))):
        message = bank.build(typed)
        same_encode(BANK_CODEC, message, fast_expected=True)
        same_decode(BANK_CODEC, BANK_CODEC.reference_encode(message), fast_expected=True)


# --- what the fast path leaves to the reference, on purpose --------------------------------


def test_a_secondary_bitmap_on_the_terminal_interface_is_the_references_error() -> None:
    payload = bytearray(v8_payload())
    payload[13] |= 0x80
    assert TERMINAL_CODEC.fast_decode(bytes(payload)) is None
    same_decode(TERMINAL_CODEC, bytes(payload))


def test_a_non_canonical_ascii_length_is_the_references_to_read() -> None:
    payload = BANK_CODEC.reference_encode(Message("0200", {3: "401000", 32: "01020000"}))
    signed = payload.replace(b"0801020000", b"+801020000")  # int() reads "+8" as 8
    assert signed != payload
    assert BANK_CODEC.fast_decode(signed) is None
    assert BANK_CODEC.decode(signed).fields[32] == "01020000"
    same_decode(BANK_CODEC, signed)


def test_only_bytes_take_the_fast_path() -> None:
    payload = v8_payload()
    assert TERMINAL_CODEC.fast_decode(bytearray(payload)) is None  # type: ignore[arg-type]
    same_decode(TERMINAL_CODEC, bytearray(payload))  # type: ignore[arg-type]


def test_spec_entries_outside_the_fast_subset_are_never_taken_fast() -> None:
    digits = frozenset(n for n, f in TERMINAL.fields.items() if f.kind is Kind.N)
    binary = frozenset(n for n, f in TERMINAL.fields.items() if f.kind is Kind.B)
    layout: dict[str, Any] = {
        "prefix_bytes": 11,
        "secondary_bitmap": False,
        "digits": digits,
        "binary": binary,
    }
    with_22 = TERMINAL_CODEC.encode(Message("0200", {3: "000000", 22: "021"}, bytes(5), bytes(6)))
    without = TERMINAL_CODEC.encode(Message("0200", {3: "000000"}, bytes(5), bytes(6)))
    other_pad = copy.deepcopy(TERMINAL.compile(prefix=False))
    other_pad["22"]["right_pad"] = "F"
    decode = compile_decoder(other_pad, make=Message, **layout)
    encode = compile_encoder(other_pad, **layout)
    assert decode(with_22) is None and encode(TERMINAL_CODEC.decode(with_22)) is None
    assert decode(without) is not None and encode(TERMINAL_CODEC.decode(without)) == without
    ascii_bitmap = copy.deepcopy(TERMINAL.compile(prefix=False))
    ascii_bitmap["p"]["data_enc"] = "ascii"
    assert compile_decoder(ascii_bitmap, make=Message, **layout)(without) is None
    assert compile_encoder(ascii_bitmap, **layout)(TERMINAL_CODEC.decode(without)) is None

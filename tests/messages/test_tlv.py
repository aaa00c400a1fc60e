"""The private fields' TLV records: every error names its reason, field and offset, as pinned
here; values read back as they were written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.errors import CodecError
from messages.private import BillData, CardData, Prove, Purse, TerminalParameters
from messages.tlv import decode_tlv, encode_tlv
from tests.support.message_strategies import tlv_record

ADVICE_58 = bytes.fromhex(
    "010a00003100000000000001020101080200000a04000003e80b01050f04ca85e64d"
    "1006000000000001110400000001120720261126050255"
)


def test_an_advice_card_data_reads_as_typed_values() -> None:
    card = CardData.parse(ADVICE_58)
    assert card == CardData(
        app_serial=bytes.fromhex("00003100000000000001"),
        purse=Purse.ED,
        offline_counter=0,
        amount_fen=1000,
        pboc_type=5,
        tac=bytes.fromhex("ca85e64d"),
        psam_terminal=bytes.fromhex("000000000001"),
        psam_serial=1,
        card_datetime="20261126050255",
    )
    assert type(card.purse) is Purse and card.build() == ADVICE_58


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        ("01", "truncated private tag", 0),
        ("02010103", "truncated private tag", 3),
        ("17", "truncated private tag", 0),  # truncated is told before unknown
        ("1701ff", "unknown private tag 17", 0),
        ("0201010002", "unknown private tag 00", 3),
        ("0202 0001", "private tag 02 has a wrong length", 0),
        ("0104 00010203", "private tag 01 has a wrong length", 0),
        ("0503 aabbcc", "private tag 05 has a wrong length", 0),
        ("1508 0102", "private tag 15 has a wrong length", 0),
        ("020101 020102", "private tag 02 repeated", 3),
        ("1207 2026112605025a", "private tag 12 is malformed", 0),
        ("020101 1207 2026112605025a", "private tag 12 is malformed", 3),
        ("020103", "bad value for purse", None),
        ("140109", "bad value for prove", None),
        ("020103 17", "truncated private tag", 3),  # the layout is read before the enums
        ("020103 140109", "bad value for purse", None),
    ],
)
def test_card_data_errors(data: str, reason: str, offset: int | None) -> None:
    with pytest.raises(CodecError) as caught:
        CardData.parse(bytes.fromhex(data))
    assert (caught.value.reason, caught.value.field, caught.value.offset) == (reason, "58", offset)


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        ("0102 ff41", "private tag 01 is malformed", 0),  # not UTF-8
        ("0902 c328", "private tag 09 is malformed", 0),
        ("0203 000000", "private tag 02 has a wrong length", 0),
        ("1300", "unknown private tag 13", 0),
    ],
)
def test_bill_data_errors(data: str, reason: str, offset: int) -> None:
    with pytest.raises(CodecError) as caught:
        BillData.parse(bytes.fromhex(data))
    assert (caught.value.reason, caught.value.field, caught.value.offset) == (reason, "63", offset)


def test_empty_and_variable_values() -> None:
    assert CardData.parse(b"") == CardData()
    assert CardData.parse(bytes.fromhex("1500")) == CardData(issuer_script=b"")
    assert BillData.parse(bytes.fromhex("0100 0900")) == BillData(bill_id="", explanation="")
    assert CardData.parse(bytes.fromhex("140101")).prove is Prove.HAPPENED
    parameters = TerminalParameters.parse(bytes.fromhex("02020007"))
    assert parameters == TerminalParameters(offline_count_max=7)


uint = st.integers(0, 2**32 - 1)


@given(
    card=st.builds(
        CardData,
        app_serial=st.none() | st.binary(min_size=10, max_size=10),
        purse=st.none() | st.sampled_from(Purse),
        key_version=st.none() | st.integers(0, 255),
        online_counter=st.none() | st.integers(0, 65535),
        old_balance_fen=st.none() | uint,
        psam_serial=st.none() | uint,
        card_datetime=st.none() | st.from_regex(r"\A[0-9]{14}\Z"),
        prove=st.none() | st.sampled_from(Prove),
        issuer_script=st.none() | st.binary(max_size=255),
        overdraft_limit_fen=st.none() | st.integers(0, 2**24 - 1),
    ),
    bill=st.builds(
        BillData,
        bill_id=st.none() | st.text(max_size=60),
        total_fen=st.none() | uint,
        explanation=st.none() | st.text(max_size=60),
        health_data=st.none() | st.binary(max_size=255),
        diagnoses=st.none() | st.text(max_size=40),
        visit_script=st.none() | st.binary(max_size=255),
        card_visit=st.none() | st.binary(max_size=72),
        health_script=st.none() | st.binary(max_size=600),
        card_health=st.none() | st.binary(min_size=96, max_size=96),
        script_refused=st.none() | st.binary(min_size=3, max_size=3),
    ),
)
def test_records_read_back_what_they_write(card: CardData, bill: BillData) -> None:
    parsed = CardData.parse(card.build())
    assert parsed == card
    assert [type(v) for v in vars(parsed).values()] == [
        type(getattr(card, k)) for k in vars(parsed)
    ]
    assert BillData.parse(bill.build()) == bill


@given(st.binary(min_size=1, max_size=1200))
def test_a_chained_element_carries_any_length_in_consecutive_255_byte_elements(
    script: bytes,
) -> None:
    data = BillData(bill_id="B1", health_script=script).build()
    assert BillData.parse(data).health_script == script
    chunks = [script[i : i + 255] for i in range(0, len(script), 255)]
    assert data.endswith(b"".join(bytes((0x0F, len(c))) + c for c in chunks))


@pytest.mark.parametrize(
    "data",
    [
        "0F0141" + "0F0142",  # a short element then the tag again: repeated, not continued
        "0FFF" + "41" * 255 + "0E0100" + "0F0142",  # another tag in between
    ],
)
def test_a_chained_element_continues_only_right_after_a_full_one(data: str) -> None:
    with pytest.raises(CodecError, match="repeated"):
        BillData.parse(bytes.fromhex(data))


RECORDS = (CardData, BillData, TerminalParameters)


def _decoded(cls: type, data: bytes) -> object:
    """What the loop makes of ``data``: its values, or its error's reason, field and offset."""
    try:
        return decode_tlv(cls._BY_TAG, data, cls.FIELD)  # type: ignore[attr-defined]
    except CodecError as error:
        return ("error", str(error), error.field, error.offset)


def _tag_soup() -> st.SearchStrategy[bytes]:
    """Bytes that are mostly TLV elements of the records' tags (some of them wrong lengths,
    repeated or out of order), and sometimes anything at all."""
    element = st.tuples(st.integers(0, 0x19), st.binary(max_size=12)).map(
        lambda tv: bytes((tv[0], len(tv[1]))) + tv[1]
    )
    in_order = st.lists(element, max_size=12).map(lambda es: b"".join(sorted(es)))
    return st.one_of(in_order, st.lists(element, max_size=8).map(b"".join), st.binary(max_size=40))


@given(_tag_soup(), st.sampled_from(RECORDS))
def test_the_straight_line_reader_reads_what_the_loop_reads_or_leaves_it_to_it(
    data: bytes, cls: type
) -> None:
    read = cls._READ(data)  # type: ignore[attr-defined]
    if read is not None:
        assert read == _decoded(cls, data)
        assert list(read) == list(_decoded(cls, data))  # type: ignore[call-overload]


@given(tlv_record(CardData), tlv_record(BillData), tlv_record(TerminalParameters))
def test_the_straight_line_code_writes_and_reads_as_the_loops_do(
    card: CardData, bill: BillData, parameters: TerminalParameters
) -> None:
    for record in (card, bill, parameters):
        cls = type(record)
        data = encode_tlv(cls._ENCODERS, record)
        assert record.build() == data
        assert cls._READ(data) == decode_tlv(cls._BY_TAG, data, cls.FIELD)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (BillData(explanation="x" * 256), "private tag 09 (explanation) has a wrong length"),
        (BillData(card_health=bytes(95)), "private tag 10 (card_health) has a wrong length"),
        (CardData(tac=b"\x01"), "private tag 0F (tac) has a wrong length"),
    ],
)
def test_the_straight_line_writer_refuses_as_the_loop_does(record: object, reason: str) -> None:
    with pytest.raises(CodecError) as loop:
        encode_tlv(type(record)._ENCODERS, record)  # type: ignore[attr-defined]
    with pytest.raises(CodecError) as straight:
        record.build()  # type: ignore[attr-defined]
    assert str(straight.value) == str(loop.value) and reason in str(loop.value)


def test_an_uint_too_large_fails_alike() -> None:
    with pytest.raises(OverflowError):
        CardData(purse=256).build()  # type: ignore[arg-type]

"""The host-command codec: framing under every split of a stream, request round trips,
response codes and error mapping."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm import hostcmd
from hsm.errors import InvalidInputError, KeyUsageError
from hsm.interface import OnlineTxn, PurchaseRecord, SignOnKeys
from hsm.keys import CardKeyPath, KeyRef, KeyUsage

aliases = st.from_regex(r"\A[A-Za-z0-9._:/@-]{1,64}\Z")
refs = st.builds(
    KeyRef, aliases, st.integers(1, 999_999), st.sampled_from(list(KeyUsage)),
    st.sampled_from(["", "08D7B4"]),
)
paths = st.builds(CardKeyPath, refs, st.lists(st.binary(min_size=8, max_size=8), max_size=3)
                  .map(tuple))
times = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)
small = st.integers(0, 2**32 - 1)
txns = st.builds(OnlineTxn, st.sampled_from([1, 2, 3]), small, small, st.integers(0, 65535),
                 st.binary(min_size=4, max_size=4), st.binary(min_size=6, max_size=6),
                 st.binary(min_size=4, max_size=4))
records = st.builds(PurchaseRecord, st.sampled_from([5, 6, 9]), small,
                    st.binary(min_size=6, max_size=6), small, times)


@given(st.lists(st.binary(min_size=6, max_size=300), min_size=1, max_size=8), st.data())
def test_every_split_of_a_frame_stream(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(hostcmd.frame(b) for b in bodies)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    splitter = hostcmd.FrameSplitter()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += splitter.feed(stream[start:end])
    assert out == bodies


@given(paths, txns, small, times, st.binary(min_size=4, max_size=4))
def test_request_round_trip_mac3(
    path: CardKeyPath, txn: OnlineTxn, balance: int, when: datetime, mac3: bytes
) -> None:
    args = (path, txn, balance, when, mac3)
    frame = hostcmd.encode_request("0042", "V8", "verify_mac3", args)
    header, command, decoded, kwargs = hostcmd.decode_request(frame[2:])
    assert (header, command.method, tuple(decoded), kwargs) == ("0042", "verify_mac3", args, {})


@given(paths, records, st.binary(min_size=4, max_size=4), st.integers(0, 65535))
def test_request_round_trip_purchase(
    path: CardKeyPath, record: PurchaseRecord, rnd: bytes, ctr: int
) -> None:
    args = (path, record, rnd, ctr)
    frame = hostcmd.encode_request("9999", "W2", "generate_purchase_mac1", args)
    assert hostcmd.decode_request(frame[2:])[2] == list(args)


@given(aliases, st.sampled_from(list(KeyUsage)), times)
def test_keyword_and_enum_parameters(alias: str, usage: KeyUsage, now: datetime) -> None:
    frame = hostcmd.encode_request("0001", "A0", "generate_key", (alias, usage, now))
    _, _, args, kwargs = hostcmd.decode_request(frame[2:])
    assert args == [alias, usage] and kwargs == {"now": now}
    assert isinstance(args[1], KeyUsage)


@given(refs, refs, st.booleans(), st.binary(max_size=60))
def test_response_round_trip(pik: KeyRef, mak: KeyRef, with_tdk: bool, f62: bytes) -> None:
    command = hostcmd.BY_CODE["V0"]
    value = SignOnKeys(f62, pik, mak, mak if with_tdk else None)
    body = hostcmd.encode_response("0007", command, value)[2:]
    assert body[4:8] == b"V100"
    assert hostcmd.decode_response(body, command) == value


def test_verification_and_error_responses() -> None:
    m8 = hostcmd.BY_CODE["M8"]
    assert hostcmd.decode_response(hostcmd.encode_response("0001", m8, True)[2:], m8) is True
    assert hostcmd.decode_response(hostcmd.encode_response("0001", m8, False)[2:], m8) is False
    error = hostcmd.encode_error("0001", "M8", KeyUsageError("key x v1 is ZPK, this needs MAK"))
    assert error[2:].startswith(b"0001M9A7")
    with pytest.raises(KeyUsageError, match="needs MAK"):
        hostcmd.decode_response(error[2:], m8)
    with pytest.raises(InvalidInputError):
        hostcmd.decode_request(b"0001M8K")
    with pytest.raises(InvalidInputError):  # trailing bytes
        hostcmd.decode_request(b"0001NCx")
    assert [c.response_code for c in hostcmd.COMMANDS[:4]] == ["ND", "A1", "A7", "A9"]

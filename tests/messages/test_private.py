"""The private fields' records: built without ``__init__`` by their parsers, equal all the same."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields

import pytest

from messages.private import BillData, CardData, Purse, construct
from messages.terminal import Settlement, SignOn, TerminalReply
from messages.terminal_table import TABLE, reply_to


def test_construct_equals_the_constructor_defaults_included() -> None:
    built = CardData(purse=Purse.EP, tac=b"\x01\x02\x03\x04")
    made = construct(CardData, {"purse": Purse.EP, "tac": b"\x01\x02\x03\x04"})
    assert made == built
    assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    assert made.app_serial is None


def test_a_parsed_record_is_frozen_and_builds_the_same_bytes() -> None:
    data = BillData(bill_id="B0000001", total_fen=12_345, explanation="line 1\nline 2").build()
    parsed = BillData.parse(data)
    assert parsed.build() == data
    with pytest.raises(FrozenInstanceError):
        parsed.bill_id = "other"  # type: ignore[misc]


def test_construct_builds_a_typed_message_with_its_defaults() -> None:
    values = {
        "stan": "000001",
        "terminal_id": "POS00001",
        "institution_id": "101320000000001",
        "pan": "6225880123456789",
        "amount_fen": 100,
        "card": CardData(),
        "bill": bytes(16),
    }
    assert construct(Settlement, values) == Settlement(**values)


@pytest.mark.parametrize("reply_cls", sorted({r for _, _, r in TABLE}, key=lambda c: c.__name__))
def test_reply_to_equals_the_constructor(reply_cls: type[TerminalReply]) -> None:
    request = SignOn(stan="000001", terminal_id="POS00001", institution_id="101320000000001")
    reply = reply_to(request, "00", reply_cls, host_time="101500", host_date="1126")
    echoed = {f.name: getattr(reply, f.name) for f in fields(TerminalReply)}
    assert reply == reply_cls(**echoed)
    assert type(reply) is reply_cls and reply.tpdu == bytes.fromhex("6000000003")


def test_reply_to_refuses_what_its_class_would() -> None:
    request = SignOn(stan="000001", terminal_id="POS00001", institution_id="101320000000001")
    with pytest.raises(TypeError):
        reply_to(request, "00", no_such_field=1)
    with pytest.raises(TypeError):
        reply_to(request, "00", stan="000002")

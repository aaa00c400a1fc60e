"""Hypothesis strategies for every typed message, derived from the field tables and BINDS."""

from __future__ import annotations

import functools
import string
from typing import Any

from hypothesis import strategies as st

from messages import bank, terminal_table
from messages.binding import Bind
from messages.fieldspec import FieldSpec, InterfaceSpec, Kind, Var
from messages.private import (
    Balance,
    BlacklistDelta,
    CardData,
    OriginalData,
    Prove,
    Purse,
    SettlementTotals,
    TerminalParameters,
    WorkingKeys,
)
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from messages.terminal import SignOn, TerminalReply
from messages.tlv import Tag, TagKind

# The strategies below are built once and reused: a strategy built inside a draw is validated
# again on every example, which cost the round-trip tests about a third of their time.


@functools.cache
def digits(size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=size, max_size=max_size if max_size else size)


@functools.cache
def field_value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    low = spec.length if spec.var is Var.FIXED else 1
    if spec.kind is Kind.B:
        return st.binary(min_size=low, max_size=spec.length)
    if spec.kind.is_digits:
        return digits(low, spec.length)
    alphabet = string.ascii_letters + string.digits + (" -/." if spec.kind is Kind.ANS else "")
    return st.text(alphabet, min_size=low, max_size=spec.length)


def tag_value(tag: Tag) -> st.SearchStrategy[Any]:
    if tag.kind is TagKind.UINT:
        return st.integers(0, 2 ** (8 * tag.size) - 1)
    if tag.kind is TagKind.BCD:
        return digits(tag.size * 2)
    if tag.kind is TagKind.TEXT:
        return st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
    return st.binary(min_size=tag.size or 0, max_size=tag.size or 60)


def tlv_record(cls: Any) -> st.SearchStrategy[Any]:
    enums = getattr(cls, "_ENUMS", {})
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for tag in cls.LAYOUT:
        base = st.sampled_from(list(enums[tag.name])) if tag.name in enums else tag_value(tag)
        parts[tag.name] = st.none() | base
    return st.fixed_dictionaries(parts).map(lambda kw: cls(**kw))


def _working_keys() -> st.SearchStrategy[WorkingKeys]:
    b = st.binary
    single = st.builds(
        WorkingKeys,
        b(min_size=8, max_size=8),
        b(min_size=4, max_size=4),
        b(min_size=8, max_size=8),
        b(min_size=4, max_size=4),
    )
    double = st.builds(
        WorkingKeys,
        b(min_size=16, max_size=16),
        b(min_size=4, max_size=4),
        b(min_size=8, max_size=8),
        b(min_size=4, max_size=4),
    )
    with_tdk = st.builds(
        WorkingKeys,
        b(min_size=16, max_size=16),
        b(min_size=4, max_size=4),
        b(min_size=8, max_size=8),
        b(min_size=4, max_size=4),
        b(min_size=16, max_size=16),
        b(min_size=4, max_size=4),
    )
    return single | double | with_tdk


CONVERTED: dict[str, st.SearchStrategy[Any]] = {
    "amount": st.integers(0, 999_999_999_999),
    "card": tlv_record(CardData),
    "original": st.builds(OriginalData, digits(6), digits(6), digits(4)),
    "totals": st.builds(
        SettlementTotals,
        st.integers(0, 10**12 - 1),
        st.integers(0, 999),
        st.integers(0, 10**12 - 1),
        st.integers(0, 999),
        st.integers(0, 9),
    ),
    "balances": st.lists(
        st.builds(Balance, digits(2), st.integers(-(10**12) + 1, 10**12 - 1), digits(2), digits(3)),
        min_size=1,
        max_size=6,
    ).map(tuple),
    "keys": _working_keys(),
    "parameters": tlv_record(TerminalParameters),
    "blacklist": st.builds(
        BlacklistDelta,
        st.integers(0, 2**32 - 1),
        st.booleans(),
        st.lists(
            st.tuples(st.sampled_from("AD"), st.binary(min_size=10, max_size=10)), max_size=20
        ).map(tuple),
    ),
}


_BOUND: dict[tuple[tuple[Bind, ...], int, frozenset[str]], st.SearchStrategy[Any]] = {}


def bound_values(
    binds: tuple[Bind, ...], interface: InterfaceSpec, skip: frozenset[str] = frozenset()
) -> st.SearchStrategy[dict[str, Any]]:
    key = (binds, id(interface), skip)  # an interface is not hashable; there are two
    if key not in _BOUND:
        _BOUND[key] = _bound_values(binds, interface, skip)
    return _BOUND[key]


def _bound_values(
    binds: tuple[Bind, ...], interface: InterfaceSpec, skip: frozenset[str]
) -> st.SearchStrategy[dict[str, Any]]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for bind in binds:
        if bind.attr in skip:
            continue
        conv = bind.conv.name
        base = CONVERTED[conv] if conv in CONVERTED else field_value(interface.fields[bind.field])
        parts[bind.attr] = base if bind.required else st.none() | base
    return st.fixed_dictionaries(parts)


@functools.cache
def _terminal_envelope() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "stan": digits(6),
            "terminal_id": field_value(TERMINAL.fields[41]),
            "institution_id": field_value(TERMINAL.fields[42]),
            "batch": digits(6),
            "field60_rest": digits(0, 21),
            "mac": st.none() | st.binary(min_size=8, max_size=8),
            "tpdu": st.binary(min_size=5, max_size=5),
            "header": st.binary(min_size=6, max_size=6),
        }
    )


_REVERSIBLE = [row for row, _, _ in terminal_table.TABLE if row.reversible]


@functools.cache
@st.composite
def terminal_request(draw: st.DrawFn, index: int) -> Any:
    row, cls, _ = terminal_table.TABLE[index]
    values = draw(_terminal_envelope())
    values.update(draw(bound_values(cls.BINDS, TERMINAL)))
    if cls is SignOn:
        values["key_scheme"] = row.network_code
    return cls(**values)


@functools.cache
@st.composite
def terminal_reversal(draw: st.DrawFn) -> Any:
    from messages.terminal import Reversal

    row = draw(st.sampled_from(_REVERSIBLE))
    values = draw(_terminal_envelope())
    values.update(draw(bound_values(Reversal.BINDS, TERMINAL)))
    return Reversal(
        processing_code=row.processing_code or "",
        txn_type=row.txn_type or "",
        condition_code=row.condition_code,
        repeat=draw(st.booleans()),
        **values,
    )


@functools.cache
@st.composite
def terminal_reply(draw: st.DrawFn, request: st.SearchStrategy[Any], index: int) -> Any:
    reply_cls: type[TerminalReply] = terminal_table.TABLE[index][2]
    req = draw(request)
    values = draw(bound_values(reply_cls.BINDS, TERMINAL, frozenset({"response_code"})))
    code = draw(field_value(TERMINAL.fields[39]))
    return terminal_table.reply_to(req, code, reply_cls, **values)


@functools.cache
def _bank_envelope() -> st.SearchStrategy[dict[str, Any]]:
    optional = st.none()
    return st.fixed_dictionaries(
        {
            "stan": digits(6),
            "transmitted": digits(10),
            "acquirer_id": digits(1, 11),
            "terminal_id": optional | field_value(BANK.fields[41]),
            "branch_id": optional | field_value(BANK.fields[42]),
            "mac": optional | st.binary(min_size=8, max_size=8),
        }
    )


@functools.cache
@st.composite
def bank_request(draw: st.DrawFn, index: int) -> Any:
    row, cls = bank.TABLE[index]
    values = draw(_bank_envelope())
    values.update(draw(bound_values(cls.BINDS, BANK)))
    if cls is bank.CardService:
        values["service"] = row.name
    return cls(**values)


@functools.cache
@st.composite
def bank_reversal(draw: st.DrawFn) -> Any:
    row = draw(st.sampled_from([r for r, _ in bank.TABLE if r.reversible]))
    values = draw(_bank_envelope())
    values.update(draw(bound_values(bank.BankReversal.BINDS, BANK)))
    return bank.BankReversal(
        processing_code=row.processing_code or "", repeat=draw(st.booleans()), **values
    )


@functools.cache
@st.composite
def bank_reply(draw: st.DrawFn, request: st.SearchStrategy[Any]) -> Any:
    req = draw(request)
    values = draw(bound_values(bank.BankReply.BINDS, BANK, frozenset({"response_code"})))
    return bank.reply_to(req, draw(field_value(BANK.fields[39])), **values)


__all__ = [
    "Prove",
    "Purse",
    "bank_reply",
    "bank_request",
    "bank_reversal",
    "terminal_reply",
    "terminal_request",
    "terminal_reversal",
]

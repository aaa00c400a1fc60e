"""Declarative binding between typed request/response dataclasses and message fields.

Each typed message class lists ``BINDS``: which attribute travels in which field, through
which :class:`Conv`. :func:`parse_fields` and :func:`build_fields` walk that list; nothing
else in the message layer knows field numbers. A class that parses and builds on every
exchange turns its list into plans once (:func:`parse_plan`, :func:`build_plan`) and walks
those with :func:`parse_planned` and :func:`build_planned`: the same values and errors, without
reading each :class:`Bind` and its :class:`Conv` per field nor calling the identity on text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from messages.codec import FieldValue
from messages.errors import CodecError
from messages.private import (
    Balance,
    BillData,
    BlacklistDelta,
    CardData,
    OriginalData,
    SettlementTotals,
    TerminalParameters,
    WorkingKeys,
)
from messages.straight import defined

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Conv(Generic[T]):
    """How one typed value becomes a field value and back."""

    name: str
    parse: Callable[[Any], T]
    build: Callable[[T], FieldValue]
    binary: bool = False  # the field value is bytes (else str)


def _build_amount(value: int) -> str:
    if not 0 <= value <= 999_999_999_999:
        raise CodecError("amount out of range", field="4")
    return f"{value:012d}"


def _same(value: T) -> T:
    return value


TEXT: Conv[str] = Conv("text", _same, _same)
AMOUNT: Conv[int] = Conv("amount", int, _build_amount)  # int(value): what _amount did
BINARY: Conv[bytes] = Conv("binary", _same, _same, binary=True)
CARD: Conv[CardData] = Conv("card", CardData.parse, CardData.build, binary=True)
BILL: Conv[BillData] = Conv("bill", BillData.parse, BillData.build, binary=True)
ORIGINAL: Conv[OriginalData] = Conv("original", OriginalData.parse, OriginalData.build)
TOTALS: Conv[SettlementTotals] = Conv("totals", SettlementTotals.parse, SettlementTotals.build)
BALANCES: Conv[tuple[Balance, ...]] = Conv("balances", Balance.parse_all, Balance.build_all)
KEYS: Conv[WorkingKeys] = Conv("keys", WorkingKeys.parse, WorkingKeys.build, binary=True)
PARAMETERS: Conv[TerminalParameters] = Conv(
    "parameters", TerminalParameters.parse, TerminalParameters.build, binary=True
)
BLACKLIST: Conv[BlacklistDelta] = Conv(
    "blacklist", BlacklistDelta.parse, BlacklistDelta.build, binary=True
)


@dataclass(frozen=True, slots=True)
class Bind:
    """Attribute ``attr`` travels in field ``field`` through ``conv``."""

    attr: str
    field: int
    conv: Conv[Any] = TEXT
    required: bool = True


def parse_fields(binds: tuple[Bind, ...], fields: Mapping[int, FieldValue]) -> dict[str, Any]:
    """Typed attribute values for ``binds`` from a message's fields."""
    values: dict[str, Any] = {}
    for bind in binds:
        raw = fields.get(bind.field)
        if raw is None:
            if bind.required:
                raise CodecError("mandatory field missing", field=str(bind.field))
            continue
        if isinstance(raw, bytes) is not bind.conv.binary:
            raise CodecError("field has the wrong type for its use", field=str(bind.field))
        values[bind.attr] = bind.conv.parse(raw)
    return values


def build_fields(binds: tuple[Bind, ...], source: object, fields: dict[int, FieldValue]) -> None:
    """Add the field values of ``source``'s bound attributes to ``fields``."""
    for bind in binds:
        value = getattr(source, bind.attr)
        if value is None:
            if bind.required:
                raise CodecError("mandatory field missing", field=str(bind.field))
            continue
        fields[bind.field] = bind.conv.build(value)


# (field, attribute, required, binary, parse; None: the value as it is) of each bind
ParsePlan = tuple[tuple[int, str, bool, bool, Callable[[Any], Any] | None], ...]
# (attribute, field, required, build; None: the value as it is) of each bind
BuildPlan = tuple[tuple[str, int, bool, Callable[[Any], FieldValue] | None], ...]


def parse_plan(binds: tuple[Bind, ...]) -> ParsePlan:
    """``binds`` for :func:`parse_planned`, in their order."""
    return tuple(
        (
            b.field,
            b.attr,
            b.required,
            b.conv.binary,
            None if b.conv.parse is _same else b.conv.parse,
        )
        for b in binds
    )


def build_plan(binds: tuple[Bind, ...]) -> BuildPlan:
    """``binds`` for :func:`build_planned`, in their order."""
    return tuple(
        (b.attr, b.field, b.required, None if b.conv.build is _same else b.conv.build)
        for b in binds
    )


def parse_planned(plan: ParsePlan, fields: Mapping[int, FieldValue]) -> dict[str, Any]:
    """:func:`parse_fields` of the binds ``plan`` was made from."""
    values: dict[str, Any] = {}
    get = fields.get
    for number, attr, required, binary, parse in plan:
        raw = get(number)
        if raw is None:
            if required:
                raise CodecError("mandatory field missing", field=str(number))
            continue
        if isinstance(raw, bytes) is not binary:
            raise CodecError("field has the wrong type for its use", field=str(number))
        values[attr] = raw if parse is None else parse(raw)
    return values


def build_planned(plan: BuildPlan, source: object, fields: dict[int, FieldValue]) -> None:
    """:func:`build_fields` of the binds ``plan`` was made from."""
    for attr, number, required, build in plan:
        value = getattr(source, attr)
        if value is None:
            if required:
                raise CodecError("mandatory field missing", field=str(number))
            continue
        fields[number] = value if build is None else build(value)


# The plans' straight-line code: a plan's walk written out as a function of its own (as
# `messages.straight` does for the codec's fields), generated from its field numbers, attribute
# names and flags only — the same reads, checks, errors and order, without unpacking each step.
PlannedParse = Callable[[Mapping[int, FieldValue]], dict[str, Any]]
PlannedBuild = Callable[[object, dict[int, FieldValue]], None]


def planned_parse(plan: ParsePlan) -> PlannedParse:
    """:func:`parse_planned` of ``plan`` as a function of the fields alone."""
    lines = ["def parse(fields):", "    values = {}", "    get = fields.get"]
    namespace: dict[str, Any] = {"CodecError": CodecError}
    for index, (number, attr, required, binary, parse) in enumerate(plan):
        _check_step(number, attr)
        lines += [f"    raw = get({number})", "    if raw is None:"]
        if required:
            lines.append(f'        raise CodecError("mandatory field missing", field="{number}")')
        else:
            lines.append("        pass")
        lines += [
            f"    elif isinstance(raw, bytes) is not {binary}:",
            f'        raise CodecError("field has the wrong type for its use", field="{number}")',
            "    else:",
        ]
        if parse is None:
            lines.append(f"        values[{attr!r}] = raw")
        else:
            namespace[f"p{index}"] = parse
            lines.append(f"        values[{attr!r}] = p{index}(raw)")
    lines.append("    return values")
    made: PlannedParse = defined(lines, namespace, "<planned parse>")
    return made


def planned_build(plan: BuildPlan) -> PlannedBuild:
    """:func:`build_planned` of ``plan`` as a function of the source and the fields."""
    lines = ["def build(source, fields):"]
    namespace: dict[str, Any] = {"CodecError": CodecError}
    for index, (attr, number, required, build) in enumerate(plan):
        _check_step(number, attr)
        lines += [f"    value = source.{attr}", "    if value is None:"]
        if required:
            lines.append(f'        raise CodecError("mandatory field missing", field="{number}")')
        else:
            lines.append("        pass")
        lines.append("    else:")
        if build is None:
            lines.append(f"        fields[{number}] = value")
        else:
            namespace[f"b{index}"] = build
            lines.append(f"        fields[{number}] = b{index}(value)")
    lines.append("    return None")
    made: PlannedBuild = defined(lines, namespace, "<planned build>")
    return made


def _check_step(number: object, attr: str) -> None:
    """What generated code may name: an int field number and an identifier."""
    if type(number) is not int or not attr.isidentifier():
        raise ValueError(f"bind {attr!r} in field {number!r} cannot be planned")

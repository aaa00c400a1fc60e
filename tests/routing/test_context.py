"""The request context: its hand-written ``__init__`` is the one dataclass would write."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date, datetime
from typing import Any

import pytest

from routing.context import OfflineLimits, RequestContext, TerminalRecord, Why


def _values() -> dict[str, Any]:
    terminal = TerminalRecord("P0000001", "H001", "pos", "active", "000001")
    return {
        "terminal": terminal,
        "session": None,
        "now": datetime(2026, 1, 5, 7, 8, 9),
        "hsm": object(),
        "terminals": object(),
        "sessions": object(),
        "cards": object(),
        "ledger": object(),
        "message_key": "P0000001|000001|000042|0200",
        "offline": OfflineLimits(1, 2, 3),
        "medical": object(),
    }


def test_init_takes_the_fields_in_order_with_their_defaults() -> None:
    parameters = list(inspect.signature(RequestContext.__init__).parameters.values())[1:]
    fields = [f for f in dataclasses.fields(RequestContext) if f.init]
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields, strict=True):
        default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        assert parameter.default is default


def test_built_positionally_by_keyword_and_by_replace_alike() -> None:
    values = _values()
    context = RequestContext(*values.values())
    assert context == RequestContext(**values)
    assert all(getattr(context, name) is value for name, value in values.items())
    later = dataclasses.replace(context, now=datetime(2026, 1, 6))
    assert later.now == datetime(2026, 1, 6) and later.terminal is context.terminal
    shorter = {k: v for k, v in values.items() if k not in ("offline", "medical")}
    assert RequestContext(**shorter).offline == OfflineLimits(20_000, 50, 72)
    assert RequestContext(**shorter).medical is None


def test_each_context_has_its_own_refusal_note() -> None:
    values = _values()
    context, again = RequestContext(**values), RequestContext(**values)
    assert context.why is None
    context.note_why("bill_not_found", "B1")
    assert context.why == Why("bill_not_found", "B1") and again.why is None
    assert dataclasses.replace(context, now=datetime(2026, 1, 6)).why is None
    assert context == again  # the note takes no part in equality


def test_frozen() -> None:
    context = RequestContext(*_values().values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.now = datetime(2026, 1, 6)  # type: ignore[misc]
    assert context.host_time == "070809" and context.host_date == "0105"


def test_a_card_serial_is_made_once_and_takes_no_part_in_equality() -> None:
    from routing.context import CardRecord

    card = CardRecord("6212340000000016", "3100000000000001", "c1", 1, "active", date(2030, 1, 1))
    fresh = CardRecord("6212340000000016", "3100000000000001", "c1", 1, "active", date(2030, 1, 1))
    assert card.serial_bytes == bytes.fromhex("00003100000000000001")
    assert card.serial_bytes is card.serial_bytes
    assert card == fresh and repr(card) == repr(fresh) and hash(card) == hash(fresh)
    bad = CardRecord("6212340000000016", "not hex", "c1", 1, "active", date(2030, 1, 1))
    with pytest.raises(ValueError):
        bad.serial_bytes  # noqa: B018 - the property raises at its use, as before

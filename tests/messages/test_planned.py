"""The terminal classes' plans as straight-line code (`planned_parse`, `planned_build`): the
same values, errors and field order as the loops `parse_planned` and `build_planned` walk."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from messages.binding import build_planned, parse_planned
from messages.errors import CodecError
from messages.terminal import TerminalMessage
from messages.terminal_table import TABLE

CLASSES = sorted(
    {cls for _, request, reply in TABLE for cls in (request, reply)} | {TerminalMessage},
    key=lambda cls: cls.__name__,
)
NUMBERS = sorted({step[0] for cls in CLASSES for step in cls.PARSE_PLAN})


def _outcome(function: Any, *args: Any) -> Any:
    try:
        return ("ok", function(*args), list(args[-1]) if isinstance(args[-1], dict) else None)
    except CodecError as error:
        return ("error", str(error), error.field, error.offset)
    except Exception as error:  # a conv's own failure: the same type either way
        return ("raised", type(error))


def _field_values() -> st.SearchStrategy[dict[int, Any]]:
    value = st.one_of(st.text(max_size=6), st.binary(max_size=6), st.just("000000000100"))
    return st.dictionaries(st.sampled_from(NUMBERS), value, max_size=len(NUMBERS))


@given(st.sampled_from(CLASSES), _field_values())
def test_planned_parse_is_parse_planned(cls: Any, fields: dict[int, Any]) -> None:
    assert _outcome(cls.PARSE, fields) == _outcome(parse_planned, cls.PARSE_PLAN, fields)


@given(st.sampled_from(CLASSES), st.data())
def test_planned_build_is_build_planned(cls: Any, data: st.DataObject) -> None:
    attrs = {step[0] for step in cls.BUILD_PLAN}
    given_attrs = data.draw(st.sets(st.sampled_from(sorted(attrs))))
    source = SimpleNamespace(**{attr: None for attr in attrs})
    for attr in given_attrs:
        setattr(source, attr, data.draw(st.sampled_from(["x", "000000000100", 100, b"\x01"])))
    # the generated function is the class's, called here with another source
    straight, loop = {}, {}  # type: ignore[var-annotated]
    assert _outcome(cls.BUILD, source, straight) == _outcome(
        build_planned, cls.BUILD_PLAN, source, loop
    )
    assert list(straight.items()) == list(loop.items())

"""A group commit's write sends its array parameters as PostgreSQL array literals, one text
value each.

The batch's write (``ledger.pg_post``) carries its values as some forty arrays. asyncpg encodes
an array parameter element by element, asking of every element whether it is itself a nested
array (``isinstance`` against ``collections.abc`` classes, a Python call each): for a batch of
ten exchanges that is most of the write's cost in the daemon (~120 µs of ~150). An array
literal (``{"a","b"}``, ``{1,2}``) is one ``str.join``. So a statement's ``$n::type[]`` becomes
``$n::text::type[]`` and its list there is sent as the literal — same values, same NULLs, same
order; a value of the wrong type still fails (TypeError), as asyncpg's own encoding would,
never as a silently different array.

Only where each array is read once — ``unnest``, ``cardinality`` — as in the write. The
parsed array is not a constant to the planner: compared with ``= ANY`` it is parsed again for
every row a scan filters (the batch's read so doubled the ledger backend's CPU), so
:func:`text_arrays` refuses a statement with ``ANY``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

_PARAMETER = re.compile(r"\$(\d+)::(text|varchar|bigint|int|smallint|boolean)\[\]")
_TEXT, _INTEGER, _BOOLEAN = "text", "integer", "boolean"
_KINDS = {"text": _TEXT, "varchar": _TEXT, "bigint": _INTEGER, "int": _INTEGER,
          "smallint": _INTEGER, "boolean": _BOOLEAN}  # fmt: skip


class TextArrays:
    """A statement whose array parameters are read from text (:func:`text_arrays`)."""

    __slots__ = ("_kinds", "sql")

    def __init__(self, sql: str, kinds: dict[int, str]) -> None:
        self.sql, self._kinds = sql, kinds

    def arguments(self, values: Sequence[Any]) -> list[Any]:
        """``values`` (the statement's parameters in order) with each array parameter's list
        as its literal (None stays NULL).

        >>> TextArrays("", {1: "text", 2: "integer"}).arguments([['a"b', None], [1, 2], 7])
        ['{"a\\\\"b",NULL}', '{1,2}', 7]
        """
        kinds = self._kinds
        return [
            value if value is None or n not in kinds else _LITERALS[kinds[n]](value)
            for n, value in enumerate(values, start=1)
        ]


@functools.lru_cache(maxsize=64)
def text_arrays(sql: str) -> TextArrays:
    """``sql`` with its array parameters of text, integers and booleans read from text (a
    statement with ``ANY`` refused: see the module).

    >>> s = text_arrays("SELECT unnest($1::text[], $2::bigint[]), $3::int")
    >>> s.sql
    'SELECT unnest($1::text::text[], $2::text::bigint[]), $3::int'
    >>> s.arguments([["x"], [5], 3])
    ['{"x"}', '{5}', 3]
    """
    if re.search(r"\bANY\s*\(", sql, re.IGNORECASE):
        raise ValueError("an array compared with ANY is parsed for every row: keep it binary")
    kinds: dict[int, str] = {}

    def rewrite(match: re.Match[str]) -> str:
        number, kind = int(match[1]), _KINDS[match[2]]
        if kinds.setdefault(number, kind) != kind:
            raise ValueError(f"parameter ${number} used as two array types")
        return f"${number}::text::{match[2]}[]"

    return TextArrays(_PARAMETER.sub(rewrite, sql), kinds)


def text_literal(values: Sequence[str | None]) -> str:
    """An array of text: each element quoted, ``"`` and ``\\`` escaped; None is NULL.

    >>> text_literal([]), text_literal(["a", "b c"]), text_literal(["NULL", None, "\\\\"])
    ('{}', '{"a","b c"}', '{"NULL",NULL,"\\\\\\\\"}')
    """
    if not values:
        return "{}"
    try:
        joined = '","'.join(values)  # type: ignore[arg-type]
    except TypeError:  # a NULL (or not text: refused below)
        return "{" + ",".join(map(_text_element, values)) + "}"
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        return "{" + ",".join(map(_text_element, values)) + "}"
    return '{"' + joined + '"}'


def _text_element(value: str | None) -> str:
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise TypeError(f"text expected in a text array, got {type(value).__name__}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def integer_literal(values: Sequence[int | None]) -> str:
    """An array of integers (``int`` only, as asyncpg takes; a bool is 1 or 0); None is NULL.

    >>> integer_literal([1, -2, None]), integer_literal([])
    ('{1,-2,NULL}', '{}')
    """
    try:
        return "{" + ",".join(map(int.__repr__, values)) + "}"
    except TypeError:  # a NULL (or not an integer: refused below)
        return "{" + ",".join(map(_integer_element, values)) + "}"


def _integer_element(value: int | None) -> str:
    return "NULL" if value is None else int.__repr__(value)


def boolean_literal(values: Sequence[bool | None]) -> str:
    """An array of booleans (``bool`` only); None is NULL.

    >>> boolean_literal([True, False, None])
    '{t,f,NULL}'
    """
    return "{" + ",".join(map(_boolean_element, values)) + "}"


def _boolean_element(value: bool | None) -> str:
    if value is True:
        return "t"
    if value is False:
        return "f"
    if value is None:
        return "NULL"
    raise TypeError(f"a bool expected in a boolean array, got {type(value).__name__}")


_LITERALS: dict[str, Callable[[Any], str]] = {
    _TEXT: text_literal,
    _INTEGER: integer_literal,
    _BOOLEAN: boolean_literal,
}

"""The group commit's array parameters as literals (``ledger.pg_arrays``): PostgreSQL reads back
exactly the lists sent — awkward text, NULLs, extremes — and a value of the wrong type is
refused before anything is sent, as asyncpg's own encoding refuses it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.pg_arrays import boolean_literal, integer_literal, text_arrays, text_literal
from tests.support.pg import DSN

AWKWARD = ['a"b', "c\\d", "", "NULL", "null", " x ", "{}", "a,b", "}", '"', "\\", "医保", "\t\n"]
BIGINT_MAX = 2**63 - 1
_ECHO = "SELECT $1::text[], $2::bigint[], $3::boolean[], $4::int[], $5::varchar[], $6::int"


def _echo(values: list[Any]) -> list[Any]:
    async def run() -> list[Any]:
        connection = await asyncpg.connect(DSN)
        try:
            statement = text_arrays(_ECHO)
            row = await connection.fetchrow(statement.sql, *statement.arguments(values))
            return list(row)
        finally:
            await connection.close()

    return asyncio.run(run())


@pytest.mark.postgres
def test_postgres_reads_back_exactly_what_was_sent() -> None:
    values = [
        [*AWKWARD, None],
        [0, -1, BIGINT_MAX, -BIGINT_MAX - 1, None],
        [True, False, None],
        [2**31 - 1, True],  # a bool in an integer column is 1, as asyncpg sends it
        ["x", None, 'y"'],
        7,
    ]
    assert _echo(values) == [values[0], values[1], values[2], [2**31 - 1, 1], values[4], 7]


@pytest.mark.postgres
def test_empty_lists_and_nulls_stay_what_they_were() -> None:
    assert _echo([[], [], [], [], None, None]) == [[], [], [], [], None, None]


@pytest.mark.postgres
@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(exclude_characters="\x00")))))
def test_any_text_round_trips(texts: list[str | None]) -> None:
    assert _echo([texts, [], [], [], [], 0])[0] == texts


def test_the_statement_reads_each_array_parameter_from_text() -> None:
    statement = text_arrays("SELECT $1::text[] || $1::text[], $2::numeric[], $3::bigint")
    assert statement.sql == "SELECT $1::text::text[] || $1::text::text[], $2::numeric[], $3::bigint"
    assert statement.arguments([["a"], [1.5], 2]) == ['{"a"}', [1.5], 2]  # numeric[]: as it was


def test_an_array_compared_with_any_is_refused() -> None:
    with pytest.raises(ValueError, match="ANY"):
        text_arrays("SELECT id FROM accounts WHERE id = any ($1::text[])")


def test_a_parameter_used_as_two_array_types_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\$1"):
        text_arrays("SELECT $1::text[], $1::bigint[]")


@pytest.mark.parametrize(
    ("literal", "values"),
    [
        (text_literal, ["a", 1]),
        (text_literal, [b"a"]),
        (integer_literal, [1, "2"]),
        (integer_literal, [1.0]),
        (integer_literal, ["1,2"]),
        (boolean_literal, [1]),
        (boolean_literal, ["t"]),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(literal: Any, values: list[Any]) -> None:
    with pytest.raises(TypeError):
        literal(values)

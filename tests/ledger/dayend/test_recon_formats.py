"""Properties of the bank files' layout (ledger/dayend/bank_files.py): any return file and any
statement round-trip through render, seal and split; every line is 220 bytes; a change of any
single byte of a sealed file is refused (layout, totals or MAC)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend import return_file as rf
from ledger.dayend.payout_file import LINE_BYTES
from tests.support.daemon import new_hsm, now

HSM = new_hsm(MemoryKeyStore())
KEY = asyncio.run(HSM.generate_key("bank/b1/FILE", KeyUsage.FILE, now=now()))


def _text(max_chars: int) -> st.SearchStrategy[str]:
    alphabet = st.sampled_from("abcXYZ019-_.医院药店王")
    return st.text(alphabet, max_size=max_chars).map(str.strip)


_ids = st.text(st.sampled_from("abcdef0123456789-"), min_size=1, max_size=32)  # payee_id: 32 bytes


@st.composite
def return_files(draw: st.DrawFn) -> rf.ReturnFile:
    count = draw(st.integers(0, 6))
    lines = []
    for number in range(1, count + 1):
        returned = draw(st.booleans())
        lines.append(
            rf.ReturnLine(
                number,
                draw(_ids),
                draw(_ids),
                draw(st.text("0123456789", max_size=30)),
                draw(st.integers(1, 10**12)),
                rf.RETURNED if returned else rf.PAID,
                draw(st.sampled_from(sorted(rf.REASONS))) if returned else "",
                draw(_text(12)) if returned else "",
            )
        )
    return rf.ReturnFile("b1", "2026-11-26", "PAYOUT_20261125_b1_INS.txt", "0A" * 8, tuple(lines))


@st.composite
def statements(draw: st.DrawFn) -> bs.Statement:
    count = draw(st.integers(0, 6))
    entries = [
        bs.StatementEntry(
            f"REF{n}",
            draw(st.sampled_from(bs.STATEMENT_KINDS)),
            draw(st.sampled_from((bs.CREDIT, bs.DEBIT))),
            draw(st.integers(1, 10**12)),
            draw(_ids),
            draw(_text(20)),
        )
        for n in range(count)
    ]
    account = draw(st.sampled_from((bs.FUND, bs.EP_FLOAT)))
    return bs.Statement("b1", "2026-11-26", account, "S-1", tuple(entries))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(return_files())
def test_return_files_round_trip(answer: rf.ReturnFile) -> None:
    sealed = asyncio.run(bf.seal(HSM, KEY, rf.render_return(answer)))
    assert all(len(line) == LINE_BYTES for line in sealed[:-1].split(b"\n"))
    assert asyncio.run(rf.parse_return(HSM, KEY, sealed)) == answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statements())
def test_statements_round_trip(statement: bs.Statement) -> None:
    sealed = asyncio.run(bf.seal(HSM, KEY, bs.render_statement(statement)))
    assert asyncio.run(bs.parse_statement(HSM, KEY, sealed)) == statement


@settings(max_examples=60, deadline=None)
@given(statements(), st.data())
def test_any_changed_byte_is_refused(statement: bs.Statement, data: st.DataObject) -> None:
    sealed = asyncio.run(bf.seal(HSM, KEY, bs.render_statement(statement)))
    at = data.draw(st.integers(0, len(sealed) - 2))  # not the final line break
    value = data.draw(st.integers(0, 255).filter(lambda b: b != sealed[at]))
    changed = sealed[:at] + bytes([value]) + sealed[at + 1 :]
    try:
        parsed = asyncio.run(bs.parse_statement(HSM, KEY, changed))
    except bf.BankFileError:
        return
    # a change inside trailing filler of a line is the only one that may pass: same content
    assert parsed == statement


def _sealed_statement(*refs: str) -> bytes:
    entries = tuple(bs.StatementEntry(r, bs.OTHER, bs.CREDIT, 5, "x") for r in refs)
    statement = bs.Statement("b1", "2026-11-26", bs.FUND, "S1", entries)
    return asyncio.run(bf.seal(HSM, KEY, bs.render_statement(statement)))


def _refusal(data: bytes) -> str:
    with pytest.raises(bf.BankFileError) as refused:
        asyncio.run(bs.parse_statement(HSM, KEY, data))
    return str(refused.value)


def test_refusals_say_what_is_wrong_and_where() -> None:
    sealed = _sealed_statement("R1", "R2", "R3")
    lines = sealed.split(b"\n")[:-1]
    no_trailer = b"".join(x + b"\n" for x in lines[:-1])
    assert _refusal(no_trailer) == (
        "the trailer is missing: the last line (4 of the file) is not a T record"
    )
    assert _refusal(lines[0] + b"\n") == "the trailer is missing: the file has only a header"
    crlf = sealed.replace(b"\n", b"\r\n")
    assert _refusal(crlf).startswith("line 1 of the file (the header is line 1) ends with CR LF")
    short = b"".join(x + b"\n" for x in [*lines[:2], lines[2][:-3], *lines[3:]])
    assert _refusal(short) == "line 3 of the file (the header is line 1) is 217 bytes, not 220"
    twice = _sealed_statement("R1", "R2", "R1")
    assert _refusal(twice) == "bank reference R1 appears twice in the statement (lines 1 and 3)"

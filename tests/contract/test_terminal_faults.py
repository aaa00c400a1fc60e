"""The terminal interface's "Faults" rule, read from specs/terminal-interface.md alone: a request
of the spec's transaction table that lacks one of its mandatory fields does not decode as that
request, so `make run`'s daemon answers it `30` under the response MTI, echoing F11 and F41 (and
F42 when sent), without F64 — and keeps the connection open. A frame without F11 gets no answer:
its connection is closed. Imports nothing of medswitch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.contract.daemon import Deployment, Link, running
from tests.contract.wire import encode, tlv

SPECS = Path(__file__).resolve().parents[2] / "specs"
PAN = "6225880000000001"


class Row(NamedTuple):
    """One row of the spec's transaction table: codes, and its request fields as listed."""

    name: str
    mti: str
    processing_code: str | None
    condition_code: str | None
    txn_type: str
    network_code: str
    fields: tuple[str, ...]  # "58" mandatory, "58?" optional

    @property
    def mandatory(self) -> tuple[int, ...]:
        return tuple(int(f) for f in self.fields if not f.endswith("?"))


def spec_rows() -> list[Row]:
    text = (SPECS / "terminal-interface.md").read_text()
    rows = []
    for line in text.splitlines():
        found = re.match(r"\| (\w+): .*? \| (\d{4})/\d{4} \| ([\d—]+) \| ([\d—]+) \| (\d\d) \| "
                         r"(\d{3}) \| ([\d?, ]+) \|", line)
        if found:
            name, mti, f3, f25, t60, n60, listed = found.groups()
            rows.append(Row(name, mti, None if f3 == "—" else f3, None if f25 == "—" else f25,
                            t60, n60, tuple(f.strip() for f in listed.split(","))))
    return rows


ROWS = spec_rows()


def sample(row: Row, number: int, terminal: dict[str, Any]) -> str:
    """A well-formed value of field ``number`` for ``row`` (spec: field table, fields 48, 58,
    60, 61, 63)."""
    if number == 48:  # batch totals (62 digits), records sent (4) or blacklist version (8)
        return {"batch_settlement": "0" * 62, "batch_upload_end": "0001"}.get(row.name, "00000001")
    values = {
        2: PAN, 4: "000000001000", 11: "004711", 41: terminal["terminal_id"],
        42: terminal["institution"].ljust(15), 58: tlv({}),  # a TLV with no element
        60: row.txn_type + "000001" + row.network_code, 61: "000001" "000042" "1207",
        63: "00" * 16,
    }
    return values[number]


def frame(row: Row, terminal: dict[str, Any], without: int | None) -> bytes:
    """``row``'s request with its mandatory fields but ``without``, and its codes F3, F25."""
    fields = {n: sample(row, n, terminal) for n in row.mandatory if n != without}
    if row.processing_code is not None:
        fields[3] = row.processing_code
    if row.condition_code is not None:
        fields[25] = row.condition_code
    return encode(row.mti, fields, None)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(tmp_path_factory.mktemp("faults")) as found:
        yield found


@pytest.fixture(scope="module")
def terminal(deployment: Deployment) -> dict[str, Any]:
    listing: Any = deployment.listing()
    return dict(next(t for t in reversed(listing["terminals"]) if t["kind"] == "pos"))


def test_the_table_is_read_whole() -> None:
    names = {row.name for row in ROWS}
    assert {"sign_on", "settlement", "void", "batch_upload_end", "batch_settlement"} <= names
    settlement = next(row for row in ROWS if row.name == "settlement")
    assert settlement.mandatory == (11, 41, 42, 2, 4, 58, 63, 60)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_a_request_lacking_a_mandatory_field_is_answered_30_with_its_envelope(
    deployment: Deployment, terminal: dict[str, Any], row: Row
) -> None:
    link = Link(deployment.terminal_port)
    try:
        for missing in (n for n in row.mandatory if n not in (11, 41)):
            reply = link.exchange(frame(row, terminal, missing))
            assert reply.mti == f"{int(row.mti) + 10:04d}", (row.name, missing, reply.mti)
            assert reply.fields[39] == "30", (row.name, missing, reply.fields)
            assert reply.fields[11] == "004711", (row.name, missing)
            assert reply.fields[41] == terminal["terminal_id"], (row.name, missing)
            if missing != 42:
                assert reply.fields[42] == terminal["institution"].ljust(15), (row.name, missing)
            assert 64 not in reply.fields, "a 30 before any keys are known carries no MAC"
        whole = link.exchange(frame(row, terminal, None))  # the same frame whole: not a 30
        assert whole.fields[39] != "30", (row.name, whole.fields)
    finally:
        link.close()


def test_a_settlement_without_its_stan_gets_no_answer_and_its_connection_closed(
    deployment: Deployment, terminal: dict[str, Any]
) -> None:
    settlement = next(row for row in ROWS if row.name == "settlement")
    link = Link(deployment.terminal_port)
    try:
        link.sock.sendall(frame(settlement, terminal, 11))
        assert link.sock.recv(4096) == b"", "answered a frame whose STAN could not be read"
    except ConnectionResetError:
        pass  # closed, as the spec says
    except TimeoutError:
        pytest.fail("the connection was left open")
    finally:
        link.close()

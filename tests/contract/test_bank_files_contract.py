"""A bank's side of specs/dayend-files.md, written from the spec alone, against the real CLI on a
demo deployment: the file keys received under the banks' ZMKs (the published TEST ONLY
components) by the documented `medswitch keys export`; the payout file the centre's day-end
releases read and MAC-checked; statements and a return file written by us and imported —
a statement's payout line before the return file that pays it (re-matched after: order does
not matter), a reused reference for another booking (a conflict, to review, never dropped), the
returned payout held until its account is corrected, then re-issued to the new account only,
as h1's party statement (CSV) shows.
Every defect — a return file dated before its payout file, a name's date not the header's, a
file dated in the future, a missing trailer, CRLF, a duplicate reference, another key — is
refused whole with what and where, nothing changed. Imports nothing of medswitch."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract import files
from tests.contract.centre import Centre, after_cutover, business_date, demo, receive_file_key

KEYS = {" ".join(w[:-1]): w[-1]
        for w in (x.split() for x in files.examples("dayend-files.md")["keys"].splitlines())
        if w}
PAYOUT = (files.PAYOUT_HEADER, files.PAYOUT_DETAIL, files.PAYOUT_TRAILER)


def compact(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


@dataclass
class World:
    centre: Centre
    out: Path  # day-end's output directory
    day: dt.date  # the business date of the fixture's start
    bank: Path  # where the bank writes its files

    def dayend(self, *args: str, ok: bool | None = True) -> str:
        return self.centre.run("dayend", *args, *self.centre.db, ok=ok).out

    def importing(self, what: str, path: Path, ok: bool = True) -> str:
        return self.dayend(f"import-{what}", str(path), *self.centre.keys, "--operator",
                           "carol", ok=ok)

    def close(self, day: dt.date) -> str:
        out = self.dayend("run", "--date", day.isoformat(), "--now", after_cutover(day),
                          "--operator", "alice", *self.centre.keys, "--out", str(self.out))
        if "closed" not in out:
            out += self.dayend("approve", "--date", day.isoformat(), "--operator", "bob",
                               "--out", str(self.out))
        return out

    def reviews(self) -> list[str]:
        return self.centre.run("review", "list", *self.centre.db).out.splitlines()[1:-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("bank-files")
    centre = demo(tmp / "demo")
    for bank in ("b1", "b2"):
        zmk = files.from_components(KEYS[f"zmk {bank} component 1"],
                                    KEYS[f"zmk {bank} component 2"])
        receive_file_key(centre, bank, zmk)
    (tmp / "bank").mkdir()
    yield World(centre, tmp / "dayend", business_date(), tmp / "bank")


def statement(world: World, day: dt.date, lines: list[dict[str, object]], *,
              name_day: dt.date | None = None, key: bytes | None = None,
              statement_id: str = "S1", where: Path | None = None) -> Path:
    """A FUND statement of b1 written from the spec; amounts are fen."""
    key = key or world.centre.file_keys["b1"]
    details = [files.line(files.STMT_DETAIL, {"type": "D", "line": n, "currency": "CNY", **x})
               for n, x in enumerate(lines, 1)]
    credits = sum(int(str(x["amount"])) for x in lines if x["direction"] == "C")
    debits = sum(int(str(x["amount"])) for x in lines if x["direction"] == "D")
    head = files.line(files.STMT_HEADER, {"type": "H", "format": "MSSTMT", "version": "01",
                                          "date": compact(day), "bank": "b1",
                                          "account": "FUND", "statement_id": statement_id})
    data = files.sealed(key, head, details, f"T{len(lines):08d}{credits:018d}{debits:018d}"
                        .encode())
    path = (where or world.bank) / f"STMT_{compact(name_day or day)}_b1_FUND.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def answer(world: World, payout_name: str, payout: files.Fixed, day: dt.date,
           returned: dict[str, str], *, name_day: dt.date | None = None) -> Path:
    """The bank's return file for a payout file: `returned` payee → reason code."""
    details, paid, back = [], [0, 0], [0, 0]
    for n, d in enumerate(payout.details, 1):
        code = returned.get(d["payee_id"], "")
        amount = int(d["amount"])
        (back if code else paid)[0] += 1
        (back if code else paid)[1] += amount
        details.append(files.line(files.RETURN_DETAIL, {
            "type": "D", "line": n, "payout_line": d["line"], "payout_id": d["payout_id"],
            "payee_id": d["payee_id"], "account_no": d["account_no"], "amount": amount,
            "currency": "CNY", "status": "R" if code else "P", "reason_code": code,
            "reason": "no such account" if code else ""}))
    head = files.line(files.RETURN_HEADER, {
        "type": "H", "format": "MSRETURN", "version": "01", "date": compact(day), "bank": "b1",
        "payout_file": payout_name, "payout_mac": payout.trailer["mac"]})
    trailer = (f"T{len(details):08d}{paid[1] + back[1]:018d}{paid[0]:08d}{paid[1]:018d}"
               f"{back[0]:08d}{back[1]:018d}")
    stem = payout_name.rsplit(".", 1)[0]
    path = world.bank / f"RETURN_{stem}_{compact(name_day or day)}.txt"
    path.write_bytes(files.sealed(world.centre.file_keys["b1"], head, details, trailer.encode()))
    return path


def other(ref: str, amount: int, text: str = "bank charges refunded") -> dict[str, object]:
    return {"ref": ref, "kind": "OTHER", "direction": "C", "amount": amount,
            "counterparty": "b1", "text": text}


def payable(world: World, seq: str, institution: str, yuan: str) -> None:
    """An operator's adjustment on a review item: pooled fund → the institution's payable."""
    proposed = world.centre.run("review", "adjust", seq, "--debit", "pool:centre", "--credit",
                                f"payins:{institution}", "--amount", yuan, "--operator",
                                "alice", *world.centre.db).out
    approval = re.search(r"adjustment (\d+) pending", proposed)
    assert approval, proposed
    world.centre.run("review", "approve-adjustment", approval[1], "--operator", "bob",
                     *world.centre.db)


def test_a_day_of_bank_files(world: World, tmp_path: Path) -> None:
    day = world.day
    # Two bookings nothing expected: each a review item, which an operator settles by an
    # adjustment into h1's and h3's payables (both paid through b1).
    out = world.importing("statement", statement(world, day, [other("REF-A", 12345),
                                                              other("REF-B", 6789)]))
    assert "2 to review" in out, out
    seqs = [row.split()[0] for row in world.reviews() if "bank_unmatched" in row]
    assert len(seqs) == 2
    payable(world, seqs[0], "h1", "123.45")
    payable(world, seqs[1], "h3", "67.89")
    day = business_date()  # the date the payables posted in (should a cut-over have passed)
    next_day = day + dt.timedelta(days=1)

    # Day-end: the payout file as the bank receives it.
    world.close(day)
    name = f"PAYOUT_{compact(day)}_b1_INS.txt"
    payout = files.read_fixed(world.centre.file_keys["b1"],
                              (world.out / "outbox" / name).read_bytes(), PAYOUT)
    assert (payout.header["format"], payout.header["date"], payout.header["source"]) == (
        "MSPAYOUT", compact(day), "INSURANCE")
    lines = {d["payee_id"]: d for d in payout.details}
    assert {p: int(d["amount"]) for p, d in lines.items()} == {"h1": 12345, "h3": 6789}
    assert lines["h1"]["payout_id"] == f"{compact(day)}-I-h1"
    assert int(payout.trailer["total"]) == 12345 + 6789

    # The next statement: h3's payout debited (before the return file says it was paid), and
    # REF-A reused for another booking — a conflict for review, never dropped.
    debit = {"ref": "REF-C", "kind": "PAYOUT", "direction": "D", "amount": 6789,
             "counterparty": lines["h3"]["payout_id"], "text": "payout"}
    early = statement(world, next_day, [debit, other("REF-A", 500, "a contribution")],
                      statement_id="S2")
    items = len(world.reviews())
    out = world.importing("statement", early)
    assert "1 reusing a reference for another line (to review)" in out, out
    assert "the payout is released, not paid" in out, out
    assert len(world.reviews()) == items + 2
    again = world.importing("statement", early)
    assert "imported before" not in again and len(world.reviews()) == items + 2

    # Defective return files: refused whole, saying what and where.
    before = world.reviews()
    good = answer(world, name, payout, next_day, {"h1": "R002"})
    data = good.read_bytes()
    defects = {  # what the refusal says → the file
        f"before {name} it answers": answer(world, name, payout, day - dt.timedelta(days=1),
                                            {"h1": "R002"}),
        f"is named for {day} but its header is dated {next_day}": answer(
            world, name, payout, next_day, {"h1": "R002"}, name_day=day),
    }
    for label, says in (("crlf", "line 1 of the file (the header is line 1) ends with CR LF"),
                        ("trailer", "the trailer is missing")):
        path = tmp_path / good.name
        path.write_bytes(data.replace(b"\n", b"\r\n") if label == "crlf" else
                         data[: -files.LINE - 1])
        (tmp_path / label).mkdir()
        defects[says] = path.rename(tmp_path / label / good.name)
    for says, path in defects.items():
        refused = world.importing("returns", path, ok=False)
        assert f"{path.name}: REFUSED: " in refused and says in refused, (says, refused)
    assert world.reviews() == before

    # The return file: h1 returned, h3 paid — and h3's statement line, waiting, is re-matched.
    out = world.importing("returns", good)
    assert "1 paid, 1 returned now" in out and "1 statement lines in review re-matched" in out
    assert "imported before: nothing changed" in world.importing("returns", good)

    # h1's account not corrected: the next day-end holds it; corrected: re-issued to it only.
    assert "closed" in world.close(next_day)
    assert not (world.out / "outbox" / f"PAYOUT_{compact(next_day)}_b1_INS.txt").exists()
    world.dayend("settlement-account", "h1", "--bank", "b1", "--account", "6200009999",
                 "--operator", "carol")
    third = next_day + dt.timedelta(days=1)
    world.close(third)
    again_name = f"PAYOUT_{compact(third)}_b1_INS.txt"
    reissue = files.read_fixed(world.centre.file_keys["b1"],
                               (world.out / "outbox" / again_name).read_bytes(), PAYOUT)
    assert [(d["payee_id"], d["account_no"], int(d["amount"])) for d in reissue.details] == [
        ("h1", "6200009999", 12345)]

    # h1's party statement (dayend-files "Party statements") names both payouts.
    span = (day.isoformat(), third.isoformat())
    world.centre.run("statements", "institution", "h1", "--from", span[0], "--to", span[1],
                     "--out", str(tmp_path / "st"), *world.centre.db)
    text = (tmp_path / "st" / f"institution_h1_{span[0]}_{span[1]}.csv").read_text("utf-8")
    sections = files.party_statement(text)
    assert sections["statement"] == [["statement", "institution", "h1", "第1医院", *span]]
    payouts = sections["Payouts"]
    at = {name: n for n, name in enumerate(payouts[0])}
    assert [(r[at["payout"]], r[at["account"]], r[at["status"]], r[at["reissue of"]])
            for r in payouts[1:]] == [
        (f"{compact(day)}-I-h1", "620000000023", "reissued", ""),
        (f"{compact(third)}-I-h1", "6200009999", "released", f"{compact(day)}-I-h1")]



def test_defective_statements_are_refused_whole(world: World, tmp_path: Path) -> None:
    day = business_date()
    before = world.reviews()
    good = [other("DEF-1", 100), other("DEF-2", 200)]
    b2, twice = world.centre.file_keys["b2"], [other("DEF-1", 100), other("DEF-1", 200)]
    cases = {  # what the refusal says → the file (each in its own directory, properly named)
        "a date in the future": statement(world, day + dt.timedelta(days=2), good,
                                          where=tmp_path / "a"),
        "but its header is dated": statement(world, day, good, where=tmp_path / "b",
                                             name_day=day + dt.timedelta(days=1)),
        "DEF-1 appears twice in the statement (lines 1 and 2)": statement(
            world, day, twice, where=tmp_path / "c"),
        "the file's MAC does not verify": statement(world, day, good, key=b2,
                                                    where=tmp_path / "d"),
    }
    data = statement(world, day, good, where=tmp_path / "e").read_bytes()
    for label, raw, says in (
            ("f", data.replace(b"\n", b"\r\n"), "line 1 of the file (the header is line 1)"),
            ("g", data[: -files.LINE - 1], "the trailer is missing: the last line (3 of")):
        cases[says] = statement(world, day, good, where=tmp_path / label)
        cases[says].write_bytes(raw)
    for says, path in cases.items():
        refused = world.importing("statement", path, ok=False)
        assert f"{path.name}: REFUSED: " in refused and says in refused, (says, refused)
    assert world.reviews() == before

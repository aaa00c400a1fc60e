"""The agency's and a hospital's side of specs/ledger-files.md and specs/medical-files.md,
written from the specs alone, against the real CLI on a demo deployment: the file key formed at
a ceremony from clear components (`medswitch keys form`; here the published TEST ONLY example
components), a cardholders file (personal data encrypted per record) and a contributions file
written by us and accepted, each split as the example policy says; what the centre's own
builders write read back by us, and the unit's party statement CSV; every defect — CRLF line
ends, a missing trailer, a duplicate line, a count that does not match, a MAC under another
key — refused whole with the line named, nothing posted. A fee-record file (§6) written by us
is accepted, a second one for the same day refused; a catalogue version (§2) written by us is
accepted and shown, its defects refused; the demo's policy is the spec's example (§3).
Imports nothing of medswitch."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract import files
from tests.contract.centre import ZONE, Centre, business_date, demo

EXAMPLE_KEYS = {" ".join(w[:-1]): w[-1]
                for w in (x.split() for x in files.examples("dayend-files.md")["keys"]
                          .splitlines()) if w}
KEY = files.from_components(EXAMPLE_KEYS["file key component 1"],
                            EXAMPLE_KEYS["file key component 2"])
PEOPLE = (("9100000001", "u2", "employed", "19860301", "11010519860301002X", "赵敏"),
          ("9100000002", "u4", "employed", "19950601", "110105199506010035", "钱磊"))


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    home = tmp_path_factory.mktemp("ledger-files") / "demo"
    found = demo(home)
    parts = []
    for n in (1, 2):  # each custodian's component file: the hex, then its check value
        hex_part = EXAMPLE_KEYS[f"file key component {n}"]
        path = home / f"social.{n}"
        path.write_text(f"{hex_part}\nKCV:{files.kcv(bytes.fromhex(hex_part))}\n")
        parts += ["-k", str(path)]
    for alias in ("file/social", "file/h1"):
        formed = found.run("keys", "--home", str(home), "form", alias, "--usage", "FILE",
                           *parts, *found.keys[2:])
        assert f"KCV {EXAMPLE_KEYS['file key kcv']}" in formed.out
    yield found


def _import(centre: Centre, kind: str, path: Path, ok: bool = True) -> str:
    return centre.run("import", kind, str(path), *centre.db, *centre.keys, "--file-key",
                      "file/social", ok=ok).out


def _balance(centre: Centre, account: str) -> int:
    out = centre.run("ledger", "balance", account, *centre.db, ok=None).out
    found = re.search(r"balance (-?)(\d+)\.(\d\d) yuan", out)  # as `ledger balance` prints it
    return int(f"{found[1]}{found[2]}{found[3]}") if found else 0


def _cardholders(file_id: str) -> list[str]:
    records = [f"H|CARDHOLDERS|1|{file_id}"]
    for holder, unit, category, birth, id_number, name in PEOPLE:
        data = files.holder_data(KEY, file_id, holder, id_number, name)
        records.append(f"D|{holder}|{unit}|{category}|{birth}|{data}")
    return [*records, f"T|{len(PEOPLE)}|0"]


def _period() -> str:
    """This month: the demo stores this year's policy (medical-files §3)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


def test_cardholders_then_contributions_written_from_the_spec(centre: Centre,
                                                              tmp_path: Path) -> None:
    holders = tmp_path / "holders.txt"
    holders.write_bytes(files.record_file(KEY, _cardholders("CT-K-1")))
    _import(centre, "cardholders", holders)
    _import(centre, "cardholders", holders)  # the same file again changes nothing

    period = _period()
    contributions = tmp_path / "contributions.txt"
    contributions.write_bytes(files.record_file(KEY, [
        f"H|CONTRIBUTIONS|1|CT-C-1|{period}", "D|u2|9100000001|60000", "D|u4|9100000002|45050",
        "T|2|105050"]))
    pooled = _balance(centre, "pool:centre")
    out = _import(centre, "contributions", contributions)
    assert "2 posted, 0 already posted" in out, out
    # The example policy (medical-files §3): 35 % from 35 to 45 years, 30 % below 35, by the
    # age in completed years on the period's first day.
    first = dt.date(int(period[:4]), int(period[5:]), 1)
    ages = [first.year - b.year - ((first.month, first.day) < (b.month, b.day))
            for b in (dt.date(1986, 3, 1), dt.date(1995, 6, 1))]
    assert 35 <= ages[0] < 45 and ages[1] < 35, "the people's ages left the example's bands"
    assert _balance(centre, "pf:9100000001") == 60000 * 3500 // 10000
    assert _balance(centre, "pf:9100000002") == 45050 * 3000 // 10000
    assert _balance(centre, "pool:centre") - pooled == (60000 - 21000) + (45050 - 13515)
    again = _import(centre, "contributions", contributions)
    assert "0 posted" in again, again
    today = business_date().isoformat()  # u2's statement (dayend-files "Party statements")
    centre.run("statements", "unit", "u2", "--from", today, "--to", today, "--out",
               str(tmp_path / "st"), *centre.db)
    sections = files.party_statement(
        (tmp_path / "st" / f"unit_u2_{today}_{today}.csv").read_text("utf-8"))
    assert sections["statement"] == [["statement", "unit", "u2", "参保单位2", today, today]]
    by_period = sections["Contributions by period"]
    assert by_period[0] == ["period", "members", "personal accounts (yuan)",
                            "pooled fund (yuan)", "total (yuan)"]
    assert [period, "1", "210.00", "390.00", "600.00"] in by_period[1:], by_period


def test_defective_ledger_files_are_refused_whole_with_the_line(centre: Centre,
                                                                tmp_path: Path) -> None:
    period = _period()
    good = [f"H|CONTRIBUTIONS|1|CT-C-2|{period}", "D|u2|9100000001|100", "D|u4|9100000002|200",
            "T|2|300"]
    other_key = files.from_components("0123456789ABCDEFFEDCBA9876543210",
                                      "1010101010101010" * 2)
    body = b"".join(r.encode() + b"\n" for r in good)
    defects = {  # what each refusal must say
        "line 1: line too long or carriage return": files.record_file(KEY, good).replace(
            b"\n", b"\r\n"),
        "line 3: the trailer is missing": files.record_file(KEY, good[:-1]),
        "line 4: a second line for unit u2, cardholder 9100000001": files.record_file(
            KEY, [*good[:3], good[1], "T|3|400"]),
        "line 4: the trailer counts 3 records, the file has 2": files.record_file(
            KEY, [*good[:-1], "T|3|300"]),
        "the file's MAC does not verify": body + f"M|{files.x919(other_key, body)}\n".encode(),
    }
    before = [_balance(centre, a) for a in ("pool:centre", "contrib:u2", "contrib:u4")]
    for n, (says, data) in enumerate(defects.items()):
        path = tmp_path / f"defect{n}.txt"
        path.write_bytes(data)
        out = _import(centre, "contributions", path, ok=False)
        assert f"{path}: refused: {says}" in out, (says, out)
    assert [_balance(centre, a) for a in ("pool:centre", "contrib:u2", "contrib:u4")] == before


def test_what_the_centre_builds_reads_back_from_the_spec(centre: Centre, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("unit_id,cardholder_id,amount_fen\nu2,9100000001,700\n")
    (tmp_path / "k.csv").write_text("cardholder_id,ssn,name,category,birth_date,unit_id\n"
                                    "9100000003,110105198001010011,孙丽,retired,1950-01-01,u2\n")
    for kind, csv, options in (("contributions", "c.csv", ["--period", _period(), "--file-id",
                                                            "CT-B-1"]),
                               ("cardholders", "k.csv", ["--file-id", "CT-B-2"])):
        out = tmp_path / f"{kind}.txt"
        centre.run("ledger-files", f"build-{kind}", str(tmp_path / csv), *options, "--out",
                   str(out), *centre.keys, "--file-key", "file/social")
        records = files.read_record_file(KEY, out.read_bytes())
        assert records[0][:3] == ["H", kind.upper(), "1"] and records[-1][0] == "T"
    holders = files.read_record_file(KEY, (tmp_path / "cardholders.txt").read_bytes())
    plain = files.decrypt(KEY, bytes.fromhex(holders[1][5]))
    assert plain[8:].decode() == "110105198001010011|孙丽"


def test_a_fee_record_file_from_the_spec(centre: Centre, tmp_path: Path) -> None:
    day = dt.datetime.now(ZONE).strftime("%Y%m%d")
    records = [f"H|FEERECORDS|h1|{day}",
               f"D|OFFLINE|000000000001:1|6212340000000019|1500|1500|{day}093000", "T|1|1500"]
    path = tmp_path / f"fee_{day}.txt"
    path.write_bytes(files.record_file(KEY, records))
    common = (*centre.db, *centre.keys, "--file-key", "file/h1", "--no-match")
    centre.run("import", "fee-records", str(path), *common)
    centre.run("import", "fee-records", str(path), *common)  # the same bytes: accepted again
    other = tmp_path / "other.txt"
    other.write_bytes(files.record_file(KEY, [records[0], records[1].replace("1500|1500",
                                                                           "1600|1600"),
                                              "T|1|1600"]))
    assert centre.run("import", "fee-records", str(other), *common, ok=False).code == 1


def test_a_catalogue_from_the_spec(centre: Centre, tmp_path: Path) -> None:
    """medical-files §2: a new complete version from tomorrow; defects refused whole."""
    start = (dt.datetime.now(ZONE) + dt.timedelta(days=1)).strftime("%Y%m%d")
    items = ["D|A01|阿莫西林胶囊|盒|1100|甲|0", "D|B09|头孢呋辛酯片|盒|2500|乙|1000",
             "D|C09|美容护理|次|9000|丙|0"]
    good = [f"H|CATALOGUE|7|{start}", *items, "T|3|12600"]
    common = (*centre.db, *centre.keys, "--file-key", "file/social")
    defects = {  # what the refusal says → the file
        "the trailer's amount total is 12601 fen, the records sum to 12600 fen": [
            *good[:-1], "T|3|12601"],
        "line 5: item A01 appears twice": [good[0], *items, items[0], "T|4|13700"],
        "line 4: the trailer is missing": good[:-1],
    }
    for n, (says, records) in enumerate(defects.items()):
        path = tmp_path / f"bad{n}.txt"
        path.write_bytes(files.record_file(KEY, records))
        refused = centre.run("catalogue", "import", str(path), *common, ok=False).out
        assert f"{path}: refused: " in refused and says in refused, (says, refused)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(files.record_file(KEY, good).replace(b"\n", b"\r\n"))
    assert centre.run("catalogue", "import", str(crlf), *common, ok=False).code == 1
    path = tmp_path / "catalogue.txt"
    path.write_bytes(files.record_file(KEY, good))
    centre.run("catalogue", "import", str(path), *common)
    shown = centre.run("catalogue", "show", "--version", "7", "--code", "B09", *centre.db).out
    assert re.search(r"B09\s+乙\s+25\.00/盒 头孢呋辛酯片 self-pay 10\.00%", shown), shown


def test_the_demo_policy_is_the_spec_example(centre: Centre) -> None:
    """medical-files §3's example (this year) is what the demo stores, as `policy show` says
    it (its contribution bands are checked by the contributions' split above)."""
    policy = tomllib.loads(files.examples("medical-files.md")["policy"])
    year = dt.datetime.now(dt.UTC).year

    def pct(bps: list[int]) -> str:
        return ", ".join(f"{bp / 100:.2f}%" for bp in bps)

    def yuan(fens: list[int]) -> str:
        return ", ".join(f"{fen / 100:.2f}" for fen in fens)

    expected = [f"policy {year}: annual pooled cap {policy['annual_pooled_cap_fen'] / 100:.2f}"]
    expected += [f"  deductible {c}: {yuan(v)}" for c, v in policy["deductible_fen"].items()]
    expected += [f"  pooled {c} {k}: {pct(v)}" for c, by in policy["pooled_bp"].items()
                 for k, v in by.items()]
    expected += [f"  special {code} ({s['name']}): {pct(s['pooled_bp'])}"
                 for code, s in policy["special"].items()]
    shown = centre.run("policy", "show", str(year), *centre.db).out
    assert [x for x in shown.splitlines() if not x.startswith("***")] == expected, shown

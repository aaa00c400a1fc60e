"""The worked examples of specs/dayend-files.md and specs/ledger-files.md are what medswitch
itself makes: keys formed through `medswitch keys form` from the published TEST ONLY components
have the published KCVs, `medswitch keys export` prints the published value under the ZMK, the
payout, refund, return, statement, contributions and cardholders examples are byte for byte the
files the code builds, and `medswitch dayend verify` accepts the payout and refund examples.
(tests/contract/test_file_examples.py recomputes the same examples from the spec alone.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm.keys import KeyRef
from hsm.soft import SoftHsm
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend import payout_file as pf
from ledger.dayend import return_file as rf
from switch.cli import main
from switch.demo.keys import TEST_ONLY_BANK_ZMK_COMPONENTS
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.dayend import make_keys
from tests.support.spec_examples import examples, fixed_width, key_table

DAYEND = examples("dayend-files.md")
LEDGER = examples("ledger-files.md")
KEYS = key_table(DAYEND["keys"])


class Keys:
    def __init__(self, tmp: Path) -> None:
        self.home, self.components = make_keys(tmp, test_only_lmk=True)  # TEST ONLY keys
        self.tmp = tmp

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(
            main, ["keys", "--home", str(self.home), *args, *self.components]
        )
        assert result.exit_code == 0, result.output
        return result.output

    def form(self, alias: str, usage: str, parts: tuple[str, str]) -> str:
        files = []
        for n, part in enumerate(parts, 1):
            path = self.tmp / f"{alias.replace('/', '_')}.{n}"
            path.write_text(f"{part}\nKCV:{_kcv_of(part)}\n")
            files += ["-k", str(path)]
        return self.cli("form", alias, "--usage", usage, *files)

    def hsm(self, alias: str) -> tuple[SoftHsm, KeyRef]:
        hsm = open_soft_hsm(self.home, component_files_of([Path(p) for p in self.components[1::2]]))
        return hsm, asyncio.run(resolve(Home(self.home, "test"), alias))


def _kcv_of(part: str) -> str:
    from hsm.des import kcv

    return kcv(bytes.fromhex(part))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    found = Keys(tmp_path_factory.mktemp("examples"))
    example = (KEYS["file key component 1"], KEYS["file key component 2"])
    for alias in ("bank/b1/FILE", "file/social"):
        assert f"KCV {KEYS['file key kcv']}" in found.form(alias, "FILE", example)
    for bank in ("b1", "b2"):
        parts = (KEYS[f"zmk {bank} component 1"], KEYS[f"zmk {bank} component 2"])
        assert parts == TEST_ONLY_BANK_ZMK_COMPONENTS[bank]  # the demo's are the published
        assert f"KCV {KEYS[f'zmk {bank} kcv']}" in found.form(f"bank/{bank}/ZMK", "ZMK", parts)
    return found


def test_the_file_key_under_the_zmk_is_what_keys_export_prints(keys: Keys) -> None:
    printed = keys.cli("export", "bank/b1/FILE", "--kek", "bank/b1/ZMK")  # (v2: make_keys has v1)
    assert (
        f"bank/b1/FILE v2 under bank/b1/ZMK v1: {KEYS['file key under zmk b1']} "
        f"KCV {KEYS['file key kcv']}"
    ) in printed.splitlines()  # (after the TEST ONLY banner)


def test_payout_and_refund_examples_are_what_day_end_builds(keys: Keys, tmp_path: Path) -> None:
    hsm, key = keys.hsm("bank/b1/FILE")
    payout = pf.PayoutFile(
        pf.PAYOUT,
        "2026-11-25",
        "b1",
        pf.INSURANCE,
        (pf.PayoutLine("20261125-I-h1", "h1", "620000000023", "第1医院", 12345),),
    )
    refund = pf.PayoutFile(
        pf.REFUND,
        "2026-11-25",
        "b1",
        pf.EP,
        (pf.PayoutLine("20261125-R-0000000001", "0000000001", "6212340000000019", "张伟", 5000),),
    )
    built, _ = asyncio.run(pf.build(hsm, key, payout))
    assert built == fixed_width(DAYEND["payout"])
    sealed, _ = asyncio.run(pf.build(hsm, key, refund))
    assert sealed == bytes.fromhex("".join(DAYEND["refund"].split()))
    assert asyncio.run(hsm.decrypt_data(key, sealed)) == fixed_width(DAYEND["refund-plain"])
    for name, data in (
        ("PAYOUT_20261125_b1_INS.txt", built),
        ("REFUND_20261125_b1_EP.enc", sealed),
    ):
        (tmp_path / name).write_bytes(data)
        result = CliRunner().invoke(
            main,
            [
                "dayend",
                "verify",
                str(tmp_path / name),
                "--keys-home",
                str(keys.home),
                *keys.components,
            ],
        )
        assert result.exit_code == 0, result.output


def test_return_and_statement_examples_are_what_the_bank_side_builds(keys: Keys) -> None:
    hsm, key = keys.hsm("bank/b1/FILE")
    refund_mac = fixed_width(DAYEND["refund-plain"]).split(b"\n")[2][27:43].decode()
    answer = rf.ReturnFile(
        "b1",
        "2026-11-26",
        "REFUND_20261125_b1_EP.enc",
        refund_mac,
        (
            rf.ReturnLine(
                1, "20261125-R-0000000001", "0000000001", "621234******0019", 5000, rf.PAID
            ),
        ),
    )
    assert asyncio.run(bf.seal(hsm, key, rf.render_return(answer))) == fixed_width(DAYEND["return"])
    assert rf.return_name(answer) == "RETURN_REFUND_20261125_b1_EP_20261126.txt"
    statement = bs.Statement(
        "b1",
        "2026-11-26",
        bs.FUND,
        "S20261126-0001",
        (
            bs.StatementEntry(
                "B1-20261126-000001", "CONTRIBUTION", bs.CREDIT, 105050, "u2", "单位缴费 2026-11"
            ),
        ),
    )
    assert asyncio.run(bf.seal(hsm, key, bs.render_statement(statement))) == fixed_width(
        DAYEND["statement"]
    )
    assert asyncio.run(bs.parse_statement(hsm, key, fixed_width(DAYEND["statement"]))) == statement


def test_ledger_file_examples_are_what_the_build_commands_write(keys: Keys, tmp_path: Path) -> None:
    rows = {
        "contributions": (
            "unit_id,cardholder_id,amount_fen\nu2,0000000001,60000\nu3,0000000002,45050\n",
            ["--period", "2026-11", "--file-id", "SI-202611-001"],
        ),
        "cardholders": (
            "cardholder_id,ssn,name,category,birth_date,unit_id\n"
            "9000000001,11010519900101001X,王芳,employed,1990-01-01,u1\n"
            "9000000002,110105195503150027,李强,retired,1955-03-15,u2\n",
            ["--file-id", "SI-K-0001"],
        ),
    }
    for kind, (csv, options) in rows.items():
        (tmp_path / f"{kind}.csv").write_text(csv)
        out = tmp_path / f"{kind}.txt"
        result = CliRunner().invoke(
            main,
            [
                "ledger-files",
                f"build-{kind}",
                str(tmp_path / f"{kind}.csv"),
                *options,
                "--out",
                str(out),
                "--keys-home",
                str(keys.home),
                *keys.components,
                "--file-key",
                "file/social",
            ],
        )
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8") == LEDGER[kind], kind

"""The medical back office through the CLI, on SQLite with a real key home: a catalogue built,
MACed, imported (a tampered file refused whole), shown and diffed; the policy; authorisations;
a HIS credential; `sim his` against the HIS API on 127.0.0.1; a fee-record file imported and
matched."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.medical.feerecords import FeeFile, FeeKind, FeeRecord, build_fee_file
from ledger.medical.filemac import seal
from ledger.medical.policy import EXAMPLE
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from switch.cli import main
from switch.his_api import HisDeps, make_his_app
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.his import serving_in_thread
from tests.support.medical_world import HOLDERS, sql_world
from tests.support.operators import as_operator, enrol

CSV_V2 = """code,name,unit,ceiling_fen,class,self_pay_bp
A01,阿莫西林胶囊,盒,1100,甲,0
B01,头孢克洛缓释片,盒,2000,乙,1000
D01,胰岛素注射液,支,6800,乙,500
"""


def test_back_office_through_the_cli(tmp_path: Path) -> None:
    db, keys_home = tmp_path / "ledger.db", tmp_path / "keys"
    engine = sql_world(db)  # cards, institutions, catalogue v1 and the 2026 policy
    runner = CliRunner()
    as_mia = as_operator(enrol(db, tmp_path / "tokens", "mia", "maker"))  # who imports

    def run(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(main, list(args), env=as_mia)
        assert (result.exit_code == 0) is ok, result.output
        return result

    components = []
    for who in ("alice", "bob"):
        path = tmp_path / f"{who}.txt"
        run("keys", "--home", str(keys_home), "component", "--custodian", who, "--out", str(path))
        components += ["-c", str(path)]
    run("keys", "--home", str(keys_home), "lmk-form", "--new", *components)
    for alias in ("file/catalogue", "file/H001"):
        run("keys", "--home", str(keys_home), "generate", alias, "--usage", "FILE", *components)
    common = ["--db", str(db), "--keys-home", str(keys_home), *components]

    csv_file = tmp_path / "v2.csv"
    csv_file.write_text(CSV_V2, encoding="utf-8")
    catalogue_file = tmp_path / "catalogue-v2.dat"
    run(
        "catalogue",
        "build",
        str(csv_file),
        "--version",
        "2",
        "--effective-from",
        "2026-12-01",
        "--out",
        str(catalogue_file),
        "--keys-home",
        str(keys_home),
        *components,
        "--file-key",
        "file/catalogue",
    )
    data = catalogue_file.read_bytes()
    tampered = tmp_path / "tampered.dat"
    tampered.write_bytes(data.replace("胰岛素".encode(), "胰岛X".encode()))
    out = run(
        "catalogue", "import", str(tampered), *common, "--file-key", "file/catalogue", ok=False
    ).output
    assert "MAC" in out
    out = run(
        "catalogue", "import", str(catalogue_file), *common, "--file-key", "file/catalogue"
    ).output
    assert "catalogue v2 effective 2026-12-01: 3 items" in out
    assert "1 added, 3 removed, 1 changed" in out
    run(
        "catalogue",
        "import",
        str(catalogue_file),
        *common,
        "--file-key",
        "file/catalogue",
        ok=False,
    )
    assert "v1 effective" in run("catalogue", "show", "--on", "2026-11-30", "--db", str(db)).output
    assert "胰岛素" in run("catalogue", "show", "--on", "2026-12-01", "--db", str(db)).output
    assert "+ D01" in run("catalogue", "diff", "1", "2", "--db", str(db)).output

    policy = tmp_path / "policy.toml"
    policy.write_text(EXAMPLE.replace("year = 2026", "year = 2027"), encoding="utf-8")
    assert "policy 2027" in run("policy", "import", str(policy), "--db", str(db)).output
    run("policy", "import", str(policy), "--db", str(db), ok=False)
    assert "chronic" in run("policy", "show", "2027", "--db", str(db)).output

    run("authorise", "grant", "P11", "chronic", "--year", "2026", "--db", str(db))
    run("authorise", "grant", "P11", "nonsense", "--year", "2026", "--db", str(db), ok=False)
    assert "2026 chronic active" in run("authorise", "list", "P11", "--db", str(db)).output

    out = run("his", "credential", "H001", "--db", str(db)).output
    match = re.search(r"\(shown once\): (\S+)", out)
    assert match is not None
    token = match.group(1)

    service = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
    app = make_his_app(HisDeps(service, ReferenceData(engine)))
    with serving_in_thread(app) as url:
        out = run(
            "sim",
            "his",
            "--url",
            url,
            "--institution",
            "H001",
            "--token",
            token,
            "--catalogue",
            str(catalogue_file),
            "--card",
            HOLDERS[0].card_no,
            "--card",
            HOLDERS[1].card_no,
            "--count",
            "6",
            "--date",
            "2026-12-02",
        ).output
        assert "submitted 6" in out
        # Without --url: the configured daemon's HIS API (here its [http] port).
        as_mia |= {"MEDSWITCH_HOME": str(tmp_path), "MEDSWITCH_HTTP_PORT": url.rpartition(":")[2]}
        out = run(
            "sim",
            "his",
            "--institution",
            "H001",
            "--token",
            "wrong",
            "--catalogue",
            str(catalogue_file),
            "--card",
            HOLDERS[0].card_no,
            "--count",
            "1",
            "--date",
            "2026-12-02",
        ).output
        assert "submitted 0" in out and "unauthorised" in out

    # a fee-record file for a bill that was never paid: imported, then matched to review
    fees = FeeFile(
        "H001",
        dt.date(2026, 12, 2),
        (
            FeeRecord(
                2, FeeKind.BILL, "0123456789ABCDEF", HOLDERS[0].card_no, 500, 500, "20261202093000"
            ),
        ),
    )

    async def sealed() -> bytes:
        hsm = open_soft_hsm(keys_home, component_files_of([Path(p) for p in components[1::2]]))
        key = await resolve(Home(keys_home, "test"), "file/H001")
        return await seal(hsm, key, build_fee_file(fees))

    fee_file = tmp_path / "fees.dat"
    fee_file.write_bytes(asyncio.run(sealed()))
    out = run("import", "fee-records", str(fee_file), *common, "--file-key", "file/H001").output
    assert "1 records" in out and "fee_record_without_payment" in out
    assert (
        "already imported"
        in run("import", "fee-records", str(fee_file), *common, "--file-key", "file/H001").output
    )
    engine.dispose()

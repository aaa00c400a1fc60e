"""`medswitch run` starts quietly (issue 21): one summary line for what it set up instead of a
line per key, the sandbox's commands, the serving line — no library's progress notes (Alembic)
among them — and the key listing it points to works as printed, by a logged-in operator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.bench_switch import stop
from switch.demo.keys import write_config
from tests.support.serve import wait_serving

BIN = Path(sys.executable).parent
START_S = 120.0


def test_run_prints_one_summary_and_no_library_noise(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    home.mkdir()
    write_config(home, terminal_port=0, http_port=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env |= {"MEDSWITCH_HOME": str(home), "MEDSWITCH_WRITER_PROCESS": "0"}
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [str(BIN / "medswitch"), "run", "--cardholders", "5"],
            env=env, stdout=stdout, stderr=stderr, cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_serving(process, out, err, START_S)
        finally:
            stop(process)
    lines = out.read_text().splitlines()
    assert not [ln for ln in lines if re.match(r"key \S+ KCV", ln)]
    (summary,) = [ln for ln in lines if ln.startswith("demo: ")]
    found = re.match(
        r"demo: (\d+) keys \(check values: (medswitch keys --home \S+ list)\); ", summary
    )
    assert found, summary
    # the summary, the sandbox's five quick-start steps (two to five lines each), the serving
    # line: nothing else (no key lines, no library noise)
    steps = [ln for ln in lines if re.match(r"# \d\. ", ln)]
    assert [ln[:4] for ln in steps] == ["# 1.", "# 2.", "# 3.", "# 4.", "# 5."], lines
    assert len(lines) <= 20, lines
    logged = [json.loads(ln) for ln in err.read_text().splitlines() if ln.startswith("{")]
    assert logged and all(entry["logger"].startswith("medswitch") for entry in logged), logged

    assert "operators demo-admin, " in summary and "demo-auditor" in summary
    path = env | {"PATH": f"{BIN}:{env.get('PATH', '')}"}
    refused = subprocess.run(found.group(2).split(), env=path, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)  # keys are read by a logged-in operator
    assert refused.returncode == 1 and "medswitch operators login NAME" in refused.stderr
    logged_in = subprocess.run(["medswitch", "operators", "login", "demo-auditor"], env=path,
                               input="demo-auditor-password\n", capture_output=True, text=True,
                               timeout=60, cwd=tmp_path)  # the summary's TEST ONLY auditor
    assert logged_in.returncode == 0, logged_in.stderr
    listed = subprocess.run(
        found.group(2).split(), env=path, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) >= int(found.group(1))

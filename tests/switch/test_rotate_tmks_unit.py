"""ops/systemd/medswitch-rotate-tmks.service run as systemd would run it (issue 19 item 5: TMK
rotation per terminal on a schedule): its login from the credential, then `keys rotate-tmks`
as the unit prints it — nothing due on a fresh deployment; the same 100 days later rotates
both terminals' TMKs under the KIF key as the logged-in custodian; while that export is not
collected the next due run fails and rotates nothing. Only the unit's paths are replaced
(binary, home, configuration, credentials and runtime directories) and the clock moved."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ledger.migrate import upgrade_sqlite
from tests.support.ceremony import later, with_tmks
from tests.support.operators import enrol, password_of

UNIT = Path(__file__).parents[2] / "ops" / "systemd" / "medswitch-rotate-tmks.service"
BIN = Path(sys.executable).parent
TERMINALS = ("P0000201", "P0000202")
RUN_S = 120


def test_the_rotation_unit_runs_as_systemd_would(tmp_path: Path) -> None:
    c = with_tmks(tmp_path, TERMINALS)
    upgrade_sqlite(c.home / "medswitch.db")  # the deployment's operators from now on
    enrol(c.home / "medswitch.db", tmp_path / "enrolled", "tmk-rotation", "key_custodian")
    kif = [c.component(o, f"kif.{o}") for o in ("ivan", "judy")]
    c.keys("form", "kif/loader", "--usage", "KIF_KEK", *[a for p in kif for a in ("-k", str(p))])
    (c.home / "kif-outbox").mkdir(0o700)

    credentials, runtime = tmp_path / "credentials", tmp_path / "run"
    credentials.mkdir()
    (credentials / "password").write_text(password_of("tmk-rotation") + "\n")
    for name, part in zip(("lmk-a", "lmk-b"), c.lmk_files, strict=True):
        (credentials / name).write_text(part.read_text())
    (runtime / "medswitch-rotate-tmks").mkdir(0o700, parents=True)
    config = tmp_path / "medswitch.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{c.home / "medswitch.db"}"\n')

    def local(text: str) -> str:
        for unit_path, here in (("/opt/medswitch/.venv/bin/medswitch", BIN / "medswitch"),
                                ("/etc/medswitch/medswitch.toml", config),
                                ("/var/lib/medswitch", c.home), ("%t", runtime),
                                ("%d", credentials)):
            text = text.replace(unit_path, str(here))
        return text

    unit = UNIT.read_text()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(credentials)}
    env |= dict(line.split("=", 1) for line in map(local, re.findall(
        r"^Environment=(.+)$", unit, re.MULTILINE)))
    (login,) = re.findall(r"^ExecStartPre=(.+)$", unit, re.MULTILINE)
    (command,) = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    (logout,) = re.findall(r"^ExecStopPost=-(.+)$", unit, re.MULTILINE)

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_S,
                              check=False)

    def rotate(*moved: str) -> subprocess.CompletedProcess[str]:
        logged_in = run(shlex.split(local(login)))
        assert logged_in.returncode == 0, logged_in.stdout + logged_in.stderr
        return run([*shlex.split(local(command)), *moved])

    fresh = rotate()
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "no TMK last rotated 90 or more days ago" in fresh.stdout
    due = rotate("--now", later(100))
    assert due.returncode == 0, due.stdout + due.stderr
    export = c.home / "kif-outbox" / "tmks.keys"
    assert f"2 TMKs under kif/loader v1 -> {export}" in due.stdout
    assert all(f"tmk/{terminal} v1 -> v2 KCV" in due.stdout for terminal in TERMINALS)
    steps = [json.loads(line) for line in (c.home / "audit.jsonl").read_text().splitlines()]
    rotated = [s for s in steps if s["what"] == "key.rotate-tmk"]
    assert [(s["alias"], s["version"], s["who"]) for s in rotated] == [
        (f"tmk/{t}", 2, "tmk-rotation") for t in TERMINALS]
    uncollected = rotate("--now", later(200))
    assert uncollected.returncode == 1
    assert uncollected.stderr == (f"Error: {export} exists (the last rotation's export, not "
                                  "yet collected?): nothing rotated\n")
    assert len((c.home / "audit.jsonl").read_text().splitlines()) == len(steps)
    ended = run(shlex.split(local(logout)))
    assert ended.returncode == 0, ended.stdout + ended.stderr
    assert not (runtime / "medswitch-rotate-tmks" / "token").exists()

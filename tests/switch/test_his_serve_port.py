"""`medswitch his serve` without `--port` listens where the configuration puts the HIS API (the
`[http]` port here), where `medswitch sim his` looks by default."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.prometheus import free_port

SCRIPT = str(Path(sys.executable).parent / "medswitch")


def test_his_serve_listens_on_the_configured_port(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env |= {"MEDSWITCH_HOME": str(tmp_path), "MEDSWITCH_HTTP_PORT": str(port)}
    process = subprocess.Popen(
        [SCRIPT, "his", "serve", "--db", str(tmp_path / "his.db")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        with pytest.raises(urllib.error.HTTPError) as refused:  # no credentials: 401
            urllib.request.urlopen(f"http://127.0.0.1:{port}/his/v1/catalogue", timeout=10)
        assert refused.value.code == 401
    finally:
        process.terminate()
        process.communicate(timeout=30)

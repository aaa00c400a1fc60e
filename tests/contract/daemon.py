"""`make run`'s daemon for the contract suite: `medswitch run` as a subprocess (never imported)
in a fresh home on free ports, and a terminal's TCP connection to it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.contract.wire import Frame, check_value, decode

START_S = 120.0
REPLY_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Deployment:
    home: Path
    terminal_port: int
    http_port: int

    @property
    def sandbox(self) -> Path:
        return self.home / "sandbox"

    def listing(self) -> dict[str, object]:
        return dict(json.loads((self.sandbox / "terminals.json").read_text()))

    def tmk(self, terminal_id: str) -> bytes:
        """The TEST ONLY TMK: the XOR of the sandbox's clear components, each checked by KCV."""
        key = bytes(16)
        for part in ("a", "b"):
            lines = (self.sandbox / "tmk" / f"{terminal_id}.{part}").read_text().splitlines()
            component = bytes.fromhex(lines[0])
            kcv = lines[1].removeprefix("KCV:")
            assert len(kcv) >= 4 and check_value(component).hex().upper().startswith(kcv), "KCV"
            key = bytes(a ^ b for a, b in zip(key, component, strict=True))
        return key

    def his_token(self, institution: str) -> str:
        for line in (self.home / "his-credentials.txt").read_text().splitlines():
            user, _, token = line.partition(" ")
            if user == institution:
                return token
        raise AssertionError(f"no HIS credential for {institution}")


@contextmanager
def running(tmp: Path, extra_toml: str = "") -> Iterator[Deployment]:
    """The daemon over ``tmp``'s demo deployment (made on first use; served as it is on the
    next), ``extra_toml`` appended to its medswitch.toml."""
    home = tmp / "demo"
    home.mkdir(exist_ok=True)
    deployment = Deployment(home, free_port(), free_port())
    components = ", ".join(f'"{home}/custodians/{c}.component"' for c in ("a", "b"))
    (home / "medswitch.toml").write_text(
        f'home = "{home}"\n\n[terminal]\nport = {deployment.terminal_port}\n\n'
        f'[http]\nport = {deployment.http_port}\n\n[hsm]\nbackend = "soft"\n'
        f"lmk_components = [{components}]\n{extra_toml}"
    )
    log = tmp / "run.log"
    env = {"MEDSWITCH_HOME": str(home), "MEDSWITCH_WRITER_PROCESS": "0", "PATH": "/usr/bin:/bin"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "medswitch"), "run", "--cardholders", "20"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
        )
    try:
        deadline = time.monotonic() + START_S
        while "medswitch serving" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "medswitch run did not start in time"
            time.sleep(0.2)
        yield deployment
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Link:
    """One terminal's TCP connection: a frame out, its reply back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_S)

    def exchange(self, frame: bytes) -> Frame:
        self.sock.sendall(frame)
        head = self._read(2)
        return decode(head + self._read(int.from_bytes(head, "big")))

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the centre closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()

"""`medswitch serve --workers N`: N processes on the same ports (SO_REUSEPORT), session state in
PostgreSQL — a sign-on answered by one worker serves a financial message at another, and a
retransmission reaching the first worker gets the reply the second one gave. SQLite refuses
more than one worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm.keys import KeyUsage
from messages.outcome import Outcome
from messages.terminal import (
    BalanceInquiry,
    Echo,
    SignOff,
    SignOn,
    SignOnReply,
    TerminalReply,
)
from switch.cli.serve import serve
from switch.demo.keys import custodian_files, provision, write_config
from switch.key_home import component_files_of, open_soft_hsm
from switch.keystore_file import FileKeyStore
from tests.support.daemon import Terminal, make_database, make_pg_database, now
from tests.support.pg import DSN, fresh_schema
from tests.support.workers import SCRIPT, WORKERS, free_ports

CONNECTIONS_MAX = 32  # tried until each worker holds one (all on one worker, if even: 2 in 2**32)


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path) -> None:
    make_database(tmp_path / "medswitch.db", {})
    result = CliRunner().invoke(serve, ["--workers", "2"], env={"MEDSWITCH_HOME": str(tmp_path)})
    assert result.exit_code != 0
    assert "PostgreSQL" in result.output


def answered(metrics_port: int) -> dict[str, float]:
    """Terminal messages this worker answered, by response code (``repeat``: from the cache)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    pattern = (
        r'medswitch_messages_total\{interface="terminal",mti="\d+",'
        r'response_code="(\w+)",type="\w+"\} (\S+)'
    )
    for code, value in re.findall(pattern, text):
        found[code] = found.get(code, 0.0) + float(value)
    return found


@pytest.mark.postgres
def test_two_workers_share_sessions_and_the_retransmission_cache(tmp_path: Path) -> None:
    async def main() -> None:
        async with fresh_schema() as schema:
            url = f"{DSN}?schema={schema}"
            await make_pg_database(url, {"POS00001": "pos"})
            await provision(tmp_path, ["POS00001"])
            terminal_port, http_port, metrics_port = free_ports(3, run=WORKERS)
            write_config(tmp_path, terminal_port=terminal_port, http_port=http_port)
            env = {
                **os.environ,
                "MEDSWITCH_HOME": str(tmp_path),
                "MEDSWITCH_DATABASE_URL": url,
                "MEDSWITCH_HTTP_WORKER_METRICS_PORT": str(metrics_port),
            }
            errors = (tmp_path / "serve.err").open("w")  # the workers' log lines
            process = subprocess.Popen(
                [SCRIPT, "serve", "--workers", str(WORKERS)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            errors.close()  # the child holds its own copy
            try:
                await asyncio.to_thread(_wait_for_workers, process, tmp_path / "serve.err")
                await _scenario(tmp_path, terminal_port, metrics_port)
                process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 60) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)

    asyncio.run(asyncio.wait_for(main(), timeout=180))


def _wait_for_workers(process: subprocess.Popen[str], errors: Path) -> None:
    assert process.stdout is not None
    for worker in range(1, WORKERS + 1):
        line = process.stdout.readline()
        if "medswitch serving" not in line:
            time.sleep(1)  # the failing worker's last words reach its log
            tail = errors.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker {worker} did not start: {line!r}; its log:\n{tail}")


async def _scenario(home: Path, port: int, metrics_port: int) -> None:
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))  # the POS's module
    stored = await FileKeyStore(home / "keys.jsonl").list("tmk/POS00001")
    tmk = max(stored, key=lambda s: s.version)
    assert tmk.usage is KeyUsage.TMK
    by_worker: dict[int, Terminal] = {}
    opened: list[Terminal] = []
    try:
        for _ in range(CONNECTIONS_MAX):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            terminal = Terminal("POS00001", hsm, tmk.ref, reader, writer)
            opened.append(terminal)
            before = [sum(answered(metrics_port + w).values()) for w in range(WORKERS)]
            await terminal.exchange(Echo(**terminal.envelope()), mac=False)  # not signed on yet
            after = [sum(answered(metrics_port + w).values()) for w in range(WORKERS)]
            worker = next(w for w in range(WORKERS) if after[w] > before[w])
            by_worker.setdefault(worker, terminal)
            if len(by_worker) == WORKERS:
                break
        assert len(by_worker) == WORKERS, "every connection landed on the same worker"
        first, second = by_worker[0], by_worker[1]
        reply = await first.exchange(SignOn(**first.envelope()), mac=False)
        assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
        keys = await hsm.accept_sign_on(tmk.ref, reply.keys.build(), "pos/POS00001", now=now())
        for terminal in (first, second):
            terminal.keys, terminal.batch = keys, reply.batch
        second.stan = first.stan
        # Worker 1 verifies the MAC under the working key worker 0 made and MACs its reply.
        inquiry = await second.exchange(
            BalanceInquiry(**second.envelope(), pan="6212340000000000008")
        )
        assert isinstance(inquiry, TerminalReply) and inquiry.response_code != "A0"
        original = second.sent
        repeats = answered(metrics_port).get("repeat", 0.0)
        again = await first.send(original)  # the retransmission reaches worker 0
        assert again == await _reply_bytes(second, original)
        assert answered(metrics_port).get("repeat", 0.0) == repeats + 1
        # A sign-off answered by worker 1 ends the keys at worker 0 too.
        signed_off = await second.exchange(SignOff(**second.envelope()))
        assert signed_off.response_code == "00", signed_off
        first.stan = second.stan
        echo = await first.exchange(Echo(**first.envelope()))
        assert echo.response_code == Outcome.RE_SIGN_ON.code, echo
    finally:
        for terminal in opened:
            terminal.writer.close()
            await terminal.writer.wait_closed()


async def _reply_bytes(terminal: Terminal, payload: bytes) -> bytes:
    """The reply worker 1 gives to the same bytes again (its own cache)."""
    return await terminal.send(payload)

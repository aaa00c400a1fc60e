"""Two PostgreSQL clusters on this machine, made with PostgreSQL's own tools (``initdb``,
``pg_ctl``, ``pg_basebackup`` from /usr/lib/postgresql/N/bin): a primary and a synchronous
standby streaming from it, on free ports in a temporary directory, started, killed and promoted
by the test, stopped and removed afterwards.

- The primary commits only once the standby has applied the commit
  (``synchronous_standby_names = '*'``, ``synchronous_commit = remote_apply``): whatever a
  client saw committed is readable on the standby, so a failover loses no acknowledged commit.
- The standby is a ``pg_basebackup -R`` copy (it follows the primary through
  ``primary_conninfo``); it names no synchronous standby of its own, so once promoted it commits
  alone.
- initdb refuses to run as root: as root, every PostgreSQL tool runs as the ``postgres`` OS user
  (``runuser -u postgres --``, the user the Debian packages make) and the directory is that
  user's; otherwise as the current user. Either way the clusters' superuser is ``postgres``,
  trusted from 127.0.0.1 (and from the ``trust`` networks the caller names).
- Without the binaries (or, as root, without the ``postgres`` user) the tests that need them
  skip, saying why; under CI (``CI=true``) they fail instead.

As a command, for trying things by hand: ``python -m tests.support.pgcluster`` makes the pair,
prints the multi-host URL the daemon takes, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.bench_switch import alive
from tests.support.workers import free_ports

TOOLS = ("initdb", "pg_ctl", "pg_basebackup")
OS_USER_AS_ROOT = "postgres"
SUPERUSER = "postgres"
START_S = 60  # pg_ctl -w -t: a start on a busy 2-core box takes a few seconds
STOP_S = 30


@dataclass(frozen=True)
class Tools:
    """Where PostgreSQL's programs are, and the OS user they run as (None: this one)."""

    bindir: Path
    run_as: str | None

    def command(self, tool: str, *arguments: str) -> list[str]:
        program = [str(self.bindir / tool), *arguments]
        return ["runuser", "-u", self.run_as, "--", *program] if self.run_as else program

    def run(self, tool: str, *arguments: str, timeout: float = START_S) -> None:
        done = subprocess.run(
            self.command(tool, *arguments),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def find_tools() -> Tools | str:
    """The newest installed PostgreSQL's programs, or why they cannot be used."""
    found = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    usable = [d for d in found if all((d / tool).exists() for tool in TOOLS)]
    if not usable:
        return "PostgreSQL's initdb/pg_ctl/pg_basebackup are absent (apt-get install postgresql)"
    if os.geteuid() != 0:
        return Tools(usable[-1], None)
    try:
        pwd.getpwnam(OS_USER_AS_ROOT)
    except KeyError:
        return f"running as root and there is no {OS_USER_AS_ROOT!r} OS user for initdb"
    if shutil.which("runuser") is None:
        return "running as root and runuser (util-linux) is missing"
    return Tools(usable[-1], OS_USER_AS_ROOT)


def require_tools() -> Tools:
    """The tools; the test skips without them — fails under CI (``CI=true``)."""
    found = find_tools()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {found}")
        pytest.skip(found)
    return found


@dataclass
class Cluster:
    """One cluster: its data directory and port; started and stopped through ``pg_ctl``."""

    name: str
    data: Path
    port: int
    tools: Tools

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def start(self) -> None:
        self.tools.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_S), "start"
        )

    def stop(self) -> None:
        """An immediate stop (the data is thrown away); nothing when it is not running."""
        if self.postmaster_pid() is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.tools.run(
                "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", str(STOP_S),
                "stop", timeout=STOP_S + 5,
            )  # fmt: skip

    def promote(self) -> None:
        """A standby made primary (``pg_ctl promote``, waiting until it accepts writes)."""
        self.tools.run("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_S), "promote")

    def kill(self) -> None:
        """kill -9 of the postmaster, as a crash would; its backends end on noticing."""
        pid = self.postmaster_pid()
        assert pid is not None, f"{self.name} is not running"
        os.kill(pid, signal.SIGKILL)
        for _ in range(500):  # bounded: the postmaster is gone at once (root reaps nothing)
            if not alive(pid):
                return
            time.sleep(0.01)
        raise AssertionError(f"{self.name}'s postmaster {pid} survived SIGKILL")

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        pid = int(first) if first.strip().isdigit() else None
        return pid if pid is not None and alive(pid) else None

    def dsn(self, host: str = "127.0.0.1", database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{host}:{self.port}/{database}"


@dataclass
class Pair:
    """A primary and its synchronous standby."""

    primary: Cluster
    standby: Cluster
    root: Path

    def url(self, host: str = "127.0.0.1", database: str = "postgres") -> str:
        """The multi-host URL that reaches whichever of the two accepts writes (libpq's and
        asyncpg's ``target_session_attrs=read-write``)."""
        hosts = f"{host}:{self.primary.port},{host}:{self.standby.port}"
        return f"postgresql://{SUPERUSER}@{hosts}/{database}?target_session_attrs=read-write"


def _settings(port: int, socket_dir: Path, listen: Sequence[str]) -> str:
    """The lines a cluster's postgresql.conf gets (the last setting of a name wins)."""
    return (
        f"\nport = {port}\nlisten_addresses = '{','.join(listen)}'\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_connections = 200\nshared_buffers = 32MB\n"
        "fsync = off\n"  # the drills kill processes, not the machine: the page cache survives
        "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
        "wal_receiver_status_interval = 1s\n"
        "wal_retrieve_retry_interval = 200ms\n"  # a promotion is noticed at once, not in 5 s
    )


@contextlib.contextmanager
def replicated_pair(
    listen: Sequence[str] = ("127.0.0.1",), trust: Sequence[str] = ()
) -> Iterator[Pair]:
    """A started primary and synchronous standby, listening on ``listen`` (the primary also
    trusts clients from the ``trust`` networks, e.g. ``10.77.0.0/24``); both stopped and their
    directory removed afterwards, whatever the test did to them."""
    tools = require_tools()
    root = Path(tempfile.mkdtemp(prefix="medswitch-pg-"))
    if tools.run_as is not None:
        account = pwd.getpwnam(tools.run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    primary_port, standby_port = free_ports(2)
    primary = Cluster("primary", root / "primary", primary_port, tools)
    standby = Cluster("standby", root / "standby", standby_port, tools)
    try:
        tools.run(
            "initdb", "-D", str(primary.data), "-U", SUPERUSER, "-A", "trust",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale", "C",
        )  # fmt: skip
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(_settings(primary_port, root, listen))
            conf.write("synchronous_standby_names = '*'\nsynchronous_commit = remote_apply\n")
        with (primary.data / "pg_hba.conf").open("a") as hba:
            for network in trust:
                hba.write(f"host all all {network} trust\n")
        primary.start()
        tools.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port), "-U", SUPERUSER,
            "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(_settings(standby_port, root, listen))
            conf.write("synchronous_standby_names = ''\n")  # promoted, it commits alone
        standby.start()
        _wait_synchronous(primary)
        yield Pair(primary, standby, root)
    finally:
        for cluster in (standby, primary):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_synchronous(primary: Cluster) -> None:
    """Until the primary streams to its standby synchronously (a commit before that would
    wait for it anyway; this makes the start's end the point where the pair is whole)."""
    query = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
    command = primary.tools.command(
        "psql", "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER, "-Atc", query
    )
    for _ in range(600):  # bounded: the standby connects within a second or two
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if done.stdout.strip() == "1":
            return
        time.sleep(0.05)
    raise AssertionError(f"the standby never became synchronous; see {primary.log}")


def main() -> None:
    with replicated_pair() as pair:
        print(f"primary  {pair.primary.dsn()}  (log {pair.primary.log})")
        print(f"standby  {pair.standby.dsn()}  (log {pair.standby.log})")
        print(f"daemon   MEDSWITCH_DATABASE_URL='{pair.url()}'", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()

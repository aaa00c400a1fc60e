"""Several switch hosts (issue 25, item 5): two `medswitch serve` daemons, each on a test host
of its own (a network namespace made by the test, tests.support.netns), against one PostgreSQL
(a cluster of the test, listening on the hosts' gateway). Each host has its own copy of the
deployment's home (configuration and key store); what they share is the database.

- POS settle bills and confirm the cards' debits at host A (all 00); every one of those
  requests sent again reaches host B — retransmissions landing on the other host — and is
  answered from the shared reply cache: host A's reply byte for byte, counted as a repeat by
  host B; each debit is in the ledger once.
- A POS signs on at host A; its balance inquiry, MACed under the working keys host A issued,
  is answered at host B (the sessions are in the database); the same bytes sent again reach
  host A and get host B's reply from the shared cache, counted as a repeat by host A."""

from __future__ import annotations

import asyncio
import re
import shutil
import urllib.request
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import uvloop

from bench.bench_workers import deploy, prepare
from bench.pos_side import debit_ids
from hsm.keys import KeyUsage
from messages.terminal import BalanceInquiry, TerminalReply
from switch.demo.keys import custodian_files, tmk_alias
from switch.key_home import component_files_of, open_soft_hsm
from switch.keystore_file import FileKeyStore
from tests.support.daemon import Terminal
from tests.support.failover import (
    Listen,
    Seen,
    check_ledger,
    drive,
    serving,
    summary,
)
from tests.support.netns import Host, made_hosts
from tests.support.pgcluster import replicated_pair
from tests.support.workers import free_ports

TERMINAL_PORT = 5800  # each host has its own addresses: the same ports on both
HTTP_PORT = 5880
POS = 2
BILLS = 6  # a settlement and an advice each: 12 money exchanges, sent to one host then the other


def repeats(host: Host) -> float:
    """Terminal requests this host answered from the reply cache (medswitch_messages_total)."""
    url = f"http://{host.address}:{HTTP_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    pattern = (
        r'medswitch_messages_total\{interface="terminal",[^}]*response_code="repeat"[^}]*\} (\S+)'
    )
    return sum(float(value) for value in re.findall(pattern, text))


def test_a_retransmission_at_the_other_host_is_answered_from_the_shared_cache(
    tmp_path: Path,
) -> None:
    with (
        made_hosts(2) as hosts,
        replicated_pair(listen=("127.0.0.1", hosts.gateway), trust=(hosts.network,)) as pair,
    ):
        home_a, home_b = tmp_path / "a", tmp_path / "b"
        home_a.mkdir()
        local = pair.primary.dsn()
        maker = deploy(home_a, local, cardholders=2)
        # the POS's frames, prepared through a daemon on this machine (cards loaded at a kiosk,
        # POS signed on, bills submitted): the terminals' state is in the shared database
        here = Listen("127.0.0.1", *free_ports(2))
        with serving(home_a, local, here, log=tmp_path / "prepare.log"):
            lanes, _ = uvloop.run(prepare(home_a, local, here.terminal_port, maker, POS, BILLS))
        shutil.copytree(home_a, home_b)  # the deployment's files, installed on each host
        url = pair.primary.dsn(host=hosts.gateway)
        host_a, host_b = hosts.hosts
        listen_a = Listen(host_a.address, TERMINAL_PORT, HTTP_PORT)
        listen_b = Listen(host_b.address, TERMINAL_PORT, HTTP_PORT)
        with (
            serving(home_a, url, listen_a, prefix=host_a.command(), log=tmp_path / "a.log"),
            serving(home_b, url, listen_b, prefix=host_b.command(), log=tmp_path / "b.log"),
        ):
            settled_at_a = uvloop.run(drive(host_a.address, TERMINAL_PORT, lanes, -1, nothing))
            assert set(settled_at_a.all_codes()) == {"00"}, summary(settled_at_a)
            before = repeats(host_b)
            again_at_b = uvloop.run(drive(host_b.address, TERMINAL_PORT, lanes, -1, nothing))
            assert again_at_b.replies == settled_at_a.replies  # byte for byte
            assert repeats(host_b) == before + sum(len(lane) for lane in lanes)
            # a new sign-on (the lanes' MACs are under the keys of the one before)
            asyncio.run(asyncio.wait_for(scenario(home_a, local, host_a, host_b), 60))
        asyncio.run(check_ledger(local, list(debit_ids(lanes).values())))  # each posted once


async def nothing(_: Seen) -> None:
    return None


async def scenario(home: Path, dsn: str, host_a: Host, host_b: Host) -> None:
    database = await asyncpg.connect(dsn)
    try:
        terminal_id, institution_id = await database.fetchrow(
            "SELECT id, institution_id FROM terminals WHERE kind = 'pos' ORDER BY id LIMIT 1"
        )
        pan = await database.fetchval("SELECT card_no FROM cards ORDER BY card_no LIMIT 1")
    finally:
        await database.close()
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))  # the POS's module
    stored = await FileKeyStore(home / "keys.jsonl").list(tmk_alias(terminal_id))
    tmk = max(stored, key=lambda s: s.version)
    assert tmk.usage is KeyUsage.TMK
    at_a, at_b = [
        Terminal(
            terminal_id, hsm, tmk.ref, *await connect(host), institution_id=institution_id.ljust(15)
        )
        for host in (host_a, host_b)
    ]
    try:
        await at_a.sign_on()  # host A issues the working keys
        at_b.keys, at_b.batch, at_b.stan = at_a.keys, at_a.batch, at_a.stan
        inquiry = await at_b.exchange(BalanceInquiry(**at_b.envelope(), pan=pan))
        assert isinstance(inquiry, TerminalReply) and inquiry.response_code == "00", inquiry
        original = at_b.sent
        answered_b = await at_b.send(original)  # host B's own answer to the same bytes
        before = await asyncio.to_thread(repeats, host_a)
        again = await at_a.send(original)  # the retransmission reaches host A
        assert again == answered_b
        assert await asyncio.to_thread(repeats, host_a) == before + 1
    finally:
        for terminal in (at_a, at_b):
            terminal.writer.close()
            await terminal.writer.wait_closed()


async def connect(host: Host) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host.address, TERMINAL_PORT)

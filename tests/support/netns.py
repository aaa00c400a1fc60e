"""Test hosts on this machine: network namespaces made by the test (``ip netns add``), each
with one end of a veth pair, the other ends on a bridge of the test's own holding the gateway
address; every address on one private /24. The test reaches each host at its address, the hosts
reach the machine at the gateway (where, e.g., a PostgreSQL of the test listens). Everything is
removed afterwards, whatever happened.

Needs root and iproute2: without them the tests skip saying so — under CI (``CI=true``, where
the tests run as root) they fail instead."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

IP_TIMEOUT_S = 10
NETWORKS_TRIED = 32  # random 10.x.y.0/24 networks tried until one is unused here


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass(frozen=True)
class Hosts:
    hosts: list[Host]
    gateway: str  # the machine, as the hosts reach it
    network: str  # e.g. 10.93.17.0/24


def ip(*argv: str) -> None:
    done = subprocess.run(
        ["ip", *argv], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def _unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    return None


def require() -> None:
    """Skip without root or iproute2 — fail under CI (``CI=true``)."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


def _free_network() -> ipaddress.IPv4Network:
    text = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    ).stdout
    used = [ipaddress.ip_interface(part).network for part in text.split() if "/" in part]
    for _ in range(NETWORKS_TRIED):
        network = ipaddress.IPv4Network(
            f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.0/24"
        )
        if not any(network.overlaps(other) for other in used):
            return network
    raise RuntimeError(f"no unused 10.x.y.0/24 in {NETWORKS_TRIED} tries")


@contextlib.contextmanager
def made_hosts(count: int = 2) -> Iterator[Hosts]:
    """``count`` hosts on a private /24 with this machine as their gateway."""
    require()
    tag = secrets.token_hex(3)  # interface names: at most 15 characters
    bridge = f"msbr{tag}"
    network = _free_network()
    addresses = [str(a) for a in list(network.hosts())[: count + 1]]
    gateway, prefix = addresses[0], network.prefixlen
    hosts = [Host(f"medswitch-{tag}-{n}", addresses[n + 1]) for n in range(count)]
    made: list[Host] = []
    try:
        try:
            ip("link", "add", bridge, "type", "bridge")
        except RuntimeError as error:
            _refuse(f"cannot make a bridge ({error})")
        ip("addr", "add", f"{gateway}/{prefix}", "dev", bridge)
        ip("link", "set", bridge, "up")
        for number, host in enumerate(hosts):
            try:
                ip("netns", "add", host.namespace)
            except RuntimeError as error:
                _refuse(f"cannot make a network namespace ({error})")
            made.append(host)
            outside, inside = f"msh{tag}{number}", f"msn{tag}{number}"
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", host.namespace)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/{prefix}", "dev", inside)
            ip("-n", host.namespace, "link", "set", inside, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
        yield Hosts(hosts, gateway, str(network))
    finally:
        for host in made:  # its end of the veth pair goes with it, and so the other end
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ip("netns", "del", host.namespace)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            ip("link", "del", bridge)


def _refuse(reason: str) -> None:
    """This machine will not make test hosts: skip — fail under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)

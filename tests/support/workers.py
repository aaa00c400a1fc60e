"""`medswitch serve --workers N` as the tests start it: the installed script, the number of
workers, and free ports held until all are chosen."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "medswitch")
WORKERS = 2


def free_ports(count: int, *, run: int = 1) -> list[int]:
    """``count`` distinct free ports; the last one starts a run of ``run`` consecutive free
    ports (the workers' metrics ports are that base + the worker's number). Every port is held
    until all are chosen, so none of them coincide."""
    held: list[socket.socket] = []

    def hold(port: int) -> int | None:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        held.append(sock)
        return int(sock.getsockname()[1])

    try:
        ports = [hold(0) for _ in range(count - 1)]
        for _ in range(100):  # a bound: a run of free ports is found in a try or two
            base = hold(0)
            assert base is not None
            if all(hold(base + offset) is not None for offset in range(1, run)):
                return [p for p in ports if p is not None] + [base]
        raise RuntimeError(f"no run of {run} free ports")
    finally:
        for sock in held:
            sock.close()

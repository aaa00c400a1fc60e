"""File-descriptor budgets: each listener's connection cap fits in the process's share.

Every connection costs a descriptor. Without budgets one port's connections (1,100 partial
HTTP requests) took the descriptors the terminal port needed to accept a sign-on. The rule:

1. At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (at most
   ``NOFILE_WANTED``): the usual default soft limit of 1,024 is below the default caps alone.
2. ``RESERVED`` descriptors stay for the daemon itself — database and WAL files, the writer
   process's pipes, the HSM and PostgreSQL connections, outbound bank links, logs, the event
   loop — and for connections accepted over a cap in the instant before they are closed.
3. Each listener (terminal, each bank link, HTTP) may hold ``connections_max`` connections.
   If the caps add up to more than what is left, every cap is scaled down in proportion
   (at least 1 each) and a warning names the caps in force.

So no port can take another port's descriptors: a port at its cap refuses its own new
connections, and the others still accept theirs.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from collections.abc import Mapping

from switch.config import Config

log = logging.getLogger("medswitch.descriptors")

RESERVED = 256
NOFILE_WANTED = 65_536


def raise_nofile() -> int:
    """Raise the soft descriptor limit toward the hard one; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as err:  # not allowed here: live with the soft limit
            log.warning("could not raise the descriptor limit from %d: %s", soft, err)
    return NOFILE_WANTED if soft == resource.RLIM_INFINITY else soft


def shares(caps: Mapping[str, int], nofile: int, reserved: int = RESERVED) -> dict[str, int]:
    """Each listener's cap, scaled down in proportion if together they exceed ``nofile``
    less ``reserved``."""
    available = max(len(caps), nofile - reserved)
    total = sum(caps.values())
    if total <= available:
        return dict(caps)
    fitted = {name: max(1, cap * available // total) for name, cap in caps.items()}
    assert sum(fitted.values()) <= available
    return fitted


def fit(config: Config, nofile: int) -> Config:
    """``config`` with every listener's ``connections_max`` within its share of ``nofile``."""
    banks = (config.bank, *config.bank.links)  # each enabled one listens
    caps = {"terminal": config.terminal.connections_max, "http": config.http.connections_max}
    caps.update({f"bank {i}": b.connections_max for i, b in enumerate(banks) if b.enabled})
    if config.his.port is not None:  # the HIS API's own port, with the [http] limits
        caps["his"] = config.http.connections_max
    fitted = shares(caps, nofile)
    if fitted == caps:
        return config
    log.warning(
        "descriptor limit %d (%d reserved): connection caps lowered to %s",
        nofile,
        RESERVED,
        ", ".join(f"{name} {cap}" for name, cap in fitted.items()),
    )
    capped = [
        dataclasses.replace(b, connections_max=fitted.get(f"bank {i}", b.connections_max))
        for i, b in enumerate(banks)
    ]
    return dataclasses.replace(
        config,
        terminal=dataclasses.replace(config.terminal, connections_max=fitted["terminal"]),
        http=dataclasses.replace(
            config.http, connections_max=min(fitted["http"], fitted.get("his", fitted["http"]))
        ),
        bank=dataclasses.replace(capped[0], links=tuple(capped[1:])),
    )

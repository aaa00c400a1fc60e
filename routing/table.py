"""The declarative route table: (interface, MTI class, processing code, 60.1, account type,
card BIN) → handler.

Routes are data; the table is checked for ambiguity when it is built (two routes that could
both match one message are refused), and `medswitch routes` prints it. Lookup picks the most
specific route: a BIN prefix beats no BIN, a longer prefix beats a shorter one.

>>> async def handle_echo(request: object) -> object: ...
>>> table = RouteTable([Route("terminal", "0820", txn_type="00", network_code="301",
...                          handler=handle_echo)])
>>> table.match("terminal", "0820", None, "00", "301", None, "").handler is handle_echo
True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., Awaitable[Any]]


class RouteError(ValueError):
    """An ambiguous or impossible route table."""


@dataclass(frozen=True, slots=True)
class Route:
    """One row. ``None`` in a key column matches anything (a wildcard)."""

    interface: str  # terminal | bank
    mti: str  # message class: repeat digit normalised
    processing_code: str | None = None
    txn_type: str | None = None  # terminal 60.1
    network_code: str | None = None  # terminal 60.3 / bank F70
    account_type: str | None = None  # F3 digits 3-4: the source account
    bin_prefix: str = ""  # card BIN prefix; "" = any card
    handler: Handler | None = None
    description: str = ""

    @property
    def key(self) -> tuple[str, str, str | None, str | None, str | None, str | None]:
        return (
            self.interface,
            self.mti,
            self.processing_code,
            self.txn_type,
            self.network_code,
            self.account_type,
        )

    @property
    def name(self) -> str:
        handler = self.handler
        return getattr(handler, "__qualname__", "?") if handler else "—"


def _overlaps(a: Route, b: Route) -> bool:
    for left, right in zip(a.key, b.key, strict=True):
        if left is not None and right is not None and left != right:
            return False
    return a.bin_prefix == b.bin_prefix


CODES_KEPT_MAX = 4096  # distinct (interface, MTI, codes) answers kept
_UNSEEN = object()


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        for i, route in enumerate(self.routes):
            if route.handler is None:
                raise RouteError(f"route {route.key} has no handler")
            for other in self.routes[:i]:
                if _overlaps(route, other):
                    raise RouteError(f"routes {other.key} and {route.key} are ambiguous")
        self._by_mti: dict[tuple[str, str], list[Route]] = {}
        for route in self.routes:
            self._by_mti.setdefault((route.interface, route.mti), []).append(route)
        for candidates in self._by_mti.values():
            candidates.sort(key=lambda r: (-len(r.bin_prefix), -sum(k is not None for k in r.key)))
        # Where no candidate looks at the card's BIN, the answer depends on the codes alone.
        self._by_codes: dict[tuple[str | None, ...], Route | None] = {}
        self._no_bins = {
            key
            for key, candidates in self._by_mti.items()
            if not any(r.bin_prefix for r in candidates)
        }

    def match(
        self,
        interface: str,
        mti: str,
        processing_code: str | None,
        txn_type: str | None,
        network_code: str | None,
        account_type: str | None,
        pan: str,
    ) -> Route | None:
        """The most specific route for a message, or ``None`` (answered 92 / 12)."""
        codes = (interface, mti, processing_code, txn_type, network_code, account_type)
        found = self._by_codes.get(codes, _UNSEEN)  # only codes whose MTI no BIN route serves
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        where = (interface, mti)
        wanted = (processing_code, txn_type, network_code, account_type)
        if where not in self._no_bins:
            return self._first(where, wanted, pan)
        if len(self._by_codes) >= CODES_KEPT_MAX:  # codes come off the wire: bounded
            self._by_codes.clear()
        route = self._by_codes[codes] = self._first(where, wanted, pan)
        return route

    def _first(
        self, where: tuple[str, str], wanted: tuple[str | None, ...], pan: str
    ) -> Route | None:
        for route in self._by_mti.get(where, ()):
            if route.bin_prefix and not pan.startswith(route.bin_prefix):
                continue
            if all(k is None or k == w for k, w in zip(route.key[2:], wanted, strict=True)):
                return route
        return None

    def describe(self) -> str:
        """A text table for `medswitch routes`."""
        rows = [("interface", "MTI", "F3", "60.1", "60.3/F70", "acct", "BIN", "handler")]
        for r in self.routes:
            rows.append(
                (
                    r.interface,
                    r.mti,
                    r.processing_code or "*",
                    r.txn_type or "*",
                    r.network_code or "*",
                    r.account_type or "*",
                    r.bin_prefix or "*",
                    r.name,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )

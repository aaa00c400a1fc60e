"""Route lookup: the kept answers of codes no BIN route looks at are the table's own answers."""

from __future__ import annotations

import itertools

from routing import table
from routing.table import Route, RouteTable


async def _a() -> None: ...
async def _b() -> None: ...
async def _c() -> None: ...


def _table() -> RouteTable:
    return RouteTable(
        [
            Route("terminal", "0200", "000000", "22", handler=_a),
            Route("terminal", "0200", "000000", "00", handler=_b),
            Route("terminal", "0220", txn_type="22", handler=_c),
            Route("terminal", "0220", txn_type="00", handler=_a),
            Route("terminal", "0220", txn_type="00", bin_prefix="621234", handler=_b),
        ]
    )


def test_kept_answers_are_the_first_matching_route_every_time() -> None:
    routes = _table()
    codes = list(
        itertools.product(
            ("0200", "0220", "0400"),
            ("000000", "310000", None),
            ("00", "22", "30"),
            ("000", None),
            ("6212340000000016", "6222220000000016", ""),
        )
    )
    for _ in range(3):  # the first pass keeps, the next ones read what was kept
        for mti, processing_code, txn_type, network_code, pan in codes:
            wanted = (processing_code, txn_type, network_code, None)
            expected = routes._first(("terminal", mti), wanted, pan)
            assert routes.match("terminal", mti, *wanted, pan) is expected
    bin_route = routes.match("terminal", "0220", None, "00", None, None, "6212340000000016")
    assert bin_route is not None and bin_route.handler is _b
    other = routes.match("terminal", "0220", None, "00", None, None, "6222220000000016")
    assert other is not None and other.handler is _a


def test_kept_answers_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(table, "CODES_KEPT_MAX", 4)
    routes = _table()
    for n in range(10):
        assert routes.match("terminal", "0200", f"{n + 1:06d}", "22", None, None, "") is None
        assert len(routes._by_codes) <= 4
    assert routes.match("terminal", "0200", "000000", "22", None, None, "").handler is _a  # type: ignore[union-attr]

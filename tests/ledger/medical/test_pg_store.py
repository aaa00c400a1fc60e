"""The bill service's tests again, on PostgreSQL: the SQL medical store (native writes,
`ledger.medical.pg_store`) and reference data over `ledger.pg_bridge` (asyncpg), in a fresh
schema per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from tests.ledger.medical.pg_world import pg_engine
from tests.ledger.medical.test_limits import (  # the holds, on PostgreSQL's native writes
    test_an_approved_bill_holds_until_24_hours_after_submission,
    test_an_institutions_open_bills_for_a_card_share_the_level_total,
    test_an_open_bill_holds_the_year_for_two_hours_only,
    test_the_probed_bill_is_refused_and_nothing_reserved,
    test_the_sweep_releases_an_open_bill_nobody_settles,
)
from tests.ledger.medical.test_service import (  # collected here again, on this module's fixture
    test_cancel_reverse_and_expiry_release,
    test_life_cycle,
    test_offline_purchases_count_once,
    test_price_check_stores_nothing,
    test_refusals_store_nothing,
    test_special_category_and_retiree,
    test_submit_reserves_and_the_same_bill_twice_counts_once,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "test_an_approved_bill_holds_until_24_hours_after_submission",
    "test_an_institutions_open_bills_for_a_card_share_the_level_total",
    "test_an_open_bill_holds_the_year_for_two_hours_only",
    "test_cancel_reverse_and_expiry_release",
    "test_life_cycle",
    "test_offline_purchases_count_once",
    "test_price_check_stores_nothing",
    "test_refusals_store_nothing",
    "test_special_category_and_retiree",
    "test_submit_reserves_and_the_same_bill_twice_counts_once",
    "test_the_probed_bill_is_refused_and_nothing_reserved",
    "test_the_sweep_releases_an_open_bill_nobody_settles",
]


@pytest.fixture
def service() -> Iterator[MedicalService]:
    with pg_engine() as (engine, _):
        store = SqlMedicalStore(engine)
        yield MedicalService(store, SqlDirectory(engine))  # type: ignore[arg-type]
        store.close()

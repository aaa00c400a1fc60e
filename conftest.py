"""Suite-wide test settings: hypothesis profiles and the PostgreSQL gate."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, settings

# CI: deterministic and bounded in time. Local: a few more examples, still no deadline
# (these machines are shared and noisy; time is measured in bench/, never asserted).
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=60,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _postgres_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip PostgreSQL tests when it is absent, except under CI where that is a failure."""
    if _postgres_reachable():
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true but PostgreSQL is not reachable on 127.0.0.1:5432")
    skip = pytest.mark.skip(reason="PostgreSQL not reachable on 127.0.0.1:5432 (set up by .ci/run)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)

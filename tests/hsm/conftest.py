"""One HSM test suite, two backends: SoftHsm in process and the network client talking to a
server on 127.0.0.1 (port 0) that wraps a SoftHsm. Each test body runs in a fresh event loop
with a fresh key store holding the vector keys."""

from __future__ import annotations

import pytest

from tests.support.hsm_keys import Backend


def _backends() -> list[str]:
    try:
        import switch.hsm_net  # noqa: F401
    except ImportError:
        return ["soft"]
    return ["soft", "net"]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)

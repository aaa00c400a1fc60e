"""File-descriptor budgets: the listeners' connection caps fit the process's descriptor limit,
scaled in proportion when they do not, and a daemon configuration is fitted as a whole."""

from __future__ import annotations

import resource

from switch.config import BankConfig, Config, HisConfig, HttpConfig, ListenConfig
from switch.descriptors import RESERVED, fit, raise_nofile, shares


def test_caps_that_fit_are_kept_and_others_scaled_in_proportion() -> None:
    caps = {"terminal": 2000, "http": 256}
    assert shares(caps, 100_000) == caps
    fitted = shares(caps, RESERVED + 1128)
    assert fitted == {"terminal": 1000, "http": 128}
    assert sum(shares(caps, RESERVED + 10).values()) <= 10
    assert min(shares(caps, 0).values()) == 1  # never a listener without a connection


def test_a_configuration_is_fitted_listener_by_listener() -> None:
    bank = BankConfig(enabled=True, connections_max=64, links=(BankConfig(enabled=True, port=1),))
    config = Config(terminal=ListenConfig(), http=HttpConfig(), bank=bank)
    assert fit(config, 100_000) is config
    fitted = fit(config, RESERVED + 1192)  # 2000 + 256 + 64 + 64 asked for, half left
    assert fitted.terminal.connections_max == 1000
    assert fitted.http.connections_max == 128
    assert fitted.bank.connections_max == 32
    assert fitted.bank.links[0].connections_max == 32
    assert fitted.bank.links[0].port == 1  # nothing else changes


def test_the_his_apis_own_port_counts_as_a_listener_with_the_http_limits() -> None:
    config = Config(terminal=ListenConfig(), http=HttpConfig(), his=HisConfig(port=0))
    fitted = fit(config, RESERVED + 1256)  # 2000 + 256 + 256 asked for, half left
    assert fitted.terminal.connections_max == 1000
    assert fitted.http.connections_max == 128  # each of the two HTTP ports


def test_the_soft_limit_is_raised_toward_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_nofile() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= min(hard, 1024)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

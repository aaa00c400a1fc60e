"""The `[bank]` configuration and `medswitch routes` showing the bank interface's routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from switch.cli import main as cli_main
from switch.config import ConfigError, load


def test_bank_section_from_file_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    toml.write_text('[bank]\nenabled = true\nport = 6810\nallowed_peers = ["10.1.2.3"]\n')
    environ = {"MEDSWITCH_HOME": str(tmp_path), "MEDSWITCH_BANK_OUTBOUND_HOST": "10.1.2.4"}
    config = load(toml, environ)
    assert config.bank.enabled and config.bank.port == 6810
    assert config.bank.allowed_peers == ("10.1.2.3",)
    assert config.bank.outbound_host == "10.1.2.4"
    environ["MEDSWITCH_BANK_ALLOWED_PEERS"] = "127.0.0.1,10.9.9.9"
    assert load(toml, environ).bank.allowed_peers == ("127.0.0.1", "10.9.9.9")
    toml.write_text("[bank]\nzak = 'x'\n")
    with pytest.raises(ConfigError, match=r"bank\.zak"):
        load(toml, environ)


def test_routes_show_the_bank_interface() -> None:
    result = CliRunner().invoke(cli_main, ["routes"])
    assert result.exit_code == 0, result.output
    bank_rows = [line for line in result.output.splitlines() if line.startswith("bank")]
    handlers = {line.split()[-1] for line in bank_rows}
    assert {
        "handle_bank_sign_on",
        "handle_counter_ed_load",
        "handle_counter_unload",
        "handle_counter_ep_load",
        "handle_loss_report",
        "handle_unloss",
        "handle_pin_reload",
    } <= handlers


def test_routes_show_kiosk_ep_loads_routed_by_bin_to_the_bank_link() -> None:
    environ = {
        "MEDSWITCH_BANK_ENABLED": "true",
        "MEDSWITCH_BANK_OUTBOUND_HOST": "127.0.0.1",
        "MEDSWITCH_BANK_BINS": "621234,621299",
    }
    result = CliRunner().invoke(cli_main, ["routes"], env=environ)
    assert result.exit_code == 0, result.output
    ep_loads = [line.split() for line in result.output.splitlines() if " 601000 " in line]
    by_bin = {row[6]: row[7] for row in ep_loads if row[0] == "terminal" and row[1] == "0200"}
    assert by_bin == {
        "621234": "handle_kiosk_ep_load[bank",
        "621299": "handle_kiosk_ep_load[bank",
        "*": "no_bank_route",
    }
    assert {row[5] for row in ep_loads if row[0] == "bank"} == {"10"}  # savings, by the link


def test_more_banks_as_bank_links_tables(tmp_path: Path) -> None:
    toml = tmp_path / "medswitch.toml"
    toml.write_text(
        "[bank]\nenabled = true\n[[bank.links]]\nenabled = true\nacquirer_id = '01030000'\n"
        "port = 5812\nallowed_peers = ['10.0.0.9']\nbins = ['621299']\n",
        encoding="utf-8",
    )
    (link,) = load(toml, {}).bank.links
    assert (link.acquirer_id, link.port, link.allowed_peers, link.bins) == (
        "01030000",
        5812,
        ("10.0.0.9",),
        ("621299",),
    )
    toml.write_text("[bank]\nlinks = ['x']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bank\.links must be a list of tables"):
        load(toml, {})
    toml.write_text("[bank]\n[[bank.links]]\nzak = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bank\.links\[0\]\.zak"):
        load(toml, {})

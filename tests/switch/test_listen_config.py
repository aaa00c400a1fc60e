"""The connection limits from medswitch.toml and MEDSWITCH_* variables, and a limit that cannot
work (zero, negative) refused at start with the setting's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from messages.framing import LengthFormat
from switch.config import ConfigError, load
from switch.listener import listener_settings


def test_limits_from_the_file_and_the_environment_reach_the_listener(tmp_path: Path) -> None:
    path = tmp_path / "medswitch.toml"
    path.write_text(
        "[terminal]\nin_flight_max = 8\nconnections_per_address_max = 5\n"
        "[http]\nheader_timeout_s = 2.5\nconnections_max = 40\n"
        "[bank]\nwrite_buffer_bytes_max = 1000\n"
    )
    config = load(path, {"MEDSWITCH_TERMINAL_DRAIN_TIMEOUT_S": "3"})
    settings = listener_settings(config.terminal, LengthFormat.BINARY2)
    assert (settings.in_flight_max, settings.connections_per_address_max) == (8, 5)
    assert settings.drain_timeout_s == 3.0
    assert (config.http.header_timeout_s, config.http.connections_max) == (2.5, 40)
    bank = listener_settings(config.bank, LengthFormat.ASCII4, allowed_addresses=("10.0.0.1",))
    assert bank.write_buffer_bytes_max == 1000 and bank.allowed_addresses == ("10.0.0.1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[terminal]\nin_flight_max = 0\n", "terminal.in_flight_max must be at least 1"),
        ("[http]\nbody_timeout_s = -1.0\n", "http.body_timeout_s must be above 0"),
        (
            "[bank]\n[[bank.links]]\nconnections_per_address_max = 0\n",
            "bank.links[0].connections_per_address_max must be at least 1",
        ),
    ],
)
def test_a_limit_that_cannot_work_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "medswitch.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, {})

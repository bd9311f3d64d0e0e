"""The webhook's cache and probe flags."""

from __future__ import annotations

import pytest

from vmdhcp.webhook.config import DEFAULT_MAX_STALE, ConfigError, load_config

BASE = ["--namespace", "vm-dhcp-system"]


def test_defaults_serve_no_probes_and_allow_two_minutes_of_staleness() -> None:
    config = load_config(BASE, {})
    assert (config.http_address, config.http_port) == ("0.0.0.0", 0)
    assert config.max_stale == DEFAULT_MAX_STALE == 120.0


def test_probe_port_and_staleness_are_read() -> None:
    config = load_config([*BASE, "--http-port", "8080", "--max-stale-seconds", "0"], {})
    assert (config.http_port, config.max_stale) == (8080, 0.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http-port", "70000"], "--http-port 70000 is not a port number"),
        (["--max-stale-seconds", "-1"], "--max-stale-seconds -1.0 is not a number of seconds >= 0"),
        (["--max-stale-seconds", "nan"], "--max-stale-seconds nan is not a number of seconds >= 0"),
    ],
)
def test_bad_values_are_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config([*BASE, *argv], {})

"""`--decline-quarantine`: flag, environment, default and bounds."""

from __future__ import annotations

import pytest

from vmdhcp.controller.config import ConfigError, load_config

BASE = ["--namespace", "agents", "--no-agent"]
ENV = "VM_DHCP_CONTROLLER_DECLINE_QUARANTINE"


def test_the_default_the_environment_and_the_flag_which_wins() -> None:
    assert load_config(BASE, {}).decline_quarantine_seconds == 600.0
    assert load_config(BASE, {ENV: "90"}).decline_quarantine_seconds == 90.0
    assert load_config(BASE, {ENV: ""}).decline_quarantine_seconds == 600.0
    flagged = load_config([*BASE, "--decline-quarantine", "0"], {ENV: "90"})
    assert flagged.decline_quarantine_seconds == 0.0


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--decline-quarantine", "-1"], {}, "is not between 0 and 604800 s"),
        (["--decline-quarantine", "604801"], {}, "is not between 0 and 604800 s"),
        (["--decline-quarantine", "soon"], {}, "invalid float value"),
        ([], {ENV: "soon"}, f"{ENV} 'soon' is not a number of seconds"),
    ],
)
def test_bad_values_are_one_line_errors(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config([*BASE, *argv], env)

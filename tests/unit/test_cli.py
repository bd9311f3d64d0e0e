import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("component", ["controller", "agent", "webhook"])
def test_console_scripts_exist_and_refuse_until_implemented(component: str) -> None:
    done = subprocess.run(
        [BIN / f"vm-dhcp-{component}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "not implemented yet" in done.stderr
    assert "Traceback" not in done.stderr


def test_module_entry_without_component_prints_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vmdhcp"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "usage:" in done.stderr

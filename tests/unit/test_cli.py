import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SEED = Path(__file__).resolve().parents[1] / "data" / "ippool-net-48.yaml"


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("component", ["webhook"])
def test_console_scripts_exist_and_refuse_until_implemented(component: str) -> None:
    done = run(BIN / f"vm-dhcp-{component}")
    assert done.returncode == 2
    assert "not implemented yet" in done.stderr
    assert "Traceback" not in done.stderr


def test_module_entry_without_component_prints_usage() -> None:
    done = run(sys.executable, "-m", "vmdhcp")
    assert done.returncode == 2
    assert "usage:" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "one of --ippool-ref NAMESPACE/NAME or --ippool-file PATH is required"),
        (("--ippool-ref", "nonamespace"), "is not NAMESPACE/NAME"),
        (("--ippool-file", "/nonexistent.yaml"), "no such file"),
        (("--bogus",), "unrecognized arguments"),
    ],
)
def test_agent_bad_flags_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    done = run(BIN / "vm-dhcp-agent", *argv)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_agent_missing_interface_is_one_line_and_exits_1() -> None:
    done = run(
        BIN / "vm-dhcp-agent", "--ippool-file", SEED, "--nic", "vdnope0", "--http-port", "18099"
    )
    assert done.returncode == 1
    assert "interface vdnope0 not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "ERROR" in line]) == 1


def test_agent_version() -> None:
    done = run(BIN / "vm-dhcp-agent", "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("vm-dhcp-agent ")

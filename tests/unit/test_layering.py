"""The pure cores stay pure: nothing under vmdhcp.dhcp or vmdhcp.ipam may import I/O,
frameworks or test-only libraries, and vmdhcp.api holds data only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "vmdhcp"

IO_AND_FRAMEWORKS = {
    "asyncio",
    "socket",
    "select",
    "selectors",
    "subprocess",
    "threading",
    "time",
    "random",
    "logging",
    "kopf",
    "kubernetes",
    "aiohttp",
    "prometheus_client",
    "scapy",
    "dhcppython",
    "pydantic",
}

RULES = {
    "dhcp": IO_AND_FRAMEWORKS | {"vmdhcp.ipam", "vmdhcp.api"},
    "ipam": IO_AND_FRAMEWORKS | {"vmdhcp.dhcp", "vmdhcp.api"},
    "api": {"kopf", "kubernetes", "aiohttp", "asyncio", "socket", "scapy"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def violations(package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(SRC)} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_imports_only_what_it_may(package: str) -> None:
    assert list((SRC / package).rglob("*.py")), f"no modules under {package}"
    assert violations(package, RULES[package]) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import socket\nfrom asyncio import sleep\n")
    assert imported_modules(module) == {"socket", "asyncio"}


def test_the_agent_loads_neither_aiohttp_nor_the_kubernetes_client() -> None:
    """Each would cost 11 to 14 MB of the agent's 60 MB budget (issue 4): the agent serves
    HTTP with the standard library and talks to the API server with its own small client,
    in file mode and in Kubernetes mode alike."""
    probe = (
        "import sys, vmdhcp.cli, vmdhcp.agent.app, vmdhcp.agent.sources,"
        " vmdhcp.agent.events, vmdhcp.agent.kubeapi;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'kubernetes'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"

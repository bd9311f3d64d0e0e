"""The core stays sans-I/O: no sockets, event loop, clock, randomness, logging or Kubernetes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import vmdhcp.dhcp

PACKAGE = Path(vmdhcp.dhcp.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))

ALLOWED_STDLIB = {
    "collections",
    "dataclasses",
    "enum",
    "ipaddress",
    "struct",
    "types",
    "typing",
}
ALLOWED_OWN = {"vmdhcp.dhcp", "vmdhcp.errors", "vmdhcp.mac"}
FORBIDDEN_AT_RUNTIME = {
    "asyncio",
    "socket",
    "selectors",
    "kopf",
    "aiohttp",
    "prometheus_client",
    "kubernetes",
    "scapy",
    "dhcppython",
    "logging",
    "random",
    "secrets",
    "datetime",
    "threading",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_modules_import_only_the_allowed_modules(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top == "vmdhcp":
            assert any(name == own or name.startswith(own + ".") for own in ALLOWED_OWN), name
        else:
            assert top in ALLOWED_STDLIB, f"{path.name} imports {name}"


def test_importing_the_core_loads_nothing_forbidden() -> None:
    code = (
        "import json, sys; before = set(sys.modules); import vmdhcp.dhcp; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert "vmdhcp" in loaded
    assert not loaded & FORBIDDEN_AT_RUNTIME

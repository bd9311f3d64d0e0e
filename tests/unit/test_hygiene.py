"""What the repository's own tooling may not do to a contributor's machine: kill processes
by name (a Kea, a dnsmasq or an agent of someone else's would go too), or leave private
keys behind in /tmp."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Commands that pick their victims by name; stop processes by PID instead.
BY_NAME = re.compile(r"\b(pkill|killall|pgrep|pidof)\b")
SCANNED = ("scripts", "tests", "bench", "src", "chart", "Makefile", "Dockerfile.agent",
           "Dockerfile.controller")  # fmt: skip


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        root = REPO / name
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        files += [
            path
            for path in candidates
            if path.is_file()
            and "__pycache__" not in path.parts
            and path != Path(__file__).resolve()
        ]
    return files


def test_no_process_is_stopped_by_name() -> None:
    files = scanned_files()
    assert any(path.name == "install-debian-deps.sh" for path in files)  # the scan sees them
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if BY_NAME.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == []


def test_the_scan_would_see_a_kill_by_name() -> None:
    assert BY_NAME.search("pkill -x kea-dhcp4 2>/dev/null || true")
    assert BY_NAME.search("killall dnsmasq")
    assert not BY_NAME.search('kill -TERM "$(cat "$run/etcd.pid")"')


def test_key_files_of_killed_processes_stay_under_pytests_directory(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A process of the tests that builds a `kubernetes` client from a kubeconfig with an
    embedded key, then exits without running atexit (as a controller does on a lost lease,
    or one killed with SIGKILL), leaves the key's temporary file under pytest's base
    directory (see tests/conftest.py), which pytest cleans up, not in /tmp."""
    base = tmp_path_factory.getbasetemp().resolve()
    assert Path(tempfile.gettempdir()).resolve().is_relative_to(base)
    kubeconfig = tmp_path / "kubeconfig"
    marker = f"KEY-{tmp_path.name}"
    key_data = base64.b64encode(marker.encode()).decode()
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {client-certificate-data: Q0VSVAo=,"
        f" client-key-data: {key_data}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    probe = (
        "import os, sys, tempfile\n"
        "from kubernetes import config\n"
        "config.new_client_from_config(config_file=sys.argv[1])\n"
        "print(tempfile.gettempdir(), flush=True)\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(kubeconfig)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    where = Path(done.stdout.strip()).resolve()
    assert where.is_relative_to(base), f"the subprocess wrote its temporary files to {where}"
    left = [path for path in where.iterdir() if path.is_file() and marker in path.read_text()]
    assert len(left) == 1  # the key file it could not remove: here, not in /tmp
    left[0].unlink()

"""`DEMO_KEEP=1 make demo` as a user runs it: ready, explored with the commands it prints
(`make demo-vm` to add a VM and to run a VM's DHCP client again), then stopped the way a
closed terminal or a supervisor stops it, SIGTERM to its process group. Nothing it started
may be left: no process, no network namespace, no work folder, no key file in /tmp.

Needs root and the lab's binaries (tests/netns) and the test API server's toolkit, as
tests/integration/test_end_to_end.py does; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import demokit
from tests.agentproc import wait_for
from tests.netns.lab import _proc_start_time, skip_reason

pytestmark = [pytest.mark.cluster, pytest.mark.netns]

READY = "=== ready:"
#: what a user's shell would not have (the suite may run under `make test`)
NOT_A_USERS = ("TMPDIR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "DEMO_KEEP")


def user_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in NOT_A_USERS}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def children(root: int) -> set[int]:
    """`root`'s descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def namespace_pids(name: str) -> set[int]:
    listed = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return {int(pid) for pid in listed.split()}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def still_running(pid: int, start: str | None) -> bool:
    """The same process (pid and start time) and not a zombie: a process the demo stopped
    whose parent was init stays a zombie until init reaps it, and that is not the demo's."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return start is not None and state != "Z" and _proc_start_time(pid) == start


def key_lines(work: Path) -> set[str]:
    """One base64 line of each private key of the demo's cluster (to find copies of them)."""
    keys = sorted((work / "k8s" / "pki").glob("*.key"))
    return {key.read_text().splitlines()[1] for key in keys}


def files_holding(folder: Path, needles: set[str]) -> list[Path]:
    found = []
    for path in folder.iterdir():
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
                text = path.read_text(errors="ignore")
                if any(needle in text for needle in needles):
                    found.append(path)
        except OSError:
            continue
    return found


class Demo:
    """`python -m tests.demo` in keep mode, in a process group of its own, output read."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.demo"],
            cwd=demokit.REPO,
            env=user_env(DEMO_KEEP="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def printed(self, label: str) -> str:
        """What the ready message prints after `label`."""
        for line in self.lines:
            if line.startswith(label):
                return line[len(label) :].strip()
        raise AssertionError(f"the demo printed no {label!r}:\n{self.output}")


@pytest.fixture
def demo() -> Iterator[Demo]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("make") is None:
        pytest.fail("make is not installed (the demo is run through it)")
    previous = demokit.running()
    if previous is not None and previous.alive():
        pytest.skip(f"a demo is running (pid {previous.pid}); this test starts its own")
    started = Demo()
    try:
        yield started
    finally:
        if started.process.poll() is None:  # the test failed before stopping it
            os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait(30)
        started.reader.join(10)
        if started.process.stdout is not None:
            started.process.stdout.close()
        left = demokit.running()
        if left is not None and left.pid == started.process.pid:
            demokit.sweep(left)


@pytest.mark.timeout(300)
def test_sigterm_to_the_keep_mode_demos_process_group_leaves_nothing_behind(demo: Demo) -> None:
    wait_for(
        lambda: demo.ready.is_set() or demo.process.poll() is not None, 180, "the demo's ready"
    )
    assert demo.ready.is_set(), f"the demo exited {demo.process.returncode}:\n{demo.output}"
    found = re.search(r"\(logs in (\S+)\)", demo.output)
    assert found is not None, demo.output
    work = Path(found.group(1))

    # the commands it prints work as printed: a second VM, and test-vm's client again
    for label, address in (("add a VM:", "192.168.48.83"), ("re-run a VM's DHCP client:", "")):
        command = demo.printed(label)
        done = subprocess.run(
            shlex.split(command),
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
        assert f"address      {address or '192.168.48.82'}/24" in done.stdout, done.stdout

    namespaces = demokit.demo_namespaces()
    assert set(namespaces) >= {
        "vmdhcp-demo-bridge",
        "vmdhcp-demo-agent-1",
        "vmdhcp-demo-vm-test-vm",
        "vmdhcp-demo-vm-vm-2",
    }
    pids = children(demo.process.pid) | set(demokit.processes_mentioning(str(work)))
    for name in namespaces:
        pids |= namespace_pids(name)
    started = {pid: (_proc_start_time(pid), command_line(pid)) for pid in pids}
    commands = " ".join(command for _, command in started.values())
    for program in ("etcd", "kube-apiserver", "vm-dhcp-webhook", "vm-dhcp-controller"):
        assert program in commands, f"no {program} among the demo's processes: {commands}"
    for program in ("vm-dhcp-agent", "dhclient"):
        assert program in commands, f"no {program} among the demo's processes: {commands}"
    keys = key_lines(work)
    assert len(keys) >= 3, "the cluster's keys (ca, admin, webhook) must be there to be missed"

    os.killpg(demo.process.pid, signal.SIGTERM)
    assert demo.process.wait(120) == 0, demo.output
    demo.reader.join(10)
    assert "=== SIGTERM: cleaning up" in demo.output

    alive = {pid: command for pid, (start, command) in started.items() if still_running(pid, start)}
    assert alive == {}
    assert demokit.processes_mentioning(str(work)) == []
    assert demokit.demo_namespaces() == []
    assert not work.exists()
    assert demokit.running() is None
    assert files_holding(Path("/tmp"), keys) == []

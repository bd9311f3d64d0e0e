"""What `make demo` (tests/demo.py) needs beyond one run of its main function: readable
network namespace names, the record of the demo that is running (for `make demo-vm`), stopping
cleanly on signals, and cleaning up after a demo that could not (one killed with SIGKILL).

Every namespace of the demo is called `vmdhcp-demo-…`: `vmdhcp-demo-bridge` holds the VM
network's bridge, `vmdhcp-demo-agent-N` are the agent pods of the node simulator and
`vmdhcp-demo-vm-<name>` the VMs. The running demo is recorded in /run/vmdhcp-demo.json (its
pid, that pid's start time and its work folder); only one demo runs at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tests.netns.lab import (
    ETC_NETNS,
    Lab,
    LabError,
    Netns,
    _delete_namespace,
    _proc_start_time,
    is_root,
)

NS_PREFIX = "vmdhcp-demo-"
HUB = f"{NS_PREFIX}bridge"
STATE = Path("/run/vmdhcp-demo.json")
REPO = Path(__file__).resolve().parents[1]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- stopping on signals ----------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind, cleaning up on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """From `arm()` on, the first SIGINT, SIGTERM or SIGHUP raises `Interrupted` in the main
    thread. Later ones, and every one after `disarm()`, are only noted: the cleanup that
    follows must run to its end (closing a terminal sends SIGHUP after a Ctrl-C, a supervisor
    SIGTERM to the whole process group)."""

    def __init__(self) -> None:
        self.armed = False
        self.received: int | None = None

    def arm(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._handle)
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False
            raise Interrupted(signum)


# -- the running demo ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    """The demo recorded in STATE."""

    pid: int
    started: str
    work: Path

    @property
    def kubeconfig(self) -> Path:
        return self.work / "k8s" / "admin.kubeconfig"

    def alive(self) -> bool:
        return _proc_start_time(self.pid) == self.started


def running() -> Running | None:
    """The demo recorded in STATE (maybe dead), or None."""
    try:
        data = json.loads(STATE.read_text())
        return Running(int(data["pid"]), str(data["started"]), Path(data["work"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(work: Path) -> None:
    """Record this process as the running demo, working in `work`."""
    me = os.getpid()
    STATE.write_text(json.dumps({"pid": me, "started": _proc_start_time(me), "work": str(work)}))


def forget() -> None:
    """Remove the record, if it is this process's."""
    mine = running()
    if mine is not None and mine.pid == os.getpid():
        STATE.unlink(missing_ok=True)


def demo_namespaces() -> list[str]:
    """The demo's network namespaces (and /etc/netns folders of ones already gone)."""
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    if ETC_NETNS.is_dir():
        names |= {entry.name for entry in ETC_NETNS.iterdir()}
    return sorted(name for name in names if name.startswith(NS_PREFIX))


def processes_mentioning(text: str) -> list[int]:
    """PIDs of the processes whose command line contains `text` (a demo's work folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="ignore"
            ):
                found.append(int(entry.name))
    return found


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _is_running(pid)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sweep(stale: Running) -> None:
    """Clean up after a demo that died without doing so: the processes that name its work
    folder (API server, etcd, controller, webhook, agents, DHCP clients), its namespaces,
    its work folder (keys included) and its record."""
    stop_pids(processes_mentioning(str(stale.work)))
    for name in reversed(demo_namespaces()):  # vm-… and agent-… before the bridge
        if name != HUB:
            _delete_namespace(name)
    _delete_namespace(HUB)
    shutil.rmtree(stale.work, ignore_errors=True)
    STATE.unlink(missing_ok=True)


def prune_to_logs(work: Path) -> None:
    """Keep only the *.log files of `work` (after a failure): no keys, no etcd data."""
    for path in sorted(work.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or (path.is_file() and path.suffix != ".log"):
            path.unlink(missing_ok=True)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


# -- namespaces with readable names ---------------------------------------------------------


class DemoLab(Lab):
    """A `Lab` of one bridge in namespace `vmdhcp-demo-bridge`, agent pod namespaces
    `vmdhcp-demo-agent-N` (the node simulator's `add_client`) and VM namespaces
    `vmdhcp-demo-vm-<name>` (`vm`). Closing it also removes the VMs another process added
    (`make demo-vm`)."""

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.workdir = work / "netns"
        self.hub = HUB

    def open(self) -> None:
        if not is_root():
            raise LabError("the demo needs root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._add_namespace(self.hub)
            self._hub_run("ip link add br0 type bridge && ip link set br0 up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for name in demo_namespaces():
            if name not in self._created and name != HUB:
                _delete_namespace(name)
        super().close()

    def add_client(self, mac: str | None = None, iface: str = "eth0") -> Netns:
        """An agent pod's namespace (what the node simulator asks for)."""
        self._ports += 1
        return self._add_node(f"{NS_PREFIX}agent-{self._ports}", iface, f"a{self._ports}", mac)

    def vm(self, name: str, mac: str) -> Netns:
        """VM `name`'s namespace on the bridge, its eth0 with `mac`; made when missing."""
        namespace = f"{NS_PREFIX}vm-{name}"
        workdir = self.workdir / namespace
        if namespace in demo_namespaces():
            return Netns(namespace, "eth0", _mac_of(namespace, "eth0"), workdir)
        port = "v" + hashlib.sha256(name.encode()).hexdigest()[:10]  # 15 characters at most
        return self._add_node(namespace, "eth0", port, mac)


def _mac_of(namespace: str, iface: str) -> str:
    shown = subprocess.run(
        ["ip", "-n", namespace, "-j", "link", "show", iface],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return str(json.loads(shown)[0]["address"])

"""A network lab of Linux network namespaces for DHCP tests and benchmarks.

Topology (nothing in the host's root namespace is touched)::

    hub namespace  vd<id>h : bridge br0 ── s ──── eth1 (server namespace vd<id>s, serverIP/prefix)
                                       ├─ c1 ─── eth0 (client namespace vd<id>c1, its own MAC)
                                       ├─ c2 ─── eth0 (client namespace vd<id>c2)
                                       └─ ...

Every namespace gets lo up, IPv6 off (no DAD or router-solicitation noise) and its own
/etc/netns/NAME/resolv.conf (dhclient-script and friends would otherwise rewrite the host's).
A lab registers its owner process under /run/vmdhcp-netns/, so that `sweep_stale_labs` removes
only the labs of runs that died, never those of a run still going on.

Pieces, all usable on their own:
- `Lab`, `Netns`: namespaces, bridge, veth pairs, running commands inside (`ip netns exec`).
- `Proc`: a long-running process inside a namespace with its output in a log file.
- `PoolSpec`, `write_ippool`: the IPPool manifest (YAML or JSON) the agent reads.
- `Agent`: `vm-dhcp-agent --ippool-file` in the server namespace, ready when /readyz says so.
- `Dnsmasq`, `Kea`: the anchor servers, configured from the same `PoolSpec`.
- `Dhclient`, `Udhcpc`, `Dhcpcd`: real clients returning a `DhcpResult`; `dhcping`,
  `perfdhcp`; `craft` sends one hand-made DHCP message with scapy (tests/netns/craft.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "vd"
NAME_RE = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})(h|s|p\d*|c\d+)$")
REGISTRY = Path("/run/vmdhcp-netns")
ETC_NETNS = Path("/etc/netns")
REPO = Path(__file__).resolve().parents[2]
CRAFT = Path(__file__).resolve().parent / "craft.py"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CLIENT_BINARIES = ("ip", "ss", "dhclient", "udhcpc", "dhcpcd", "dhcping", "perfdhcp", "curl")
ANCHOR_BINARIES = ("dnsmasq", "kea-dhcp4", "perfdhcp", "taskset")

T = TypeVar("T")


class LabError(RuntimeError):
    """Something in the lab did not go as it must (the message carries the logs)."""


# --------------------------------------------------------------------------- environment


def is_root() -> bool:
    return os.geteuid() == 0


def missing_binaries(names: Iterable[str]) -> list[str]:
    return [name for name in names if shutil.which(name, path=CLEAN_PATH) is None]


def skip_reason(binaries: Iterable[str] = CLIENT_BINARIES) -> str | None:
    """Why the namespace lab cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespace tests need Linux"
    if not is_root():
        return "network namespace tests need root (ip netns, veth, bridge)"
    missing = missing_binaries(binaries)
    if missing:
        return (
            f"missing binaries: {', '.join(missing)} (scripts/install-debian-deps.sh installs them)"
        )
    return None


def agent_command() -> list[str]:
    """How to start the agent: $VMDHCP_AGENT, else the console script beside this Python."""
    override = os.environ.get("VMDHCP_AGENT")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "vm-dhcp-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "vmdhcp", "agent"]


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.02,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            raise LabError(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = text.splitlines()[-lines:]
    return f"--- {path.name} (last {len(kept)} lines) ---\n" + "\n".join(kept)


def _run(args: Sequence[str], timeout: float = 10.0, check: bool = True) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LabError(
            f"{shlex.join(args)} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
        )
    return done.stdout


# --------------------------------------------------------------------------- stale labs


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(lab_id: str) -> bool:
    try:
        pid_s, start = (REGISTRY / lab_id).read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid_s)) == start


def _kill_namespace_processes(name: str, grace: float = 2.0) -> None:
    """Stop every process left in namespace `name` (all of them were started by a lab)."""
    pids = [int(p) for p in _run(["ip", "netns", "pids", name], check=False).split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _delete_namespace(name: str) -> None:
    _kill_namespace_processes(name)
    _run(["ip", "netns", "delete", name], check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def sweep_stale_labs() -> list[str]:
    """Delete namespaces (and /etc/netns dirs) of labs whose owning process is gone."""
    names = {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line}
    if ETC_NETNS.is_dir():
        names |= {p.name for p in ETC_NETNS.iterdir()}
    removed = []
    for name in sorted(names):
        match = NAME_RE.match(name)
        if match is None or _owner_alive(match.group(1)):
            continue
        _delete_namespace(name)
        removed.append(name)
    if REGISTRY.is_dir():
        for entry in REGISTRY.iterdir():
            if not _owner_alive(entry.name):
                entry.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------- processes


class Proc:
    """A process started inside a namespace, output in `log`; `ip netns exec` execs it, so
    `pid` is the process itself (also through `taskset`)."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal it and wait; SIGKILL when it does not go in `timeout` (returns -9 then)."""
        if self.alive():
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            return -signal.SIGKILL

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)


# --------------------------------------------------------------------------- namespaces


@dataclasses.dataclass
class Netns:
    """One namespace of a lab, with its one interface towards the bridge."""

    name: str
    iface: str
    mac: str
    workdir: Path
    procs: list[Proc] = dataclasses.field(default_factory=list)

    def cmd(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self,
        args: Sequence[str],
        timeout: float = 10.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.cmd(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else clean_env(),
            input=input,
        )
        if check and done.returncode != 0:
            raise LabError(
                f"[{self.name}] {shlex.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def popen(self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                self.cmd(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else clean_env(),
                start_new_session=True,
            )
        proc = Proc(f"{self.name}:{Path(args[0]).name}", popen, log)
        self.procs.append(proc)
        return proc

    def ip(self, *args: str) -> str:
        return _run(["ip", "-n", self.name, *args])

    def set_address(self, interface: IPv4Interface) -> None:
        """What the agent pod's init container does: flush, then add serverIP/prefix."""
        self.ip("address", "flush", "dev", self.iface)
        self.ip("address", "add", str(interface), "dev", self.iface)

    def addresses(self) -> list[IPv4Interface]:
        data = json.loads(self.ip("-j", "-4", "address", "show", "dev", self.iface))
        return [
            IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in data
            for a in link.get("addr_info", [])
        ]

    def curl(self, url: str, timeout: float = 2.0) -> tuple[int, str]:
        """(HTTP status, body) of a GET from inside the namespace; status 0 if no answer."""
        done = self.run(
            ["curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", url],
            timeout=timeout + 5,
            check=False,
        )
        body, _, code = done.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body


def clean_env(**extra: str) -> dict[str, str]:
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    env.update(extra)
    return env


def _random_mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


class Lab:
    """A bridge in a hub namespace, a server namespace and any number of client namespaces.

    Use as a context manager: everything is torn down on exit, also after a failure.
    """

    def __init__(
        self,
        workdir: Path,
        network: IPv4Network | str = "10.77.0.0/24",
        server_ip: IPv4Address | str | None = None,
        server_iface: str = "eth1",
    ) -> None:
        self.network = IPv4Network(network)
        self.server_ip = IPv4Address(server_ip) if server_ip else self.network[2]
        self.server_iface = server_iface
        self.id = secrets.token_hex(3)
        self.workdir = workdir / f"lab-{self.id}"
        self.hub = f"{PREFIX}{self.id}h"
        self.server: Netns | None = None
        self.nodes: list[Netns] = []
        self._created: list[str] = []
        self._ports = 0

    # ---- lifecycle

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not is_root():
            raise LabError("the lab needs root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        REGISTRY.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        (REGISTRY / self.id).write_text(f"{me} {_proc_start_time(me)}\n")
        try:
            self._add_namespace(self.hub)
            self._hub_run("ip link add br0 type bridge && ip link set br0 up")
            self.server = self._add_node(f"{PREFIX}{self.id}s", self.server_iface, "s", mac=None)
            self.server.set_address(IPv4Interface(f"{self.server_ip}/{self.network.prefixlen}"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # our own processes first (waited for, so no zombies), then whatever else is left in
        # each namespace; leaves before the hub
        for node in self.nodes:
            for proc in node.procs:
                proc.stop(signal.SIGKILL, timeout=5)
        for name in reversed(self._created):
            _delete_namespace(name)
        self._created.clear()
        (REGISTRY / self.id).unlink(missing_ok=True)

    # ---- building

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._created.append(name)
        etc = ETC_NETNS / name
        etc.mkdir(parents=True, exist_ok=True)
        # nothing listens there: a lookup fails at once instead of leaving the lab
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        _run(
            [
                "ip", "netns", "exec", name, "sh", "-c",
                "ip link set lo up;"
                " for k in all default; do"
                "  echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6 2>/dev/null;"
                " done; true",
            ]
        )  # fmt: skip

    def _hub_run(self, script: str) -> None:
        _run(["ip", "netns", "exec", self.hub, "sh", "-c", script])

    def _add_node(self, name: str, iface: str, port: str, mac: str | None) -> Netns:
        self._add_namespace(name)
        mac = (mac or _random_mac()).lower()
        _run(
            ["ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", iface,
             "netns", name, "address", mac]
        )  # fmt: skip
        self._hub_run(f"ip link set {port} master br0 && ip link set {port} up")
        _run(["ip", "-n", name, "link", "set", iface, "up"])
        node = Netns(name=name, iface=iface, mac=mac, workdir=self.workdir / name)
        node.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes.append(node)
        return node

    def add_client(self, mac: str | None = None, iface: str = "eth0") -> Netns:
        """A new client namespace on the bridge whose interface carries `mac`."""
        self._ports += 1
        return self._add_node(f"{PREFIX}{self.id}c{self._ports}", iface, f"c{self._ports}", mac)

    def add_relay(self, address: IPv4Address | str, iface: str = "eth0") -> Netns:
        """A namespace with an address in the subnet, for perfdhcp (a relay, not a client)."""
        self._ports += 1
        node = self._add_node(f"{PREFIX}{self.id}p{self._ports}", iface, f"p{self._ports}", None)
        node.set_address(IPv4Interface(f"{address}/{self.network.prefixlen}"))
        return node

    @property
    def srv(self) -> Netns:
        if self.server is None:
            raise LabError("lab is not open")
        return self.server


# --------------------------------------------------------------------------- pool


@dataclasses.dataclass
class PoolSpec:
    """What a DHCP server must hand out: the IPPool's ipv4Config plus its allocated map."""

    network: IPv4Network
    server_ip: IPv4Address
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain_name: str | None = None
    domain_search: tuple[str, ...] = ()
    ntp: tuple[str, ...] = ()
    lease_time: int = 3600
    start: IPv4Address | None = None
    end: IPv4Address | None = None
    exclude: tuple[IPv4Address, ...] = ()
    allocated: dict[IPv4Address, str] = dataclasses.field(default_factory=dict)
    name: str = "lab-pool"
    namespace: str = "default"
    network_name: str = "default/lab-net"

    def mac_to_ip(self) -> dict[str, IPv4Address]:
        return {mac.lower(): ip for ip, mac in self.allocated.items()}

    def manifest(self) -> dict[str, Any]:
        hosts = list(self.network.hosts())
        start = self.start or hosts[0]
        end = self.end or hosts[-1]
        cfg: dict[str, Any] = {
            "serverIP": str(self.server_ip),
            "cidr": str(self.network),
            "pool": {"start": str(start), "end": str(end)},
        }
        if self.exclude:
            cfg["pool"]["exclude"] = [str(a) for a in self.exclude]
        if self.router:
            cfg["router"] = str(self.router)
        if self.dns:
            cfg["dns"] = [str(a) for a in self.dns]
        if self.domain_name:
            cfg["domainName"] = self.domain_name
        if self.domain_search:
            cfg["domainSearch"] = list(self.domain_search)
        if self.ntp:
            cfg["ntp"] = list(self.ntp)
        if self.lease_time:
            cfg["leaseTime"] = self.lease_time
        allocated: dict[str, str] = {}
        if start <= self.server_ip <= end:
            allocated[str(self.server_ip)] = "RESERVED"
        if self.router and start <= self.router <= end:
            allocated[str(self.router)] = "RESERVED"
        for ip in self.exclude:
            allocated[str(ip)] = "EXCLUDED"
        allocated.update({str(ip): mac for ip, mac in self.allocated.items()})
        used = sum(1 for v in allocated.values() if v not in ("EXCLUDED", "RESERVED"))
        size = int(end) - int(start) + 1
        return {
            "apiVersion": "network.harvesterhci.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"ipv4Config": cfg, "networkName": self.network_name},
            "status": {
                "ipv4": {"allocated": allocated, "used": used, "available": size - used},
                "conditions": [{"type": "CacheReady", "status": "True"}],
            },
        }


def write_ippool(path: Path, spec: PoolSpec, fmt: str = "yaml") -> Path:
    """Write the IPPool manifest atomically (temp file + rename), as YAML or JSON."""
    manifest = spec.manifest()
    text = (
        json.dumps(manifest, indent=2)
        if fmt == "json"
        else yaml.safe_dump(manifest, sort_keys=False)
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def perfdhcp_macs(base: str, count: int) -> list[str]:
    """The MACs perfdhcp `-b mac=BASE -R COUNT` draws: for r in [0, COUNT), BASE + r added
    octet-wise from the last octet, each octet wrapping on its own (no carry)."""
    octets = [int(x, 16) for x in base.split(":")]
    macs = []
    for r in range(count):
        mac = list(octets)
        value = r
        for i in range(len(mac) - 1, -1, -1):
            mac[i] = (mac[i] + value) & 0xFF
            if value < 256:
                break
            value >>= 8
        macs.append(":".join(f"{b:02x}" for b in mac))
    return macs


# --------------------------------------------------------------------------- servers


class Agent:
    """`vm-dhcp-agent --ippool-file` in the server namespace."""

    def __init__(
        self,
        ns: Netns,
        pool_file: Path,
        port: int = 8080,
        extra_args: Sequence[str] = ("--enable-cache-dump-api",),
        cpu: int | None = None,
        log: Path | None = None,
    ) -> None:
        self.ns = ns
        self.pool_file = pool_file
        self.port = port
        self.extra_args = list(extra_args)
        self.cpu = cpu
        self.log = log or ns.workdir / f"agent-{port}.log"
        self.proc: Proc | None = None
        self.started_at = 0.0
        self.ready_after = 0.0

    def argv(self) -> list[str]:
        args = [
            *agent_command(),
            "--ippool-file", str(self.pool_file),
            "--nic", self.ns.iface,
            "--http-address", "0.0.0.0",
            "--http-port", str(self.port),
            *self.extra_args,
        ]  # fmt: skip
        return ["taskset", "-c", str(self.cpu), *args] if self.cpu is not None else args

    def start(self, ready_timeout: float = 15.0) -> Self:
        self.started_at = time.monotonic()
        self.proc = self.ns.popen(self.argv(), self.log, env=clean_env(PYTHONUNBUFFERED="1"))
        self.wait_ready(ready_timeout)
        self.ready_after = time.monotonic() - self.started_at
        return self

    def wait_ready(self, timeout: float) -> None:
        def probe() -> bool:
            if self.proc is not None and not self.proc.alive():
                raise LabError(f"agent exited {self.proc.popen.returncode}\n{self.proc.tail()}")
            return self.get("/readyz", timeout=1.0)[0] == 200

        wait_for("the agent's /readyz", probe, timeout, interval=0.01, details=self.tail)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError("agent not started")
        return self.proc.pid

    def tail(self) -> str:
        return self.proc.tail() if self.proc else "(agent not started)"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        return self.ns.curl(f"http://127.0.0.1:{self.port}{path}", timeout)

    def get_json(self, path: str) -> Any:
        code, body = self.get(path)
        if code != 200:
            raise LabError(f"GET {path}: HTTP {code} {body[:200]}\n{self.tail()}")
        return json.loads(body)

    def leases(self) -> dict[str, dict[str, Any]]:
        """/leases with the inner JSON strings decoded: {mac: {ServerIP, ClientIP, ...}}."""
        raw = self.get_json("/leases")
        return {mac: json.loads(v) if isinstance(v, str) else v for mac, v in raw.items()}

    def metrics(self) -> str:
        code, body = self.get("/metrics")
        if code != 200:
            raise LabError(f"GET /metrics: HTTP {code}\n{self.tail()}")
        return body

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        return self.proc.stop(sig, timeout) if self.proc else 0


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0.0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class Dnsmasq:
    """dnsmasq as an anchor: DHCP only, static reservations, no lease file writes."""

    def __init__(self, ns: Netns, spec: PoolSpec, cpu: int | None = None) -> None:
        self.ns = ns
        self.spec = spec
        self.cpu = cpu
        self.conf = ns.workdir / "dnsmasq.conf"
        self.log = ns.workdir / "dnsmasq.log"
        self.proc: Proc | None = None

    def config(self) -> str:
        s = self.spec
        lines = [
            "port=0",
            f"interface={self.ns.iface}",
            "bind-interfaces",
            f"dhcp-range={s.network.network_address},static,{s.network.netmask},{s.lease_time}",
            "dhcp-authoritative",
            "leasefile-ro",
            "no-ping",
            "dhcp-lease-max=100000",
        ]
        if s.router:
            lines.append(f"dhcp-option=option:router,{s.router}")
        if s.dns:
            lines.append("dhcp-option=option:dns-server," + ",".join(map(str, s.dns)))
        if s.domain_name:
            lines.append(f"dhcp-option=option:domain-name,{s.domain_name}")
        if s.domain_search:
            lines.append("dhcp-option=option:domain-search," + ",".join(s.domain_search))
        if s.ntp:
            lines.append("dhcp-option=option:ntp-server," + ",".join(s.ntp))
        lines += [f"dhcp-host={mac},{ip}" for ip, mac in s.allocated.items()]
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        self.conf.write_text(self.config())
        argv = ["dnsmasq", "-k", "-C", str(self.conf), "--pid-file=", "--log-facility=-"]
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        self.proc = self.ns.popen(argv, self.log)
        wait_for(
            "dnsmasq to bind port 67",
            lambda: udp_port_bound(self.ns, 67) or self._check(),
            10.0,
            details=lambda: tail(self.log),
        )
        return self

    def _check(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise LabError(f"dnsmasq exited\n{tail(self.log)}")
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        return self.proc.stop() if self.proc else 0


class Kea:
    """ISC kea-dhcp4 as an anchor: memfile without persistence, host reservations."""

    def __init__(
        self, ns: Netns, spec: PoolSpec, cpu: int | None = None, socket_type: str = "raw"
    ) -> None:
        self.ns = ns
        self.spec = spec
        self.cpu = cpu
        self.socket_type = socket_type
        self.dir = ns.workdir / "kea"
        self.conf = self.dir / "kea-dhcp4.json"
        self.log = self.dir / "kea.log"
        self.proc: Proc | None = None

    def config(self) -> dict[str, Any]:
        s = self.spec
        options: list[dict[str, Any]] = []
        if s.router:
            options.append({"name": "routers", "data": str(s.router)})
        if s.dns:
            options.append({"name": "domain-name-servers", "data": ", ".join(map(str, s.dns))})
        if s.domain_name:
            options.append({"name": "domain-name", "data": s.domain_name})
        if s.domain_search:
            options.append({"name": "domain-search", "data": ", ".join(s.domain_search)})
        if s.ntp:
            options.append({"name": "ntp-servers", "data": ", ".join(s.ntp)})
        return {
            "Dhcp4": {
                "interfaces-config": {
                    "interfaces": [self.ns.iface],
                    "dhcp-socket-type": self.socket_type,
                },
                "lease-database": {"type": "memfile", "persist": False},
                "valid-lifetime": s.lease_time,
                "host-reservation-identifiers": ["hw-address"],
                "reservations-global": False,
                "reservations-in-subnet": True,
                "reservations-out-of-pool": True,
                "authoritative": True,
                "subnet4": [
                    {
                        "id": 1,
                        "subnet": str(s.network),
                        "option-data": options,
                        "reservations": [
                            {"hw-address": mac.lower(), "ip-address": str(ip)}
                            for ip, mac in s.allocated.items()
                        ],
                    }
                ],
                "loggers": [
                    {
                        "name": "kea-dhcp4",
                        "output_options": [{"output": "stdout"}],
                        "severity": "WARN",
                    }
                ],
            }
        }

    def start(self) -> Self:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(json.dumps(self.config(), indent=1))
        argv = ["kea-dhcp4", "-c", str(self.conf)]
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        env = clean_env(
            KEA_LOCKFILE_DIR=str(self.dir),
            KEA_PIDFILE_DIR=str(self.dir),
            KEA_LOGGER_DESTINATION="stdout",
        )
        self.proc = self.ns.popen(argv, self.log, env=env)
        wait_for(
            "kea-dhcp4 to open its sockets",
            lambda: udp_port_bound(self.ns, 67) or self._check(),
            15.0,
            details=lambda: tail(self.log),
        )
        return self

    def _check(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise LabError(f"kea-dhcp4 exited\n{tail(self.log)}")
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        return self.proc.stop() if self.proc else 0


def udp_port_bound(ns: Netns, port: int) -> bool:
    out = ns.run(["ss", "-H", "-uln", f"sport = :{port}"], check=False).stdout
    return bool(out.strip())


# --------------------------------------------------------------------------- clients


@dataclasses.dataclass(frozen=True)
class DhcpResult:
    """What a client was given, from the environment its hook script received."""

    client: str
    reason: str
    ip: IPv4Address | None
    mask: IPv4Address | None
    routers: tuple[IPv4Address, ...]
    dns: tuple[IPv4Address, ...]
    domain: str | None
    search: tuple[str, ...]
    ntp: tuple[IPv4Address, ...]
    lease_time: int | None
    server_id: IPv4Address | None
    env: dict[str, str]

    @property
    def prefix(self) -> int | None:
        return IPv4Network(f"0.0.0.0/{self.mask}").prefixlen if self.mask else None


class ClientFailed(LabError):
    pass


def _append(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write(text)


def _addrs(value: str | None) -> tuple[IPv4Address, ...]:
    return tuple(IPv4Address(v) for v in (value or "").split())


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(v.rstrip(".") for v in (value or "").split())


def _opt_int(value: str | None) -> int | None:
    return int(value) if value else None


def _opt_addr(value: str | None) -> IPv4Address | None:
    return IPv4Address(value) if value else None


# The hook scripts: dump the environment (NUL-separated) to DIR/<ns clock>.<event>.env, then do the
# address work the client's real script would, so that later unicast (RENEW, RELEASE) works.
# Each hook writes its environment under a hidden name and renames it into place: the
# harness polls for "*.env" files and must never read one half written.
_DHCLIENT_HOOK = """#!/bin/sh
env -0 > "{dir}/.partial.$$" && mv "{dir}/.partial.$$" "{dir}/$(date +%s%N).$reason.env"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 address flush dev "$interface"
    ip address add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 address flush dev "$interface" ;;
esac
exit 0
"""

_UDHCPC_HOOK = """#!/bin/sh
env -0 > "{dir}/.partial.$$" && mv "{dir}/.partial.$$" "{dir}/$(date +%s%N).$1.env"
case "$1" in
  deconfig) ip -4 address flush dev "$interface" ;;
  bound|renew)
    ip -4 address flush dev "$interface"
    ip address add "$ip/$mask" dev "$interface" ;;
esac
exit 0
"""

_DHCPCD_HOOK = """#!/bin/sh
env -0 > "{dir}/.partial.$$" && mv "{dir}/.partial.$$" "{dir}/$(date +%s%N).$reason.env"
exit 0
"""


class _HookClient:
    kind = ""
    hook_template = ""
    bound_events: tuple[str, ...] = ()

    def __init__(self, ns: Netns, timeout: float = 5.0) -> None:
        self.ns = ns
        self.timeout = timeout
        self.dir = ns.workdir / self.kind
        self.events = self.dir / "events"
        self.events.mkdir(parents=True, exist_ok=True)
        self.hook = self.dir / "hook.sh"
        self.hook.write_text(self.hook_template.format(dir=self.events))
        self.hook.chmod(0o755)
        self.log = self.dir / f"{self.kind}.log"

    def event_files(self) -> list[Path]:
        return sorted(self.events.glob("*.env"))

    def events_seen(self) -> list[str]:
        return [p.name.split(".")[1] for p in self.event_files()]

    def last_result(self, after: int = 0) -> DhcpResult | None:
        """The newest bound-type event among those after the first `after` events."""
        for path in reversed(self.event_files()[after:]):
            event = path.name.split(".")[1]
            if event in self.bound_events:
                env = dict(
                    item.split("=", 1) for item in path.read_text().split("\0") if "=" in item
                )
                return self.parse(event, env)
        return None

    def parse(self, event: str, env: dict[str, str]) -> DhcpResult:
        raise NotImplementedError

    def failure(self, what: str, output: str) -> ClientFailed:
        return ClientFailed(
            f"{self.kind} in {self.ns.name} ({self.ns.mac}): {what}\n"
            f"events: {self.events_seen()}\n--- client output ---\n{output}"
        )


class Dhclient(_HookClient):
    """ISC dhclient: `-1` (one try), own lease/pid/config files, hook script via `-sf`."""

    kind = "dhclient"
    hook_template = _DHCLIENT_HOOK
    bound_events = ("BOUND", "RENEW", "REBIND", "REBOOT")

    def __init__(self, ns: Netns, timeout: float = 5.0) -> None:
        super().__init__(ns, timeout)
        self.lease_file = self.dir / "dhclient.leases"
        self.pid_file = self.dir / "dhclient.pid"
        self.conf = self.dir / "dhclient.conf"
        self.conf.write_text(
            f"timeout {int(timeout)};\nretry 1;\ninitial-interval 1;\n"
            "request subnet-mask, broadcast-address, routers, domain-name-servers,"
            " domain-name, domain-search, ntp-servers, dhcp-lease-time;\n"
        )

    def _argv(self, *flags: str) -> list[str]:
        return [
            "dhclient", *flags, "-v", "-4",
            "-cf", str(self.conf), "-lf", str(self.lease_file), "-pf", str(self.pid_file),
            "-sf", str(self.hook), self.ns.iface,
        ]  # fmt: skip

    def acquire(self) -> DhcpResult:
        """One DORA (or INIT-REBOOT when the lease file holds a lease); dhclient then keeps
        running in the background until `stop` or `release`."""
        before = len(self.event_files())
        done = self.ns.run(self._argv("-1"), timeout=self.timeout + 10, check=False)
        _append(self.log, done.stdout + done.stderr)
        result = self.last_result(before)
        if done.returncode != 0 or result is None:
            raise self.failure(f"no lease (exit {done.returncode})", done.stdout + done.stderr)
        return result

    def release(self) -> str:
        """`dhclient -r`: sends DHCPRELEASE and stops the running dhclient."""
        done = self.ns.run(self._argv("-r"), timeout=self.timeout + 10, check=False)
        if done.returncode != 0:
            raise self.failure(f"release failed (exit {done.returncode})", done.stderr)
        return done.stdout + done.stderr

    def stop(self) -> None:
        """`dhclient -x`: stop the running dhclient without releasing (keeps the lease)."""
        self.ns.run(self._argv("-x"), timeout=self.timeout + 10, check=False)

    def parse(self, event: str, env: dict[str, str]) -> DhcpResult:
        return DhcpResult(
            client=self.kind,
            reason=event,
            ip=_opt_addr(env.get("new_ip_address")),
            mask=_opt_addr(env.get("new_subnet_mask")),
            routers=_addrs(env.get("new_routers")),
            dns=_addrs(env.get("new_domain_name_servers")),
            domain=env.get("new_domain_name"),
            search=_names(env.get("new_domain_search")),
            ntp=_addrs(env.get("new_ntp_servers")),
            lease_time=_opt_int(env.get("new_dhcp_lease_time")),
            server_id=_opt_addr(env.get("new_dhcp_server_identifier")),
            env=env,
        )


class Udhcpc(_HookClient):
    """busybox udhcpc; `acquire` is one-shot (-q -n), `start` keeps it running for `renew`."""

    kind = "udhcpc"
    hook_template = _UDHCPC_HOOK
    bound_events = ("bound", "renew")

    def __init__(self, ns: Netns, timeout: float = 5.0, tries: int = 3) -> None:
        super().__init__(ns, timeout)
        self.tries = tries
        self.proc: Proc | None = None

    def _argv(self, *flags: str) -> list[str]:
        pause = max(1, int(self.timeout / self.tries))
        return [
            "udhcpc", "-f", *flags, "-i", self.ns.iface, "-s", str(self.hook),
            "-O", "ntpsrv", "-O", "search", "-O", "lease",
            "-t", str(self.tries), "-T", str(pause), "-A", "1",
        ]  # fmt: skip

    def acquire(self) -> DhcpResult:
        before = len(self.event_files())
        done = self.ns.run(self._argv("-q", "-n"), timeout=self.timeout + 10, check=False)
        _append(self.log, done.stdout + done.stderr)
        result = self.last_result(before)
        if done.returncode != 0 or result is None:
            raise self.failure(f"no lease (exit {done.returncode})", done.stdout + done.stderr)
        return result

    def start(self) -> DhcpResult:
        """Run in the foreground process (as a daemon would) until `stop`; returns the lease."""
        before = len(self.event_files())
        self.proc = self.ns.popen(self._argv("-n"), self.log)
        return self._wait_result(before, "the first lease")

    def renew(self) -> DhcpResult:
        """SIGUSR1: udhcpc renews (unicast REQUEST with ciaddr to the server)."""
        if self.proc is None:
            raise LabError("udhcpc not started")
        before = len(self.event_files())
        self.proc.send_signal(signal.SIGUSR1)
        return self._wait_result(before, "the renewal")

    def _wait_result(self, before: int, what: str) -> DhcpResult:
        def probe() -> DhcpResult | None:
            if self.proc is not None and not self.proc.alive():
                raise self.failure("exited", self.proc.output())
            return self.last_result(before)

        return wait_for(
            f"udhcpc in {self.ns.name}: {what}",
            probe,
            self.timeout + 2,
            details=lambda: self.proc.tail() if self.proc else "",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def parse(self, event: str, env: dict[str, str]) -> DhcpResult:
        return DhcpResult(
            client=self.kind,
            reason=event,
            ip=_opt_addr(env.get("ip")),
            mask=_opt_addr(env.get("subnet")),
            routers=_addrs(env.get("router")),
            dns=_addrs(env.get("dns")),
            domain=env.get("domain"),
            search=_names(env.get("search")),
            ntp=_addrs(env.get("ntpsrv")),
            lease_time=_opt_int(env.get("lease")),
            server_id=_opt_addr(env.get("serverid")),
            env=env,
        )


class Dhcpcd(_HookClient):
    """dhcpcd one-shot (-1 -4 -B); /var/lib/dhcpcd and /run/dhcpcd are bind-mounted to
    per-client directories (they are shared by all namespaces otherwise: a stale lease makes
    dhcpcd INIT-REBOOT, a stale pid file makes it refuse to start)."""

    kind = "dhcpcd"
    hook_template = _DHCPCD_HOOK
    bound_events = ("BOUND", "RENEW", "REBIND", "REBOOT")

    def __init__(self, ns: Netns, timeout: float = 5.0) -> None:
        super().__init__(ns, timeout)
        self.db = self.dir / "db"
        self.rundir = self.dir / "run"
        self.db.mkdir(exist_ok=True)
        self.rundir.mkdir(exist_ok=True)
        self.conf = self.dir / "dhcpcd.conf"
        self.conf.write_text(
            "option subnet_mask, routers, domain_name_servers, domain_name, domain_search,"
            " ntp_servers, dhcp_lease_time\n"
            "require dhcp_server_identifier\nnoipv4ll\nnoarp\nnohook resolv.conf\n"
        )
        for target in (Path("/var/lib/dhcpcd"), Path("/run/dhcpcd")):
            target.mkdir(parents=True, exist_ok=True)  # mount points for the bind mounts

    def acquire(self) -> DhcpResult:
        before = len(self.event_files())
        inner = (
            f"mount --bind {shlex.quote(str(self.db))} /var/lib/dhcpcd"
            f" && mount --bind {shlex.quote(str(self.rundir))} /run/dhcpcd"
            f" && exec dhcpcd -f {shlex.quote(str(self.conf))} -c {shlex.quote(str(self.hook))}"
            f" -1 -4 -B -t {int(self.timeout)} {self.ns.iface}"
        )
        # `ip netns exec` gives the command a private mount namespace: the binds stay there
        done = self.ns.run(["sh", "-c", inner], timeout=self.timeout + 10, check=False)
        _append(self.log, done.stdout + done.stderr)
        result = self.last_result(before)
        if done.returncode != 0 or result is None:
            raise self.failure(f"no lease (exit {done.returncode})", done.stdout + done.stderr)
        return result

    def parse(self, event: str, env: dict[str, str]) -> DhcpResult:
        return DhcpResult(
            client=self.kind,
            reason=event,
            ip=_opt_addr(env.get("new_ip_address")),
            mask=_opt_addr(env.get("new_subnet_mask")),
            routers=_addrs(env.get("new_routers")),
            dns=_addrs(env.get("new_domain_name_servers")),
            domain=env.get("new_domain_name"),
            search=_names(env.get("new_domain_search")),
            ntp=_addrs(env.get("new_ntp_servers")),
            lease_time=_opt_int(env.get("new_dhcp_lease_time")),
            server_id=_opt_addr(env.get("new_dhcp_server_identifier")),
            env=env,
        )


CLIENT_KINDS: dict[str, type[Dhclient] | type[Udhcpc] | type[Dhcpcd]] = {
    "dhclient": Dhclient,
    "udhcpc": Udhcpc,
    "dhcpcd": Dhcpcd,
}


def dhcping(
    ns: Netns,
    client_ip: IPv4Address,
    server_ip: IPv4Address,
    mac: str | None = None,
    inform: bool = False,
    timeout: int = 3,
) -> subprocess.CompletedProcess[str]:
    """dhcping: a REQUEST (or INFORM with `inform`) with ciaddr=client_ip, unicast to the
    server from client_ip:68, as a RENEWING client sends it. Exit 0 when answered."""
    argv = ["dhcping", "-c", str(client_ip), "-s", str(server_ip), "-h", mac or ns.mac]
    argv += ["-t", str(timeout), "-v"]
    if inform:
        argv.append("-i")
    return ns.run(argv, timeout=timeout + 10, check=False)


def craft(ns: Netns, timeout: float = 2.0, **fields: Any) -> list[dict[str, Any]]:
    """Send one hand-made DHCP message from `ns` (tests/netns/craft.py, scapy) and return
    the replies to it that arrived within `timeout` (decoded: see craft.py)."""
    spec = {"iface": ns.iface, "mac": ns.mac, "timeout": timeout, **fields}
    done = ns.run(
        [sys.executable, str(CRAFT)],
        input=json.dumps(spec, default=str),
        timeout=timeout + 30,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"craft.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    replies: list[dict[str, Any]] = json.loads(done.stdout)
    return replies


# --------------------------------------------------------------------------- perfdhcp


@dataclasses.dataclass
class PerfResult:
    """perfdhcp's final report, plus per-exchange delays when run with `-x t`."""

    sent: dict[str, int]
    received: dict[str, int]
    drops: dict[str, int]
    delays_ms: dict[str, list[float]]
    avg_delay_ms: dict[str, float]
    exit_code: int
    output: str
    seconds: float

    @property
    def completed(self) -> int:
        """Completed DORA exchanges: ACKs received (RA exchanges)."""
        return self.received.get("RA", 0)

    @property
    def offered(self) -> int:
        return self.sent.get("DO", 0)

    def drop_percent(self) -> float:
        return 100.0 * (1 - self.completed / self.offered) if self.offered else 100.0


_PERF_SECTION = re.compile(r"^\*+(Statistics|Timestamps) for(?: packets)?: ([A-Z-]+)\*+$")
_PERF_FIELD = re.compile(r"^(sent packets|received packets|drops|avg delay): ([\d.]+)")
_PERF_STAMPS = re.compile(r"^sent / received: ([\d.]+) / ([\d.]+)$")


def parse_perfdhcp(output: str) -> PerfResult:
    """perfdhcp's final report: counts and average delay per exchange ("DO" for
    DISCOVER-OFFER, "RA" for REQUEST-ACK) and, with `-x t`, each exchange's delay in ms."""
    result = PerfResult({}, {}, {}, {}, {}, 0, output, 0.0)
    exchange = ""
    stamps = False
    for line in output.splitlines():
        stripped = line.strip()
        if m := _PERF_SECTION.match(stripped):
            exchange = "DO" if m.group(2) == "DISCOVER-OFFER" else "RA"
            stamps = m.group(1) == "Timestamps"
            continue
        if stamps and (m := _PERF_STAMPS.match(stripped)):
            delay = (float(m.group(2)) - float(m.group(1))) * 1000.0
            result.delays_ms.setdefault(exchange, []).append(delay)
        elif m := _PERF_FIELD.match(stripped):
            key, value = m.group(1), m.group(2)
            if key == "sent packets":
                result.sent[exchange] = int(value)
            elif key == "received packets":
                result.received[exchange] = int(value)
            elif key == "drops":
                result.drops[exchange] = int(value)
            else:
                result.avg_delay_ms[exchange] = float(value)
    return result


def perfdhcp(
    ns: Netns,
    server_ip: IPv4Address,
    local_ip: IPv4Address,
    base_mac: str,
    clients: int,
    rate: int | None = None,
    period: int | None = None,
    num: int | None = None,
    cpu: int | None = None,
    timers: bool = False,
    drop_time: float = 1.0,
    exit_wait: float = 0.5,
    extra: Sequence[str] = (),
    log: Path | None = None,
) -> PerfResult:
    """perfdhcp as a relay (giaddr = local_ip, sent from port 67) towards server_ip."""
    argv = ["perfdhcp", "-4", "-l", str(local_ip), "-b", f"mac={base_mac}", "-R", str(clients)]
    argv += ["-d", str(drop_time), "-W", str(int(exit_wait * 1_000_000))]
    if rate is not None:
        argv += ["-r", str(rate)]
    if period is not None:
        argv += ["-p", str(period)]
    if num is not None:
        argv += ["-n", str(num)]
    argv += ["-x", "et" if timers else "e", *extra, str(server_ip)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    started = time.monotonic()
    budget = (period or 0) + (num or 0) / max(rate or 1000, 1) + 60
    done = ns.run(argv, timeout=budget, check=False)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if log is not None:
        log.write_text(shlex.join(argv) + "\n" + output)
    if done.returncode not in (0, 3):
        raise LabError(f"perfdhcp exited {done.returncode}:\n{output[-3000:]}")
    result = parse_perfdhcp(output)
    result.exit_code = done.returncode
    result.seconds = seconds
    return result


@contextlib.contextmanager
def lab(workdir: Path, **kwargs: Any) -> Iterator[Lab]:
    """`with lab(tmp_path) as l:` — a `Lab`, always torn down."""
    instance = Lab(workdir, **kwargs)
    instance.open()
    try:
        yield instance
    finally:
        instance.close()

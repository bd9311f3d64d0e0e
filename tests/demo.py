"""`make demo`: the whole system on one machine, a VM getting its address.

Starts the test API server (../shared/k8s-test-env), the webhook, the controller and the
node simulator (tests/nodesim/), applies the seed's NAD `default/net-48`, the seed's
IPPool and a VirtualMachine `test-vm` with MAC fa:cf:8e:50:82:fc, runs dhclient in a
network namespace with that MAC, and prints what a user wants to see.

Everything it started (processes, network namespaces, its work folder with the cluster's
keys) is removed after a normal run and on Ctrl-C, SIGTERM or SIGHUP, to it or to its
process group; after a failure only the logs are kept. `DEMO_KEEP=1 make demo` keeps it
running until then, and prints how to look around; `make demo-vm NAME=… MAC=…`
(tests/demo_vm.py) adds a VM to the running demo, or runs a VM's DHCP client again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests import demokit
from tests.agentproc import AgentProcess, free_port, wait_for
from tests.cluster import (
    Cluster,
    create_namespace,
    prepare_cluster,
    start_cluster,
    stop_cluster,
    toolkit_path,
)
from tests.integration.test_end_to_end import grant_agent
from tests.netns.lab import Dhclient, DhcpResult, Netns, skip_reason
from tests.nodesim import NodeSimulator

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
AGENTS = "harvester-system"
MAC = "fa:cf:8e:50:82:fc"
NETWORK = "default/net-48"
AGENT_POD = "default-net-48-agent"
BIN = Path(sys.executable).parent
UPSTREAM_METRICS = ("vmdhcpcontroller_ippool_", "vmdhcpcontroller_vmnetcfg_")
#: What keep mode suggests for a second VM (it gets 192.168.48.83).
EXAMPLE_VM = ("vm-2", "52:54:00:00:00:02")

NAD = {
    "apiVersion": "k8s.cni.cncf.io/v1",
    "kind": "NetworkAttachmentDefinition",
    "metadata": {
        "name": "net-48",
        "namespace": "default",
        "labels": {"network.harvesterhci.io/clusternetwork": "mgmt"},
    },
    "spec": {"config": '{"cniVersion":"0.3.1","name":"net-48","type":"bridge","ipam":{}}'},
}
POOL = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "IPPool",
    "metadata": {"name": "net-48", "namespace": "default"},
    "spec": {
        "ipv4Config": {
            "serverIP": "192.168.48.77",
            "cidr": "192.168.48.0/24",
            "pool": {
                "start": "192.168.48.81",
                "end": "192.168.48.90",
                "exclude": ["192.168.48.81", "192.168.48.90"],
            },
            "router": "192.168.48.1",
            "dns": ["1.1.1.1"],
            "domainName": "aibao.moe",
            "domainSearch": ["aibao.moe"],
            "ntp": ["pool.ntp.org"],
            "leaseTime": 300,
        },
        "networkName": NETWORK,
    },
}


def vm_manifest(name: str, mac: str) -> dict[str, Any]:
    interface = {"name": "nic-1", "bridge": {}, "macAddress": mac}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {
                "spec": {
                    "domain": {"devices": {"interfaces": [interface]}},
                    "networks": [{"name": "nic-1", "multus": {"networkName": NETWORK}}],
                }
            }
        },
    }


def say(text: str) -> None:
    with suppress(OSError):  # the terminal may be gone (SIGHUP): cleaning up goes on
        print(f"\n=== {text}", flush=True)


def show(text: str) -> None:
    with suppress(OSError):
        print(text.rstrip(), flush=True)


def complain(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def show_lease(lease: DhcpResult) -> None:
    show(f"address      {lease.ip}/{lease.prefix}")
    show(f"router       {', '.join(map(str, lease.routers))}")
    show(f"dns          {', '.join(map(str, lease.dns))}")
    show(f"domain       {lease.domain}")
    show(f"search       {', '.join(lease.search)}")
    offline = "(pool.ntp.org does not resolve offline)"
    show(f"ntp          {', '.join(map(str, lease.ntp)) or offline}")
    show(f"lease time   {lease.lease_time} s")
    show(f"server       {lease.server_id}")


@dataclass
class Progress:
    ready: bool = False
    """Keep mode: everything runs and the user was told how to look around."""


def use_work_tmp(work: Path) -> None:
    """Temporary files of this process and its children (the `kubernetes` client writes a
    kubeconfig's keys to some) go to the work folder, which goes at the end."""
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)


# -- `make demo` ------------------------------------------------------------------------------


def main() -> int:
    reason = skip_reason()
    if reason is not None:
        print(f"make demo needs network namespaces and DHCP clients: {reason}", file=sys.stderr)
        return 1
    keep = bool(os.environ.get("DEMO_KEEP"))
    guard = demokit.SignalGuard()
    guard.arm()  # from here on, a signal unwinds through the cleanup below
    stack = ExitStack()
    progress = Progress()
    work: Path | None = None
    outcome = "failed"
    try:
        previous = demokit.running()
        if previous is not None and previous.alive():
            print(
                f"a demo is already running (pid {previous.pid}, {previous.work}); "
                "stop it first (Ctrl-C in its terminal, or kill it by that pid)",
                file=sys.stderr,
            )
            return 1
        if previous is not None:
            say(f"cleaning up after a demo that did not stop cleanly (pid {previous.pid})")
            demokit.sweep(previous)
        work = Path(tempfile.mkdtemp(prefix="vm-dhcp-demo-"))
        demokit.record(work)
        use_work_tmp(work)
        run(stack, work, keep, progress)
        outcome = "done"
    except demokit.Interrupted as stop:
        outcome = "stopped" if progress.ready else "interrupted"
        say(f"{stop}: cleaning up")
    except Exception:
        traceback.print_exc()
    finally:
        guard.disarm()
        try:
            stack.close()
        except Exception:
            traceback.print_exc()
            outcome = "failed"
        finally:
            if work is not None:
                finish(work, keep_logs=outcome == "failed")
    if outcome in ("done", "stopped"):
        return 0  # keep mode ends with a signal: that is its normal end
    if outcome == "failed":
        return 1
    return 128 + (guard.received or 0)


def finish(work: Path, keep_logs: bool) -> None:
    """The work folder goes (keys, etcd data, logs), or keeps only its logs after a failure."""
    if keep_logs:
        demokit.prune_to_logs(work)
        say(f"the demo failed; its logs are kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    demokit.forget()


@dataclass
class System:
    """What `start_system` started, for the rest of the demo."""

    cluster: Cluster
    custom: CustomObjectsApi
    controller: AgentProcess
    lab: demokit.DemoLab
    sim: NodeSimulator


def run(stack: ExitStack, work: Path, keep: bool, progress: Progress) -> None:
    system = start_system(stack, work)
    custom = system.custom
    say(f"kubectl apply: NAD {NETWORK}, IPPool {NETWORK}, VirtualMachine test-vm")
    custom.create_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", "default", "network-attachment-definitions", NAD
    )
    wait_for(lambda: admission_ready(custom), 30, "the webhook to answer admission requests")
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "ippools", POOL)
    wait_for(lambda: condition(custom, "AgentReady") == "True", 60, "the agent to be ready")
    custom.create_namespaced_custom_object(
        "kubevirt.io", "v1", "default", "virtualmachines", vm_manifest("test-vm", MAC)
    )
    client = system.lab.vm("test-vm", MAC)
    say(f"VM test-vm (MAC {MAC}) runs dhclient in network namespace {client.name}")
    show_lease(acquire(client))
    show_state(system)
    if not keep:
        say("done; cleaning up (DEMO_KEEP=1 make demo keeps it running to explore)")
        return
    progress.ready = True
    show_how_to_explore(system, client, work)
    while True:
        time.sleep(3600)  # a signal ends it


def start_system(stack: ExitStack, work: Path) -> System:
    """The API server, the webhook, the controller and the node simulator, each stopped by
    the `stack` (registered before it starts)."""
    say(f"starting the test API server (logs in {work})")
    rundir = work / "k8s"
    stack.callback(stop_cluster, Cluster(rundir / "admin.kubeconfig", rundir, toolkit_path()))
    cluster = start_cluster(rundir)
    api = stack.enter_context(cluster.api_client())
    prepare_cluster(api)
    create_namespace(api, AGENTS)
    grant_agent(api, AGENTS)
    agent_kubeconfig = cluster.mint(f"system:serviceaccount:{AGENTS}:vm-dhcp-agent")

    say("starting vm-dhcp-webhook, vm-dhcp-controller and the node simulator")
    port = free_port()
    start(
        stack,
        [
            str(BIN / "vm-dhcp-webhook"), "--name", "vm-dhcp-webhook", "--namespace", AGENTS,
            "--https-port", str(port), "--listen-address", "127.0.0.1",
            "--advertise-url", f"https://127.0.0.1:{port}",
            "--kubeconfig", str(cluster.kubeconfig),
        ],
        work / "webhook.log",
    )  # fmt: skip
    http = free_port()
    controller = AgentProcess(
        start(
            stack,
            [
                str(BIN / "vm-dhcp-controller"), "--name", "vm-dhcp-controller",
                "--namespace", AGENTS, "--image", "rancher/harvester-vm-dhcp-agent:demo",
                "--service-account-name", "vm-dhcp-agent", "--no-leader-election",
                "--agent-replicas", "1", "--enable-cache-dump-api",
                "--kubeconfig", str(cluster.kubeconfig),
                "--http-address", "127.0.0.1", "--http-port", str(http),
            ],
            work / "controller.log",
        ),
        http,
        work / "controller.log",
    )  # fmt: skip
    wait_for(controller.ready, 30, "the controller to be ready")
    lab = demokit.DemoLab(work)
    stack.callback(lab.close)
    lab.open()
    sim = stack.enter_context(NodeSimulator(lab, api, agent_kubeconfig, AGENTS))
    return System(cluster, CustomObjectsApi(api), controller, lab, sim)


def show_state(system: System) -> None:
    """What a user looks at: kubectl, the controller's endpoints, the agent's leases."""
    controller = system.controller
    say("kubectl get ippl,vmnetcfg -A")
    show(system.cluster.kubectl("get", "ippl,vmnetcfg", "-A").stdout)
    say(f"curl localhost:{controller.port}/metrics  (upstream's: vmdhcpcontroller_ippool_*, "
        "_vmnetcfg_*)")  # fmt: skip
    metrics = str(controller.get("/metrics")[1]).splitlines()
    show("\n".join(line for line in metrics if line.startswith(UPSTREAM_METRICS)))
    for dump in ("ipams", "caches"):
        say(f"curl localhost:{controller.port}/{dump}/{NETWORK}")
        show(json.dumps(controller.get(f"/{dump}/{NETWORK}")[1], indent=2))
    pod = system.sim.pod(AGENT_POD)
    if pod is not None:
        say(f"curl localhost:8080/leases  (in the agent pod's namespace, {pod.netns.name})")
        show(json.dumps(json.loads(pod.netns.curl("http://127.0.0.1:8080/leases")[1]), indent=2))


def show_how_to_explore(system: System, client: Netns, work: Path) -> None:
    """Commands that work as printed (with sudo when the demo was started with it)."""
    sudo = "sudo " if os.environ.get("SUDO_USER") else ""
    make = f"{sudo}make -C {shlex.quote(str(demokit.REPO))} demo-vm"
    kubectl = f"{sudo}kubectl --kubeconfig {system.cluster.kubeconfig}"
    say("ready: running until Ctrl-C (or SIGTERM, SIGHUP), then everything is cleaned up")
    show(f"kubectl:     {kubectl} get ippl,vmnetcfg -A -o wide")
    show(f"controller:  curl -s localhost:{system.controller.port}/ipams/{NETWORK}")
    pod = system.sim.pod(AGENT_POD)
    if pod is not None:
        show(f"agent:       {sudo}ip netns exec {pod.netns.name} curl -s localhost:8080/leases")
    show(f"VM test-vm:  {sudo}ip netns exec {client.name} ip address show eth0")
    show(f"add a VM:    {make} NAME={EXAMPLE_VM[0]} MAC={EXAMPLE_VM[1]}")
    show(f"re-run a VM's DHCP client:  {make} NAME=test-vm")
    show(f"logs:        {work}")


def start(stack: ExitStack, argv: list[str], log: Path) -> subprocess.Popen[str]:
    """Start `argv` in a session of its own (a signal to the demo's process group reaches
    the demo, which stops it in order), output to `log`; stopped by the `stack`."""
    started: list[subprocess.Popen[str]] = []

    def stop_started() -> None:
        for process in started:
            stop(process)

    stack.callback(stop_started)
    with log.open("w") as out:
        started.append(
            subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        )
    return started[0]


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 30 s; waited for (no zombie)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def admission_ready(custom: CustomObjectsApi) -> bool:
    """True once the webhook's mutator fills in a pool (dry run): nothing is refused, so the
    webhook's log has no refusal for this probe."""
    probe = {**POOL, "metadata": {"name": "probe", "namespace": "default"}}
    probe["spec"] = {"networkName": NETWORK, "ipv4Config": {"cidr": "192.168.48.0/24"}}
    try:
        made = cast(
            dict[str, Any],
            custom.create_namespaced_custom_object(
                GROUP, VERSION, "default", "ippools", probe, dry_run="All"
            ),
        )
    except ApiException:
        return False  # schema: no serverIP yet, so the webhook is not called yet
    return bool(made["spec"]["ipv4Config"].get("serverIP"))


def condition(custom: CustomObjectsApi, kind: str) -> str | None:
    pool = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", "ippools", "net-48"),
    )
    for entry in (pool.get("status") or {}).get("conditions") or []:
        if entry["type"] == kind:
            return str(entry["status"])
    return None


def acquire(namespace: Netns) -> DhcpResult:
    """Run the VM's dhclient (stopping one still running there) until it gets a lease."""
    client = Dhclient(namespace, timeout=10)
    client.stop()

    def attempt() -> DhcpResult | None:
        try:
            return client.acquire()
        except Exception:
            return None

    result: DhcpResult = wait_for(attempt, 60, f"dhclient in {namespace.name} to get a lease")
    return result


def timed(command: Callable[[], int]) -> int:
    began = time.monotonic()
    code = command()
    show(f"\n(demo took {time.monotonic() - began:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(timed(main))

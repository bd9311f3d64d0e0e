"""vm-dhcp-controller figures against the test API server (`make bench-controller`).

Starts its own API server (k8s-test-env, with an audit log of the controller's requests),
the webhook registered with it as in an install (`--no-webhook`: without; every vmnetcfg
the controller creates or updates is then admitted by nobody), one NAD and one /21 IPPool,
and the controller as a subprocess (`--no-agent`: the agent pod
would never run here and plays no part in allocation; leader election on, as users run it,
so every write is gated on leadership). Then:

1. creates N VirtualMachines (default 1,000) at once from a thread pool, each with one
   Multus NIC on the pool's network and a unique MAC, and measures until every vmnetcfg is
   Allocated (seen through a watch) and the IPPool status lists all N: total time, p50/p99
   per VM (VM create request sent -> its vmnetcfg seen Allocated), the controller's API
   requests and writes per VM (from the audit log: requests of the controller's user; the
   controller runs with a kubeconfig minted for that user), controller RSS, duplicates;
2. restarts the controller (SIGTERM, start again) and measures, from the new process's
   start, the time until /readyz answers and its IPAM (/caches) holds the N allocations, and
   until a VM created at that moment is Allocated; also the writes the restart costs.

Targets: all 1,000 within 30 s, zero duplicate addresses, at most 4 API writes per VM,
ready again after a restart in under 5 s; the controller's CPU per VM is printed, and the
webhook's CPU per VM and RSS when it runs. Exit
status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.controller_observe import (
    CONTROLLER_USER,
    GROUP,
    NAMESPACE,
    VERSION,
    VMNETCFGS,
    AllocationWatch,
    Audit,
    requests,
    writes,
)
from bench.webhook_proc import cpu_seconds, create_network, rss_mib, running_webhook
from kubernetes.client import ApiClient, CustomObjectsApi
from tests.agentproc import AgentProcess, free_port, running_controller, wait_for
from tests.cluster import (
    Cluster,
    create_namespace,
    prepare_cluster,
    start_cluster,
    stop_cluster,
)
from tests.integration.test_webhook import Webhook

AGENT_NAMESPACE = "harvester-system"
WEBHOOK_NAMESPACE = "vm-dhcp-system"
NETWORK = "net-bench"
MARKS = ("EXCLUDED", "RESERVED")

TARGET_TOTAL_S = 30.0
TARGET_WRITES_PER_VM = 4.0
TARGET_RESTART_S = 5.0

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    users: ["{CONTROLLER_USER}"]
  - level: None
"""


def mac(n: int) -> str:
    return f"02:00:00:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


def vm_body(name: str, address: str) -> dict[str, Any]:
    """As tests/integration/test_controller.py's Env.vm: a pod NIC and one Multus NIC."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": [
                                {"name": "default", "masquerade": {}},
                                {"name": "nic-1", "bridge": {}, "macAddress": address},
                            ]
                        }
                    },
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "nic-1", "multus": {"networkName": f"{NAMESPACE}/{NETWORK}"}},
                    ],
                }
            }
        },
    }


def pool_allocated(custom: CustomObjectsApi) -> dict[str, str]:
    pool = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "ippools", NETWORK),
    )
    allocated = ((pool.get("status") or {}).get("ipv4") or {}).get("allocated") or {}
    return {ip: m for ip, m in allocated.items() if m not in MARKS}


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# -- the run --------------------------------------------------------------------------------------


@contextmanager
def bench_cluster(workdir: Path) -> Iterator[tuple[Cluster, Audit]]:
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit = workdir / "audit.log"
    cluster = start_cluster(
        workdir / "k8s",
        f"--audit-policy-file={policy}",
        f"--audit-log-path={audit}",
        "--audit-log-maxsize=0",
    )
    try:
        with cluster.api_client() as api:
            prepare_cluster(api)
        yield cluster, Audit(audit)
    finally:
        stop_cluster(cluster)


def setup_network(api: ApiClient, addresses: int) -> int:
    """The NAD and the IPPool; returns the pool's prefix length."""
    create_namespace(api, NAMESPACE)
    create_namespace(api, AGENT_NAMESPACE)
    prefix = 32 - (2 * addresses + 16).bit_length()  # a /21 for 1,000 (2,046 hosts)
    cidr = IPv4Network(f"10.20.0.0/{prefix}")
    ipv4 = {
        "serverIP": "10.20.0.2",
        "cidr": str(cidr),
        "pool": {
            "start": "10.20.0.10",
            "end": str(cidr.broadcast_address - 1),
            "exclude": ["10.20.0.11"],
        },
        "router": "10.20.0.1",
    }
    # labelled with its pool, which the controller writes itself only with agents on
    labels = {"network.harvesterhci.io/clusternetwork": "mgmt"}
    create_network(CustomObjectsApi(api), NAMESPACE, NETWORK, ipv4, **labels)
    return prefix


def controller_args(kubeconfig: Path) -> list[str]:
    return [
        "--name", "vm-dhcp-controller-bench",
        "--namespace", AGENT_NAMESPACE,
        "--no-agent",
        "--leader-election-namespace", NAMESPACE,  # elected, gated writes: as users run it
        "--enable-cache-dump-api",
        "--kubeconfig", str(kubeconfig),
    ]  # fmt: skip


def cache_size(controller: AgentProcess) -> int:
    status, body = controller.get(f"/caches/{NAMESPACE}/{NETWORK}")
    return len(body) if status == 200 and isinstance(body, dict) else -1


@contextmanager
def maybe_webhook(
    api: ApiClient, cluster: Cluster, workdir: Path, on: bool, pythonpath: str | None
) -> Iterator[Webhook | None]:
    """The webhook, registered with the API server as in an install (or nothing)."""
    if not on:
        yield None
        return
    create_namespace(api, WEBHOOK_NAMESPACE)
    log = workdir / "webhook.log"
    with running_webhook(
        api, cluster.kubeconfig, WEBHOOK_NAMESPACE, free_port(), log, pythonpath=pythonpath
    ) as webhook:
        yield webhook
    text = log.read_text(errors="replace")
    if "Traceback" in text:
        print(f"note: webhook.log has errors:\n{text[-3000:]}", file=sys.stderr)


def run(count: int, threads: int, workdir: Path, webhook_on: bool, pythonpath: str | None) -> int:
    with (
        bench_cluster(workdir) as (cluster, audit),
        cluster.api_client() as api,
        maybe_webhook(api, cluster, workdir, webhook_on, pythonpath) as webhook,
    ):
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = threads + 4
        custom = CustomObjectsApi(api)
        prefix = setup_network(api, count + 1)
        kubeconfig = cluster.mint(CONTROLLER_USER, "system:masters")
        log1, log2 = workdir / "controller-1.log", workdir / "controller-2.log"
        names = [f"vm-{n:05d}" for n in range(count)]
        macs = {name: mac(n + 1) for n, name in enumerate([*names, "vm-new"])}
        created: dict[str, float] = {}
        watcher = AllocationWatch(api)
        watcher.start()
        watcher.started_watch.wait(10)

        with running_controller(controller_args(kubeconfig), log1) as controller:
            wait_for(lambda: cache_size(controller) == 0, 30, "the pool's IPAM")
            idle_rss, _ = rss_mib(controller.process.pid)
            audit.quiet(0.5)
            since = audit.mark()
            cpu_before = cpu_seconds(controller.process.pid)
            webhook_cpu = cpu_seconds(webhook.process.pid) if webhook else 0.0
            webhook_rss = (0.0, 0.0)

            def create(name: str) -> None:
                created[name] = time.perf_counter()
                custom.create_namespaced_custom_object(
                    "kubevirt.io", "v1", NAMESPACE, "virtualmachines", vm_body(name, macs[name])
                )

            began = time.perf_counter()
            with ThreadPoolExecutor(threads) as executor:
                for future in [executor.submit(create, name) for name in names]:
                    future.result()
            created_in = time.perf_counter() - began
            if not watcher.wait(set(names), 120):
                missing = sorted(set(names) - watcher.allocated.keys())
                raise RuntimeError(f"{len(missing)} vmnetcfgs not Allocated, e.g. {missing[:5]}")
            all_allocated = max(watcher.allocated[n][0] for n in names) - began
            wait_for(
                lambda: len(pool_allocated(custom)) == count,
                60,
                "the IPPool status to list every allocation",
                interval=0.05,
            )
            pool_done = time.perf_counter() - began
            rss, hwm = rss_mib(controller.process.pid)
            cpu = cpu_seconds(controller.process.pid) - cpu_before
            if webhook:
                webhook_cpu = cpu_seconds(webhook.process.pid) - webhook_cpu
                webhook_rss = rss_mib(webhook.process.pid)
            until = audit.quiet(1.0)
            events = audit.events(since, until)
            alloc_writes = writes(events)
            alloc_requests = requests(events)

            # consistency: vmnetcfgs, the IPPool status and the controller's IPAM agree
            cfgs = cast(
                dict[str, Any],
                custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, VMNETCFGS),
            )
            held: dict[str, set[str]] = {}
            for cfg in cfgs["items"]:
                for entry in cfg["status"]["networkConfigs"]:
                    held.setdefault(entry["allocatedIPAddress"], set()).add(entry["macAddress"])
            duplicates = sum(1 for owners in held.values() if len(owners) > 1)
            in_pool = pool_allocated(custom)
            cache = controller.get(f"/caches/{NAMESPACE}/{NETWORK}")[1]
            duplicates += len(cache) - len(set(cache.values()))
            consistent = (
                len(cfgs["items"]) == count
                and {ip: next(iter(m)) for ip, m in held.items()} == in_pool
                and {ip: m for m, ip in cache.items()} == in_pool
                and {m for owners in held.values() for m in owners} == {macs[n] for n in names}
            )
            stop_began = time.perf_counter()
        # leaving the block sent SIGTERM and waited for the exit; now start again
        stop_seconds = time.perf_counter() - stop_began
        since = audit.mark()
        restart_began = time.perf_counter()
        with running_controller(controller_args(kubeconfig), log2) as controller:
            readyz = time.perf_counter() - restart_began
            wait_for(lambda: cache_size(controller) == count, 30, "the rebuilt IPAM", 0.02)
            ready_with_all = time.perf_counter() - restart_began
            create("vm-new")
            if not watcher.wait({"vm-new"}, 60):
                raise RuntimeError("the VM created after the restart got no address")
            new_vm = watcher.allocated["vm-new"][0] - restart_began
            new_address = watcher.allocated["vm-new"][2]
            wait_for(
                lambda: len(pool_allocated(custom)) == count + 1,
                30,
                "the IPPool status to list the new VM",
            )
            until = audit.quiet(1.0)
            restart_events = audit.events(since, until)
            restart_writes = writes(restart_events)
            restart_rss, _ = rss_mib(controller.process.pid)
        watcher.stopping.set()
        reused = new_address in in_pool
        for path in (log1, log2):
            text = path.read_text(errors="replace")
            if "Traceback" in text or " ERROR " in text:
                print(f"note: {path.name} has errors:\n{text[-3000:]}", file=sys.stderr)

    latencies = [watcher.allocated[n][0] - created[n] for n in names]
    writes_total = sum(alloc_writes.values())
    crd_writes = sum(v for k, v in restart_writes.items() if "customresourcedefinitions" in k)
    rows: list[tuple[str, str, str, bool | None]] = [
        (f"VMs created at once ({threads} threads)", f"{count} in {created_in:.1f} s", "", None),
        (
            "total: first create -> all Allocated",
            f"{all_allocated:.1f} s",
            f"<= {TARGET_TOTAL_S:.0f} s",
            all_allocated <= TARGET_TOTAL_S,
        ),
        (
            "total: first create -> IPPool lists all",
            f"{pool_done:.1f} s",
            f"<= {TARGET_TOTAL_S:.0f} s",
            pool_done <= TARGET_TOTAL_S,
        ),
        ("per VM: create -> Allocated, p50", f"{statistics.median(latencies):.2f} s", "", None),
        ("per VM: create -> Allocated, p99", f"{percentile(latencies, 99):.2f} s", "", None),
        (
            "controller API writes per VM",
            f"{writes_total / count:.2f}",
            f"<= {TARGET_WRITES_PER_VM:.0f}",
            writes_total / count <= TARGET_WRITES_PER_VM,
        ),
        (
            "controller API requests per VM (watches aside)",
            f"{alloc_requests / count:.2f}",
            "",
            None,
        ),
        (
            "duplicate addresses; stores consistent",
            f"{duplicates}; {'yes' if consistent else 'NO'}",
            "0; yes",
            duplicates == 0 and consistent,
        ),
        ("controller CPU time while allocating", f"{cpu:.1f} s", "", None),
        ("controller CPU per VM", f"{cpu / count * 1000:.1f} ms", "", None),
        (
            "controller RSS idle -> after (peak)",
            f"{idle_rss:.0f} -> {rss:.0f} ({hwm:.0f}) MiB",
            "",
            None,
        ),
        ("restart: SIGTERM -> old process exited", f"{stop_seconds:.2f} s", "", None),
        ("restart: start -> /readyz 200", f"{readyz:.2f} s", "", None),
        (
            f"restart: start -> ready with {count} allocations",
            f"{ready_with_all:.2f} s",
            f"< {TARGET_RESTART_S:.0f} s",
            ready_with_all < TARGET_RESTART_S,
        ),
        (
            "restart: start -> a new VM Allocated",
            f"{new_vm:.2f} s",
            "",
            None,
        ),
        (
            "restart: new VM's address is free",
            new_address + (" (REUSED)" if reused else ""),
            "not held",
            not reused,
        ),
        (
            "restart: controller writes (CRD apply; rest)",
            f"{crd_writes}; {sum(restart_writes.values()) - crd_writes}",
            "",
            None,
        ),
        ("restart: controller RSS", f"{restart_rss:.0f} MiB", "", None),
    ]
    if webhook_on:
        rows += [
            (
                "webhook CPU per VM while allocating",
                f"{webhook_cpu / count * 1000:.1f} ms",
                "",
                None,
            ),
            (
                "webhook RSS after (peak)",
                f"{webhook_rss[0]:.0f} ({webhook_rss[1]:.0f}) MiB",
                "",
                None,
            ),
        ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nvm-dhcp-controller: {count} VMs on one /{prefix} IPPool, --no-agent, leader "
        f"election on, webhook {'on' if webhook_on else 'off (--no-webhook)'}"
        f"{' (' + pythonpath + ')' if pythonpath else ''}; {os.cpu_count()} CPUs, "
        f"load average {load}"
    )
    print(f"{'measure':<48} {'result':>24} {'target':>9}  ok")
    for name, result, target, ok in rows:
        mark = "" if ok is None else "yes" if ok else "NO"
        print(f"{name:<48} {result:>24} {target:>9}  {mark}")
    print("\ncontroller writes while allocating:")
    for key, value in sorted(alloc_writes.items(), key=lambda kv: -kv[1]):
        print(f"  {value:6d}  {key}")
    print("controller writes over the restart (including the new VM):")
    for key, value in sorted(restart_writes.items(), key=lambda kv: -kv[1]):
        print(f"  {value:6d}  {key}")
    return 0 if all(ok for *_, ok in rows if ok is not None) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=32, help="client threads creating VMs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-webhook",
        action="store_true",
        help="run without the webhook (by default it is registered, as in an install, and "
        "every vmnetcfg the controller writes goes through it)",
    )
    parser.add_argument(
        "--webhook-pythonpath", help="run the webhook from this copy of the package"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-controller-"))
    try:
        return run(args.vms, args.threads, workdir, not args.no_webhook, args.webhook_pythonpath)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

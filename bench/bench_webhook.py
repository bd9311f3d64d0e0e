"""Admission cost of `vm-dhcp-webhook` as the cluster grows (`python bench/bench_webhook.py`).

Starts its own test API server, one NAD and one /16 IPPool, and for each level N of
existing VirtualMachineNetworkConfigs (default 0, 1,000 and 5,000, all on that one network,
the worst case for anything that scans a network; created while no webhook is registered):

1. a bare create: M vmnetcfgs created one after another with no webhook registered;
2. the webhook started (registered through `--advertise-url`), its start -> first answer;
3. M vmnetcfgs created one after another through it: admission p50/p99 (client-side,
   request sent -> created) and the webhook's CPU per admission (its user + system time over
   the M creates, watches included, divided by M);
4. the same M creates from 4 threads at once (p50/p99; and without the webhook, as step
   1), and an IPPool DELETE (dry run, refused because the pool is in use: its message
   names all N vmnetcfgs);
5. the webhook's RSS once answering, after the creates, and after the DELETEs (peak).

The M objects of each step are deleted before the next. `--pythonpath DIR` runs another
copy of the package (an older checkout's `src`), for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.webhook_proc import cpu_seconds, create_network, rss_mib, running_webhook
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from tests.agentproc import free_port
from tests.cluster import create_namespace, prepare_cluster, start_cluster, stop_cluster

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
VMNETCFGS = "virtualmachinenetworkconfigs"
NAMESPACE = "bench"
HOME = "vm-dhcp-system"
NETWORK = "net-bench"
PROBE_LABEL = "bench.vm-dhcp/probe"


def mac(n: int) -> str:
    return (
        f"02:00:{(n >> 24) & 0xFF:02x}:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
    )


def vmnetcfg(name: str, n: int, probe: bool = False) -> dict[str, Any]:
    labels = {PROBE_LABEL: "1"} if probe else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "vmName": name,
            "networkConfigs": [{"networkName": f"{NAMESPACE}/{NETWORK}", "macAddress": mac(n)}],
        },
    }


def setup(custom: CustomObjectsApi, api: ApiClient) -> None:
    create_namespace(api, NAMESPACE)
    create_namespace(api, HOME)
    ipv4 = {
        "serverIP": "10.100.0.2",
        "cidr": "10.100.0.0/16",
        "pool": {"start": "10.100.0.10", "end": "10.100.255.250"},
        "router": "10.100.0.1",
    }
    create_network(custom, NAMESPACE, NETWORK, ipv4)


def fill(custom: CustomObjectsApi, have: int, want: int, threads: int = 16) -> None:
    def create(n: int) -> None:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, VMNETCFGS, vmnetcfg(f"vm-{n:06d}", n)
        )

    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(create, range(have, want)))


def timed_creates(custom: CustomObjectsApi, first: int, count: int, threads: int) -> list[float]:
    """Seconds per create of `count` probe vmnetcfgs from `threads` threads."""

    def create(n: int) -> float:
        began = time.perf_counter()
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, VMNETCFGS, vmnetcfg(f"probe-{n:06d}", n, probe=True)
        )
        return time.perf_counter() - began

    with ThreadPoolExecutor(threads) as executor:
        return list(executor.map(create, range(first, first + count)))


def delete_probes(custom: CustomObjectsApi) -> None:
    custom.delete_collection_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, VMNETCFGS, label_selector=PROBE_LABEL
    )


def ms(values: list[float], p: int) -> float:
    if p == 50:
        return statistics.median(values) * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    try:
        call()
    except ApiException as exc:
        if exc.status != 422:
            raise
    return time.perf_counter() - began


def level(
    api: ApiClient, kubeconfig: Path, workdir: Path, n: int, m: int, pythonpath: str | None
) -> list[str]:
    custom = CustomObjectsApi(api)
    probe = 10_000_000 + n * 10
    bare = timed_creates(custom, probe, m, 1)
    delete_probes(custom)
    bare4 = timed_creates(custom, probe, m, 4)
    delete_probes(custom)
    log = workdir / f"webhook-{n}.log"
    began = time.perf_counter()
    with running_webhook(api, kubeconfig, HOME, free_port(), log, pythonpath=pythonpath) as hook:
        start = time.perf_counter() - began
        rss0, _ = rss_mib(hook.process.pid)
        cpu0 = cpu_seconds(hook.process.pid)
        seq = timed_creates(custom, probe + m, m, 1)
        cpu = (cpu_seconds(hook.process.pid) - cpu0) / m * 1000
        delete_probes(custom)
        conc = timed_creates(custom, probe + 2 * m, m, 4)
        delete_probes(custom)
        rss1, _ = rss_mib(hook.process.pid)
        deletes = [
            timed(
                lambda: custom.delete_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "ippools", NETWORK, dry_run="All"
                )
            )
            for _ in range(5)
        ]
        rss, hwm = rss_mib(hook.process.pid)
        if "Traceback" in log.read_text(errors="replace"):
            print(f"note: {log} has a traceback", file=sys.stderr)
    return [
        f"{n:,}",
        f"{ms(bare, 50):.1f}",
        f"{ms(seq, 50):.1f} / {ms(seq, 99):.1f}",
        f"{ms(seq, 50) / ms(bare, 50):.1f}x",
        f"{cpu:.1f}",
        f"{ms(conc, 50):.1f} / {ms(conc, 99):.1f} ({ms(bare4, 50):.1f})",
        f"{statistics.median(deletes) * 1000:.0f}" if n else "-",
        f"{start:.1f}",
        f"{rss0:.0f} / {rss1:.0f} / {rss:.0f} ({hwm:.0f})",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0,1000,5000", help="existing vmnetcfgs, ascending")
    parser.add_argument("--creates", type=int, default=100, help="admissions measured per step")
    parser.add_argument("--pythonpath", help="run the webhook from this copy of the package")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    cluster = start_cluster(workdir / "k8s")
    rows = []
    try:
        with cluster.api_client() as api:
            api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 20
            prepare_cluster(api)
            custom = CustomObjectsApi(api)
            setup(custom, api)
            have = 0
            for n in levels:
                fill(custom, have, n)
                have = n
                rows.append(
                    level(api, cluster.kubeconfig, workdir, n, args.creates, args.pythonpath)
                )
    finally:
        stop_cluster(cluster)
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nvm-dhcp-webhook{' (' + args.pythonpath + ')' if args.pythonpath else ''}: "
        f"{args.creates} admissions per step, one network; {os.cpu_count()} CPUs, load {load}"
    )
    head = [
        "existing",
        "bare create p50 ms",
        "admission p50 / p99 ms",
        "p50 / bare",
        "webhook CPU ms/admission",
        "4 clients p50 / p99 ms (bare p50)",
        "IPPool DELETE ms",
        "start -> answering s",
        "RSS MiB: ready / after creates / after DELETEs (peak)",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""P pools x V VMs through the real install path (`make bench-scale`, default 50 x 10,000).

For each size V of `--vms` (default 1,000, 2,500, 5,000 and 10,000), a fresh test API server
(k8s-test-env, with an audit log of the controller's requests) and on it, as in an install:
the webhook registered through `--advertise-url`; P NADs, each with its IPPool (created
through the webhook); the controller as a subprocess with `--no-agent` and leader election on
(as `bench_controller.py` runs it); and one pool's agent as a real process in Kubernetes mode
(`--dry-run --enable-cache-dump-api`, fed by that IPPool through the API server). Then:

1. admission at the start: dry-run vmnetcfg creates one after another (admitted by the
   webhook, stored nowhere), p50/p99 and the webhook's CPU per admission; the same dry runs
   before the webhook was registered are the bare create;
2. V VirtualMachines created at once from `--threads` threads, round-robin over the pools,
   each with one Multus NIC and a unique MAC; until every vmnetcfg is seen Allocated (a
   watch): the time to all Allocated, per VM create -> Allocated p50/p99, the controller's
   CPU (/proc) per VM (until the IPPools list all) and RSS (when all are Allocated), its
   API writes per VM (audit log), the webhook's CPU per admission over the burst (its CPU /
   the controller's vmnetcfg creates and updates) and the latency of those admitted writes
   in the first and the last tenth of the burst (audit log), the longest /healthz response
   (polled every 50 ms: the longest event-loop stall), the IPPool status lag (last vmnetcfg
   Allocated -> every pool's status lists all), and for the agent's pool, create -> the
   agent serves the lease (/leases, polled every 100 ms);
3. admission at the end, as step 1 with V vmnetcfgs in the cluster; the webhook's RSS;
4. the controller restarted (SIGTERM, start again): a VM created as soon as /readyz answers,
   create -> Allocated.

`--timeout` bounds step 2: a size not done by then, or whose controller exited during it
(e.g. it lost its lease while its event loop stalled), is reported with what was reached
(CPU and writes still divided by V), its restart skipped, and larger sizes are skipped.
Every row is checked against every goal (they are stated for 10,000 VMs and hold a fortiori
below). The table is markdown; a missed goal is marked in its cell and listed at the end, with
notes. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_controller import (
    AGENT_NAMESPACE,
    bench_cluster,
    controller_args,
    mac,
    maybe_webhook,
    vm_body,
)
from bench.controller_observe import (
    CONTROLLER_USER,
    NAMESPACE,
    AllocationWatch,
    Audit,
    writes,
)
from bench.scale_probe import (
    LeasePoller,
    StallProbe,
    admission_probe,
    admitted_writes,
    percentile,
    pool_counts,
    probe_body,
)
from bench.scale_report import Result, header, report
from bench.webhook_proc import cpu_seconds, create_network, rss_mib
from kubernetes.client import CustomObjectsApi
from tests.agentproc import AgentProcess, running_agent, running_controller, wait_for
from tests.cluster import create_namespace

PROBES = 30  # dry-run admissions at the start and at the end


def network(i: int) -> str:
    return f"net-{i:03d}"


def setup_pools(custom: CustomObjectsApi, pools: int, per_pool: int) -> None:
    """P NADs with their IPPools, pool i in 10.(100 + i).0.0, sized for `per_pool` VMs."""
    prefix = 32 - (2 * per_pool + 16).bit_length()
    for i in range(pools):
        cidr = IPv4Network(f"10.{100 + i}.0.0/{prefix}")
        base = cidr.network_address
        ipv4 = {
            "serverIP": str(base + 2),
            "cidr": str(cidr),
            "pool": {"start": str(base + 10), "end": str(cidr.broadcast_address - 1)},
            "router": str(base + 1),
        }
        labels = {"network.harvesterhci.io/clusternetwork": "mgmt"}
        create_network(custom, NAMESPACE, network(i), ipv4, **labels)


def vm_on(name: str, address: str, pool: int) -> dict[str, Any]:
    body = vm_body(name, address)
    nets = body["spec"]["template"]["spec"]["networks"]
    nets[1]["multus"]["networkName"] = f"{NAMESPACE}/{network(pool)}"
    return body


def probes(tag: str, count: int) -> list[dict[str, Any]]:
    return [
        probe_body(f"probe-{tag}-{k}", f"{NAMESPACE}/{network(0)}", mac(0xF00000 + k))
        for k in range(count)
    ]


@dataclass
class Env:
    """What a size's run shares between its steps."""

    custom: CustomObjectsApi
    audit: Audit
    watcher: AllocationWatch
    wpid: int
    names: list[str]
    pools: int
    threads: int
    timeout: float
    created: dict[str, float] = field(default_factory=dict)

    def create(self, name: str) -> None:
        n = int(name[3:]) if name[3:].isdigit() else len(self.names)
        body = vm_on(name, mac(n + 1), n % self.pools)
        self.created[name] = time.perf_counter()
        self.custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", NAMESPACE, "virtualmachines", body
        )


def allocated(
    watcher: AllocationWatch, names: set[str], deadline: float, controller: AgentProcess
) -> bool:
    """Whether every one of `names` is Allocated before `deadline` (perf_counter) or the
    controller exits."""
    while controller.process.poll() is None:
        left = deadline - time.perf_counter()
        if left <= 0:
            return False
        if watcher.wait(names, min(2.0, left)):
            return True
    return watcher.wait(names, 0)


def last_error(log: Path) -> str:
    errors = [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line]
    return errors[-1].split(" ERROR ", 1)[1] if errors else "no ERROR logged"


def run_size(vms: int, pools: int, threads: int, timeout: float, workdir: Path) -> Result:
    res = Result(vms, pools)
    names = [f"vm-{n:05d}" for n in range(vms)]
    with bench_cluster(workdir) as (cluster, audit), cluster.api_client() as api:
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = threads + 4
        custom = CustomObjectsApi(api)
        create_namespace(api, NAMESPACE)
        create_namespace(api, AGENT_NAMESPACE)
        res.bare = admission_probe(custom, probes("bare", PROBES), None)[0]
        with maybe_webhook(api, cluster, workdir, True, None) as webhook:
            assert webhook is not None
            setup_pools(custom, pools, math.ceil((vms + 1) / pools) + 1)
            kubeconfig = cluster.mint(CONTROLLER_USER, "system:masters")
            watcher = AllocationWatch(api)
            watcher.start()
            watcher.started_watch.wait(10)
            env = Env(custom, audit, watcher, webhook.process.pid, names, pools, threads, timeout)
            args = controller_args(kubeconfig)
            agent_args = ["--ippool-ref", f"{NAMESPACE}/{network(0)}", "--kubeconfig"]
            agent_args += [str(kubeconfig), "--dry-run", "--enable-cache-dump-api"]
            agent_args += ["--name", "bench-agent", "--namespace", AGENT_NAMESPACE]
            try:
                with (
                    running_controller(args, workdir / "controller-1.log") as controller,
                    running_agent(agent_args, workdir / "agent.log", ready_timeout=30) as agent,
                ):
                    burst(res, env, controller, agent)
            except AssertionError as exc:  # e.g. a non-zero exit when stopped under load
                res.notes.append(f"controller or agent stop: {str(exc).splitlines()[0]}")
                res.notes.append(f"controller: {last_error(workdir / 'controller-1.log')}")
            if res.all_allocated is not None:
                began = time.perf_counter()
                log = workdir / "controller-2.log"
                try:
                    with running_controller(args, log, ready_timeout=120) as controller:
                        env.create("vm-new")
                        if allocated(watcher, {"vm-new"}, time.perf_counter() + 120, controller):
                            seen = watcher.allocated["vm-new"][0]
                            res.restart = seen - env.created["vm-new"]
                            res.restart_from_start = seen - began
                        else:
                            res.notes.append("the VM created after the restart got no address")
                except AssertionError as exc:
                    res.notes.append(f"restarted controller: {str(exc).splitlines()[0]}")
                    res.notes.append(f"restarted controller: {last_error(log)}")
            watcher.stopping.set()
    for path in sorted(workdir.glob("*.log")):
        if "Traceback" in path.read_text(errors="replace"):
            res.notes.append(f"{path.name} has a Traceback")
    return res


def burst(res: Result, env: Env, controller: AgentProcess, agent: AgentProcess) -> None:
    """Steps 1-3 of the module's docstring, with the controller and the agent running."""
    custom, audit, watcher, wpid, names = env.custom, env.audit, env.watcher, env.wpid, env.names
    wait_for(lambda: len(pool_counts(custom)) == env.pools, 30, "the IPPools")
    lat, cpu, refused = admission_probe(custom, probes("start", PROBES), wpid)
    res.start = (lat, cpu)
    if refused:
        res.notes.append(f"{refused} of {PROBES} start probes refused")
    audit.quiet(0.5)
    since = audit.mark()
    stall, leases = StallProbe(controller.port), LeasePoller(agent)
    stall.start()
    leases.start()
    ccpu, wcpu = cpu_seconds(controller.process.pid), cpu_seconds(wpid)

    began = time.perf_counter()
    with ThreadPoolExecutor(env.threads) as executor:
        for future in [executor.submit(env.create, n) for n in names]:
            future.result()
    res.created_in = time.perf_counter() - began
    done = allocated(watcher, set(names), began + env.timeout, controller)
    end = time.perf_counter()
    if controller.process.poll() is not None:
        res.notes.append(f"the controller exited during the burst: {last_error(controller.log)}")
    got = [n for n in names if n in watcher.allocated]
    res.allocated = len(got)
    latencies = [watcher.allocated[n][0] - env.created[n] for n in got]
    if latencies:
        res.p50, res.p99 = statistics.median(latencies), percentile(latencies, 99)
    pid = controller.process.pid
    with suppress(OSError, KeyError):  # when all are Allocated (or given up); gone if reaped
        res.cpu_ms = (cpu_seconds(pid) - ccpu) / res.vms * 1000
        res.rss = rss_mib(pid)[0]
    if done:
        last = max(watcher.allocated[n][0] for n in names)
        res.all_allocated = last - began

        def listed() -> bool:
            exited = controller.process.poll() is not None
            return exited or sum(pool_counts(custom).values()) >= res.vms

        try:
            wait_for(listed, 120, "every IPPool's status to list its VMs", 0.1)
            if controller.process.poll() is None:
                res.lag = time.perf_counter() - last
            else:
                res.notes.append("the controller exited before the IPPools listed every VM")
        except AssertionError:
            res.notes.append("the IPPools' status did not list every VM within 120 s")
    else:
        res.notes.append(f"not done: {len(got)} of {res.vms} Allocated after {end - began:.0f} s")
    if controller.process.poll() is None:  # and the IPPools' status written too
        res.cpu_ms = (cpu_seconds(pid) - ccpu) / res.vms * 1000
    else:
        res.notes.append("controller CPU counted until all were Allocated")
    burst_wcpu = cpu_seconds(wpid) - wcpu
    res.stall = stall.stop()
    if stall.failures:
        res.notes.append(f"{stall.failures} /healthz requests failed")
    try:
        until = audit.quiet(1.0, timeout=30)
    except RuntimeError:
        until = audit.mark()
        res.notes.append("the controller was still writing when its writes were counted")
    events = audit.events(since, until)
    res.writes = sum(writes(events).values()) / res.vms
    admitted = admitted_writes(events)
    res.burst_wcpu_ms = burst_wcpu / max(len(admitted), 1) * 1000
    tenth = max(len(admitted) // 10, 1)
    res.burst_adm = ([x for _, x in admitted[:tenth]], [x for _, x in admitted[-tenth:]])
    if done:
        res.end = admission_probe(custom, probes("end", PROBES), wpid)[:2]
    res.wrss = rss_mib(wpid)[0]
    leases.stop()
    res.agent_rss = rss_mib(agent.process.pid)[0]
    sample = [n for n in names[:: env.pools] if mac(int(n[3:]) + 1) in leases.seen]
    res.agent_lease = [leases.seen[mac(int(n[3:]) + 1)] - env.created[n] for n in sample]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--vms", default="1000,2500,5000,10000", help="sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=32, help="client threads creating VMs")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a size's burst may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    if not 1 <= args.pools <= 150:
        parser.error("--pools: 1 to 150 (pool i is 10.(100 + i).0.0)")
    header(args.pools, args.threads)
    results: list[Result] = []
    missed: list[str] = []
    sizes = [int(v) for v in args.vms.split(",")]
    for vms in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{vms}-"))
        began = time.perf_counter()
        try:
            res = run_size(vms, args.pools, args.threads, args.timeout, workdir)
        finally:
            if args.keep:
                print(f"work directory kept: {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        results.append(res)
        base = next((r for r in results if r.vms == 1000), results[0])
        missed += report(res, base)
        print(f"{vms:,} VMs: done in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        if res.all_allocated is None:
            missed.append(f"sizes after {vms:,} skipped: this one did not finish")
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load} at the end")
    print("missed:" if missed else "every goal met")
    for line in missed:
        print(f"  {line}")
    return 1 if any("goal" in line for line in missed) or len(results) < len(sizes) else 0


if __name__ == "__main__":
    sys.exit(main())

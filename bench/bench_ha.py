"""Agent failover figures (`make bench-ha`, root): two agent replicas per pool, run by the
node simulator against the test API server, and a VM that asks for its address every
200 ms (bench/dhcp_probe.py: an INIT-REBOOT DHCPREQUEST, the message of a VM that reboots
or rebinds). Measured over `--runs` runs each (default 5):

- node crash: the serving agent's node dies (its agent frozen, its link cut, its pod then
  marked not Ready, as the node lifecycle controller does): time to the first answer after
  the crash, and time until the pool has two Ready agents again;
  Then the node comes back (the spare replica goes);
- image roll-out: the controller restarts with another agent image and rolls the replicas
  (standbys first, the serving one last): the longest run of unanswered probes;
- drain: the serving agent's node is drained (cordoned, its pods evicted as the
  PodDisruptionBudget allows, gracefully stopped): the longest run of unanswered probes
  until the pool has two Ready agents again; then it is uncordoned;
- cut off: the serving agent's node loses the API server but stays on the VM network: how
  long no one answers (the leader lets go at its renew deadline, a standby takes over when
  the Lease expires) and, sampled every 100 ms, whether two agents ever hold the server
  address at once; then the node comes back;
- the election's writes: Lease updates per pool per second, counted by a watch.

Three nodes carry the VM network (the simulator's scheduler spreads the replicas). Goals
(issue 13): crash ≤ 15 s to the first answer, roll-out and drain gaps ≤ 1 s, back to 2
Ready ≤ 60 s after NotReady (the simulator marks a crashed node NotReady at once), never
two holders, ≤ 0.5 Lease writes per pool per second. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import watch
from kubernetes.client import CoordinationV1Api, CustomObjectsApi
from tests.agentproc import running_controller, wait_for
from tests.cluster import create_namespace, prepare_cluster, start_cluster, stop_cluster
from tests.integration.test_end_to_end import System, grant_agent, seed_network
from tests.integration.test_end_to_end_ha import (
    AGENT_NODES,
    grant_leases,
    pod_uids,
    ready_agents,
    serving,
)
from tests.netns.lab import Lab, Netns, Proc
from tests.nodesim import NodeSimulator

from vmdhcp.api.constants import agent_lease_name

SERVER = IPv4Interface("192.168.48.77/24")
MAC = "fa:cf:8e:50:82:fc"
PROBE = Path(__file__).resolve().parent / "dhcp_probe.py"
INTERVAL = 0.2
NS, AGENTS = "default", "harvester-system"
GOAL_CRASH_S, GOAL_GAP_S, GOAL_BACK_S, GOAL_WRITES = 15.0, 1.0, 60.0, 0.5


class Probe:
    """The probing VM: its answers, read from the probe's output."""

    def __init__(self, netns: Netns, address: str, workdir: Path) -> None:
        self.stop_file = workdir / "probe.stop"
        self.log = workdir / "probe.log"
        argv = [sys.executable, str(PROBE), netns.iface, MAC, address, str(self.stop_file)]
        self.proc: Proc = netns.popen(argv, self.log)

    def samples(self) -> list[tuple[float, bool]]:
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("0", "1"):
                out.append((float(parts[0]), parts[1] == "1"))
        return out

    def first_answer_after(self, t: float) -> float | None:
        return next((s for s, ok in self.samples() if s > t and ok), None)

    def longest_gap(self, since: float, until: float) -> float:
        longest = current = 0.0
        for sent, ok in self.samples():
            if since <= sent <= until:
                current = 0.0 if ok else current + INTERVAL
                longest = max(longest, current)
        return longest

    def close(self) -> None:
        self.stop_file.write_text("")
        self.proc.stop()


def lease_holder(system: System) -> str | None:
    """The pod that holds the pool's Lease (the agents' identity is `<pod>_<uid>`)."""
    coordination = CoordinationV1Api(system.sim.admin)
    lease = coordination.read_namespaced_lease(agent_lease_name(NS, "net-48"), AGENTS)
    holder = str(lease.spec.holder_identity or "").partition("_")[0]
    return holder if holder and holder in ready_agents(system) else None


class Holders:
    """How many agent pods' namespaces hold the server address (a frozen one's too), at
    most, sampled every 100 ms while it runs."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            count = 0
            for pod in list(self.system.sim.pods.values()):
                with contextlib.suppress(Exception):  # a namespace going away meanwhile
                    count += SERVER in pod.netns.addresses()
            self.most = max(self.most, count)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.most


def lease_writes(system: System, seconds: float) -> float:
    """Lease updates per second, seen by a watch for `seconds`."""
    name = agent_lease_name(NS, "net-48")
    coordination = CoordinationV1Api(system.sim.admin)
    seen = 0
    stream = watch.Watch().stream(
        coordination.list_namespaced_lease,
        AGENTS,
        field_selector=f"metadata.name={name}",
        timeout_seconds=int(seconds),
    )
    for event in stream:
        if event["type"] == "MODIFIED":
            seen += 1
    return seen / seconds


def controller_args(cluster_kubeconfig: Path, image: str) -> list[str]:
    return [
        "--name", "bench-ha", "--namespace", AGENTS, "--image", image,
        "--service-account-name", "vm-dhcp-agent", "--no-leader-election",
        "--agent-replicas", "2", "--agent-replace-after", "10",
        "--kubeconfig", str(cluster_kubeconfig),
    ]  # fmt: skip


def run(runs: int, workdir: Path) -> int:
    cluster = start_cluster(workdir / "k8s")
    try:
        with cluster.api_client() as api:
            prepare_cluster(api)
            create_namespace(api, AGENTS)
            grant_agent(api, AGENTS)
            grant_leases(api, AGENTS)
            custom = CustomObjectsApi(api)
            seed_network(custom, NS)
            kubeconfig = cluster.mint(f"system:serviceaccount:{AGENTS}:vm-dhcp-agent")
            return measure(cluster, api, custom, kubeconfig, runs, workdir)
    finally:
        stop_cluster(cluster)


def two_ready(system: System) -> bool:
    return len(pod_uids(system)) == 2 and len(ready_agents(system)) == 2


def measure(cluster: Any, api: Any, custom: Any, kubeconfig: Path, runs: int, work: Path) -> int:
    crash_first: list[float] = []
    crash_back: list[float] = []
    gaps: list[float] = []
    drain_gaps: list[float] = []
    cut_silence: list[float] = []
    image = 1
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab(work, network="192.168.48.0/24", server_ip="192.168.48.250"))
        sim = stack.enter_context(NodeSimulator(lab, api, kubeconfig, AGENTS, nodes=AGENT_NODES))
        controller = stack.enter_context(
            running_controller(
                controller_args(cluster.kubeconfig, f"registry.example/agent:v{image}"),
                work / "controller-1.log",
            )
        )
        system = System(cluster, custom, NS, AGENTS, lab, sim, controller)
        wait_for(lambda: serving(system), 60, "an agent serving")
        wait_for(lambda: two_ready(system), 60, "two ready agents")
        system.vm("bench-vm", MAC)
        address = wait_for(lambda: system.allocated("bench-vm"), 30, "the allocation")
        probe = Probe(lab.add_client(mac=MAC), address, work)
        stack.callback(probe.close)
        wait_for(lambda: any(ok for _, ok in probe.samples()), 30, "a first answer")
        writes = lease_writes(system, 20.0)
        holders = Holders(system)
        stack.callback(holders.stop)

        for n in range(runs):
            wait_for(lambda: two_ready(system), 90, "two ready agents")
            leader = wait_for(lambda: lease_holder(system), 60, "the Lease's holder")
            dead = sim.node_of(leader)
            crashed_at = time.monotonic()
            sim.crash_node(dead)  # NotReady at once (node_grace 0)
            first = wait_for(lambda t=crashed_at: probe.first_answer_after(t), 90, "an answer")
            crash_first.append(first - crashed_at)
            wait_for(
                lambda old=leader: (
                    len(ready_agents(system)) == 2 and old not in ready_agents(system)
                ),
                120,
                "the pool back to two ready agents",
            )
            crash_back.append(time.monotonic() - crashed_at)
            sim.recover_node(dead)
            print(f"crash {n + 1}: first answer {crash_first[-1]:.1f} s, "
                  f"two ready {crash_back[-1]:.1f} s", file=sys.stderr)  # fmt: skip

        for n in range(runs):
            image += 1
            wait_for(lambda: two_ready(system), 90, "two ready agents")
            controller.process.terminate()
            controller.process.wait(timeout=30)
            began = time.monotonic()
            controller = stack.enter_context(
                running_controller(
                    controller_args(cluster.kubeconfig, f"registry.example/agent:v{image}"),
                    work / f"controller-{image}.log",
                )
            )
            system.controller = controller
            new_image = f"registry.example/agent:v{image}"

            def rolled(new_image: str = new_image) -> bool:
                pods = sim.core.list_namespaced_pod(AGENTS).items
                current = [p for p in pods if not p.metadata.deletion_timestamp]
                fresh = [p for p in current if p.spec.containers[0].image == new_image]
                return len(fresh) == 2 and len(ready_agents(system)) == 2

            wait_for(rolled, 180, "the roll-out")
            gaps.append(probe.longest_gap(began, time.monotonic()))
            print(f"roll-out {n + 1}: longest gap {gaps[-1]:.1f} s", file=sys.stderr)

        for n in range(runs):
            wait_for(lambda: two_ready(system), 90, "two ready agents")
            leader = wait_for(lambda: lease_holder(system), 60, "the Lease's holder")
            node = sim.node_of(leader)
            began = time.monotonic()
            sim.drain(node)
            wait_for(lambda: two_ready(system), 90, "two ready agents after the drain")
            drain_gaps.append(probe.longest_gap(began, time.monotonic()))
            sim.uncordon(node)
            print(f"drain {n + 1}: longest gap {drain_gaps[-1]:.1f} s", file=sys.stderr)

        for n in range(runs):
            wait_for(lambda: two_ready(system), 90, "two ready agents")
            leader = wait_for(lambda: lease_holder(system), 60, "the Lease's holder")
            node = sim.node_of(leader)
            began = time.monotonic()
            sim.cut_off(node)
            wait_for(lambda old=leader: lease_holder(system) not in (None, old), 90, "a new holder")
            took_over = time.monotonic()
            first = wait_for(lambda t=took_over: probe.first_answer_after(t), 30, "an answer")
            cut_silence.append(probe.longest_gap(began, first))
            sim.recover_node(node)
            print(f"cut off {n + 1}: no answer for {cut_silence[-1]:.1f} s", file=sys.stderr)
        wait_for(lambda: two_ready(system), 90, "two ready agents")
        most_holders = holders.stop()

    rows = [
        ("node crash -> first answer, max", max(crash_first), f"<= {GOAL_CRASH_S:g} s",
         max(crash_first) <= GOAL_CRASH_S),
        ("node crash -> first answer, median", statistics.median(crash_first), "", None),
        ("node NotReady -> 2 ready agents, max", max(crash_back), f"<= {GOAL_BACK_S:g} s",
         max(crash_back) <= GOAL_BACK_S),
        ("image roll-out: longest gap, max", max(gaps), f"<= {GOAL_GAP_S:g} s",
         max(gaps) <= GOAL_GAP_S),
        ("drain: longest gap, max", max(drain_gaps), f"<= {GOAL_GAP_S:g} s",
         max(drain_gaps) <= GOAL_GAP_S),
        ("leader cut off from the API: no answer, max", max(cut_silence), "", None),
        ("namespaces holding the server address, max", most_holders, "<= 1",
         most_holders <= 1),
        ("Lease writes per pool per second", writes, f"<= {GOAL_WRITES:g}",
         writes <= GOAL_WRITES),
    ]  # fmt: skip
    print(f"\nvm-dhcp agents, 2 replicas on {len(AGENT_NODES)} nodes, probe every "
          f"{INTERVAL:g} s, {runs} runs each")  # fmt: skip
    print(f"{'measure':<46} {'result':>9} {'goal':>9}  ok")
    for name, value, goal, ok in rows:
        mark = "" if ok is None else "yes" if ok else "NO"
        print(f"{name:<46} {value:>9.2f} {goal:>9}  {mark}")
    return 0 if all(ok for *_, ok in rows if ok is not None) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as work:
        return run(args.runs, Path(work))


if __name__ == "__main__":
    sys.exit(main())

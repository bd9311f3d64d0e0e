"""End to end with agent replicas (`--agent-replicas 2`, the default): the controller's
two agent pods run in the node simulator on three nodes that carry the VM network (and a
fourth that does not), each pod in its own network namespace on that network; one serves.
A VM's dhclient keeps renewing when the serving agent's node dies (frozen process, link
cut, NotReady), through an agent image roll-out and through a drain of the serving agent's
node; a serving agent cut off from the API server lets go of the server address before a
standby takes it; and the controller brings the pool back to two ready agents, spread over
nodes, without anyone's help."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi, RbacAuthorizationV1Api

from tests.agentproc import running_controller, wait_for
from tests.cluster import Cluster, create_namespace, delete_namespace, unique_namespace_name
from tests.integration.test_end_to_end import (
    IMAGE,
    System,
    _lab_possible,  # noqa: F401 (an autouse fixture)
    _try,
    grant_agent,
    seed_network,
)
from tests.netns.lab import Dhclient, Lab
from tests.nodesim import NodeSimulator, SimulatedPod

pytestmark = [pytest.mark.cluster, pytest.mark.netns]

SERVER = IPv4Interface("192.168.48.77/24")
RETRANSMITS_S = 4.0
"""dhclient (initial-interval 1) retransmits after about 1 s, then about 2 s more."""


def grant_leases(api: ApiClient, agents: str) -> None:
    """The chart's Role for replicas: the Leases of the agent namespace."""
    rbac = RbacAuthorizationV1Api(api)
    rules = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
              "verbs": ["create", "get", "update", "list", "watch"]}]  # fmt: skip
    rbac.create_namespaced_role(agents, {"metadata": {"name": "leases"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        agents,
        {
            "metadata": {"name": "leases"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"},
            "subjects": [{"kind": "ServiceAccount", "name": "vm-dhcp-agent", "namespace": agents}],
        },
    )


AGENT_NODES = ("sim-node-0", "sim-node-1", "sim-node-2")
NO_NETWORK = "sim-node-nonet"
"""A node without the cluster network's label: no agent may land there."""


class HA(System):
    """The system with agent replicas, and a controller that can be restarted."""

    stack: contextlib.ExitStack
    workdir: Path

    def restart_controller(self, image: str) -> None:
        """The controller restarted with another agent image: an upgrade's roll-out."""
        self.controller.process.terminate()
        self.controller.process.wait(timeout=30)
        self.controller = self.stack.enter_context(
            running_controller(controller_args(self.cluster, self.agents, image),
                               self.workdir / f"controller-{image.rpartition(':')[2]}.log")
        )  # fmt: skip


def controller_args(cluster: Cluster, agents: str, image: str) -> list[str]:
    return [
        "--name", "e2e-ha-controller", "--namespace", agents, "--image", image,
        "--service-account-name", "vm-dhcp-agent", "--no-leader-election",
        "--agent-replicas", "2", "--agent-replace-after", "3",
        "--kubeconfig", str(cluster.kubeconfig), "--enable-cache-dump-api",
    ]  # fmt: skip


@pytest.fixture
def ha(cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path) -> Iterator[HA]:
    agents = unique_namespace_name("e2e-ha-agents")
    create_namespace(api_client, agents)
    grant_agent(api_client, agents)
    grant_leases(api_client, agents)
    agent_kubeconfig = cluster.mint(f"system:serviceaccount:{agents}:vm-dhcp-agent")
    custom = CustomObjectsApi(api_client)
    seed_network(custom, namespace)
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(
            Lab(tmp_path, network="192.168.48.0/24", server_ip="192.168.48.250")
        )
        sim = stack.enter_context(
            NodeSimulator(
                lab, api_client, agent_kubeconfig, agents, nodes=AGENT_NODES,
                unlabelled=[NO_NETWORK],
            )
        )  # fmt: skip
        controller = stack.enter_context(
            running_controller(controller_args(cluster, agents, IMAGE), tmp_path / "controller.log")
        )
        system = HA(cluster, custom, namespace, agents, lab, sim, controller)
        system.stack, system.workdir = stack, tmp_path
        yield system
    delete_namespace(api_client, agents)


def serving(system: System) -> str | None:
    status = system.pool().get("status") or {}
    if system.condition("AgentReady") != "True":
        return None
    return str((status.get("agentPodRef") or {}).get("name") or "") or None


def agent_ready_message(system: System) -> str:
    for condition in (system.pool().get("status") or {}).get("conditions") or []:
        if condition["type"] == "AgentReady":
            return str(condition.get("message") or "")
    return ""


def ready_agents(system: System) -> list[str]:
    pods = system.sim.core.list_namespaced_pod(system.agents).items
    return [
        p.metadata.name
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


class Renewals:
    """A VM that keeps asking: its dhclient run again and again from its lease file (an
    INIT-REBOOT exchange each time, about once a second), in a thread. A run that gets no
    answer within its 10 s (dhclient's own retries included) is a failure."""

    def __init__(self, client: Dhclient) -> None:
        self.client = client
        self.results: list[tuple[float, str | None, str]] = []
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                lease = self.client.acquire()
                self.results.append((time.monotonic(), str(lease.ip), str(lease.server_id)))
            except Exception as exc:  # a failed run is what the test looks for
                self.results.append((time.monotonic(), None, str(exc)[:300]))
            self.durations.append(time.monotonic() - began)

    def answered_after(self, t: float) -> bool:
        return any(at > t and ip for at, ip, _ in list(self.results))

    def stop(self) -> list[tuple[float, str | None, str]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return list(self.results)


class Holders:
    """Which agent pods hold the server address, sampled every 100 ms in a thread."""

    def __init__(self, system: HA) -> None:
        self.system = system
        self.most = 0
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> list[str]:
        pods = list(self.system.sim.pods.values())
        return sorted(p.name for p in pods if not p.crashed and SERVER in _addresses(p))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            holding = self.now()
            self.most = max(self.most, len(holding))
            if holding and (not self.seen or self.seen[-1] != holding[0]):
                self.seen.append(holding[0])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.most


def _addresses(pod: SimulatedPod) -> list[IPv4Interface]:
    try:
        return pod.netns.addresses()
    except Exception:  # the pod's namespace went away meanwhile
        return []


def first_lease(system: HA, vm: str, mac: str) -> tuple[Dhclient, str]:
    """Two ready agents on two nodes (none on the node without the network) and a VM's lease."""
    wait_for(lambda: serving(system), 60, "an agent serving the pool")
    wait_for(lambda: len(ready_agents(system)) == 2, 30, "two ready agents")
    nodes = {system.sim.node_of(name) for name in ready_agents(system)}
    assert len(nodes) == 2, f"the replicas share a node: {nodes}"
    assert NO_NETWORK not in nodes
    system.vm(vm, mac)
    address = wait_for(lambda: system.allocated(vm), 15, "the allocation")
    client = Dhclient(system.lab.add_client(mac=mac), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "a first lease")
    assert str(lease.ip) == address
    assert lease.server_id == SERVER.ip
    return client, address


def pod_uids(system: HA) -> dict[str, str]:
    pods = system.sim.core.list_namespaced_pod(system.agents).items
    return {p.metadata.name: p.metadata.uid for p in pods if not p.metadata.deletion_timestamp}


def assert_kept_renewing(renewals: Renewals, address: str) -> None:
    """Every run answered, with the same address from the same server address, none slower
    than dhclient's first two retransmissions (a lost exchange or two, not an outage)."""
    results = renewals.stop()
    failures = [detail for _, ip, detail in results if ip is None]
    assert not failures, f"{len(failures)} of {len(results)} renewals failed: {failures[:2]}"
    assert {ip for _, ip, _ in results} == {address}
    assert {server for *_, server in results} == {str(SERVER.ip)}
    assert len(results) >= 3, results
    slowest = max(renewals.durations)
    assert slowest < RETRANSMITS_S, f"a renewal took {slowest:.1f} s: {renewals.durations}"


def test_a_vm_keeps_its_address_when_the_serving_agents_node_dies(ha: HA) -> None:
    client, address = first_lease(ha, "ha-vm", "fa:cf:8e:50:82:fc")
    client.stop()  # keep the lease file: the next acquire is an INIT-REBOOT renewal
    leader = serving(ha)
    assert leader is not None
    crashed = ha.sim.pod(leader)
    assert crashed is not None
    assert SERVER in crashed.netns.addresses()
    dead = crashed.node
    began = time.monotonic()
    ha.sim.crash_node(dead)
    ha.restart_controller(IMAGE)  # as if the controller's leader had died with that node
    renewed = wait_for(lambda: _try(client), 60, "a renewal from the other agent")
    answered_after = time.monotonic() - began
    assert str(renewed.ip) == address
    assert renewed.server_id == SERVER.ip
    assert answered_after < 30, answered_after  # lease 12 s, plus the client's retries
    wait_for(lambda: serving(ha) not in (None, leader), 30, "the status naming the new leader")
    # the controller replaces the dead node's pod on another node (never force-deleting it)
    wait_for(lambda: len(ready_agents(ha)) == 2 and leader not in ready_agents(ha), 60, "healed")
    assert dead not in {ha.sim.node_of(name) for name in ready_agents(ha)}
    assert leader in pod_uids(ha), "the dead node's pod was deleted"
    events = ha.sim.core.list_namespaced_event(ha.ns).items
    reasons = {e.reason for e in events}
    assert {"AgentFailover", "AgentReplaced"} <= reasons, reasons

    # the node comes back: its pod runs again, one replica too many goes, one serves
    holders = Holders(ha)
    ha.sim.recover_node(dead)
    wait_for(lambda: len(pod_uids(ha)) == 2 and len(ready_agents(ha)) == 2, 60, "two again")
    assert _try(client) is not None
    assert holders.stop() <= 1


def test_a_vm_keeps_renewing_through_an_agent_image_roll_out(ha: HA) -> None:
    client, address = first_lease(ha, "roll-vm", "fa:cf:8e:50:82:fd")
    before = pod_uids(ha)
    renewals = Renewals(client)
    wait_for(lambda: renewals.answered_after(0), 30, "renewals going")
    holders = Holders(ha)
    new_image = "registry.example/vm-dhcp-agent:v2"
    ha.restart_controller(new_image)

    def rolled() -> bool:
        pods = ha.sim.core.list_namespaced_pod(ha.agents).items
        fresh = [
            p
            for p in pods
            if not p.metadata.deletion_timestamp and p.spec.containers[0].image == new_image
        ]
        return len(fresh) == 2 and len(ready_agents(ha)) == 2

    wait_for(rolled, 120, "the roll-out")
    ended = time.monotonic()
    wait_for(lambda: renewals.answered_after(ended), 30, "a renewal after the roll-out")
    assert_kept_renewing(renewals, address)
    assert holders.stop() <= 1
    after = pod_uids(ha)
    assert not set(before.values()) & set(after.values()), "a replica was not replaced"
    rollouts = [
        e.message for e in ha.sim.core.list_namespaced_event(ha.ns).items
        if e.reason == "AgentRollout"
    ]  # fmt: skip
    assert any("(a standby)" in m for m in rollouts), rollouts
    assert any("(the serving agent)" in m for m in rollouts), rollouts


def test_a_vm_keeps_renewing_through_drains(ha: HA) -> None:
    client, address = first_lease(ha, "drain-vm", "fa:cf:8e:50:82:fe")
    leader = serving(ha)
    assert leader is not None
    first = ha.sim.node_of(leader)
    renewals = Renewals(client)
    wait_for(lambda: renewals.answered_after(0), 30, "renewals going")
    holders = Holders(ha)
    ha.sim.drain(first)
    # then the node of the other replica, at once: the budget holds that eviction until the
    # first one's replacement is Ready, so the pool never has no agent
    second = ha.sim.node_of(wait_for(lambda: serving(ha) if serving(ha) != leader else None,
                                     30, "the standby serving"))  # fmt: skip
    assert second != first
    ha.sim.drain(second)
    wait_for(lambda: len(ready_agents(ha)) == 2, 60, "two ready agents")
    ended = time.monotonic()
    wait_for(lambda: renewals.answered_after(ended), 30, "a renewal after the drains")
    assert_kept_renewing(renewals, address)
    assert holders.stop() <= 1
    # both replicas on the one node left (anti-affinity is preferred, not required), and
    # the pool's status says so
    (last,) = set(AGENT_NODES) - {first, second}
    assert {ha.sim.node_of(name) for name in ready_agents(ha)} == {last}
    wait_for(lambda: f"all on node {last}" in agent_ready_message(ha), 30, "the warning")


def test_a_leader_cut_off_from_the_api_lets_go_before_a_standby_serves(ha: HA) -> None:
    client, address = first_lease(ha, "cut-vm", "fa:cf:8e:50:82:ff")
    client.stop()
    leader = serving(ha)
    assert leader is not None
    node = ha.sim.node_of(leader)
    holders = Holders(ha)
    ha.sim.cut_off(node)
    # still on the VM network, so it could go on answering: it must stop first
    wait_for(lambda: holders.now() and leader not in holders.now(), 60, "another holder")
    renewed = wait_for(lambda: _try(client), 30, "a renewal from the new leader")
    assert str(renewed.ip) == address
    ha.sim.recover_node(node)
    wait_for(lambda: len(pod_uids(ha)) == 2 and len(ready_agents(ha)) == 2, 60, "two again")
    assert _try(client) is not None
    assert holders.stop() <= 1, "two agents held the server address at once"
    assert holders.seen[0] == leader
    assert leader not in holders.seen[1:], holders.seen

"""A rogue DHCP server, end to end: the agent serving an IPPool from the test API server (under
the chart's grants: read IPPools, post Events, Leases in its namespace) probes the VM network
in a network namespace; a dnsmasq started on that network is reported within two check
intervals in the agent's metrics, as a Warning Event on the IPPool and, through the agent's
report Lease and the controller, as the pool's `RogueDHCPServer` condition, which
`kubectl describe ippl` shows; once dnsmasq stops, all of it clears. Meanwhile a VM's
client still gets its address from the agent.

Needs root and the lab's binaries (tests/netns) besides the test API server."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)

from tests.agentproc import free_port, running_controller, wait_for
from tests.cluster import Cluster, create_namespace, delete_namespace, unique_namespace_name
from tests.integration.test_end_to_end import allocated_address, create_vm, seed_network
from tests.netns.lab import (
    Dhclient,
    Lab,
    LabError,
    Netns,
    Proc,
    agent_command,
    clean_env,
    skip_reason,
)
from tests.netns.lab import metric_value as metric_in
from tests.netns.lab import wait_for as lab_wait_for
from tests.netns.test_rogue import RogueDnsmasq, rogue_node
from tests.nodesim import PortForward, api_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]
log = logging.getLogger(__name__)

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
INTERVAL = 2.0
SERVER_IP = IPv4Address("192.168.48.77")  # the seed pool's (tests/integration/test_end_to_end.py)
ROGUE_IP = IPv4Address("192.168.48.9")
VM_MAC = "02:00:00:00:48:31"


def grant_agent_as_the_chart_does(api: ApiClient, agents: str) -> None:
    """The chart's agent grants: IPPools list and watch, Events create (cluster-wide), and
    Leases in its own namespace (the election, and the report to the controller)."""
    rbac = RbacAuthorizationV1Api(api)
    name = f"vm-dhcp-agent-{agents}"
    subject = [{"kind": "ServiceAccount", "name": "vm-dhcp-agent", "namespace": agents}]
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["ippools"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": subject,
        }
    )
    leases = ["create", "get", "update", "list", "watch"]
    rbac.create_namespaced_role(
        agents,
        {
            "metadata": {"name": "agent-leases"},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": leases}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        agents,
        {
            "metadata": {"name": "agent-leases"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "agent-leases",
            },
            "subjects": subject,
        },
    )


@dataclass
class Replica:
    """An agent process in a namespace of its own on the VM network, as a pod would be."""

    netns: Netns
    proc: Proc
    port: int

    def metrics(self) -> str:
        code, body = self.netns.curl(f"http://127.0.0.1:{self.port}/metrics")
        if code != 200:
            raise LabError(f"/metrics: {code}\n{self.proc.tail()}")
        return body

    def metric(self, name: str, **labels: str) -> float:
        return metric_in(self.metrics(), name, **labels)


@dataclass
class World:
    custom: CustomObjectsApi
    core: CoreV1Api
    kubectl: Callable[..., str]
    ns: str
    agents: str
    lab: Lab
    kubeconfig: Path
    stack: contextlib.ExitStack

    def start(self, name: str, *extra: str, address: bool = False) -> Replica:
        """An agent of the pool on the VM network (`address`: with the server address on
        its NIC, as the single pod's ip-setter puts it), ready."""
        netns = self.lab.add_client(iface="eth1")
        if address:
            netns.set_address(IPv4Interface(f"{SERVER_IP}/24"))
        forward = PortForward(netns.name, api_port(self.kubeconfig))
        self.stack.callback(forward.close)
        port = free_port()
        argv = [
            *agent_command(),
            "--ippool-ref", f"{self.ns}/net-48", "--nic", "eth1", "--name", name,
            "--namespace", self.agents, "--kubeconfig", str(self.kubeconfig),
            "--http-port", str(port), "--rogue-check-interval", str(INTERVAL), *extra,
        ]  # fmt: skip
        env = clean_env(PYTHONUNBUFFERED="1")
        proc = netns.popen(argv, netns.workdir / "agent.log", env=env)
        self.stack.callback(proc.stop)

        def ready() -> bool:
            if not proc.alive():
                raise LabError(f"agent exited\n{proc.tail()}")
            return netns.curl(f"http://127.0.0.1:{port}/readyz", 1.0)[0] == 200

        lab_wait_for("the agent's /readyz", ready, 30, interval=0.05, details=proc.tail)
        return Replica(netns, proc, port)

    def pool(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "ippools", "net-48"
        )
        return body

    def condition(self) -> dict[str, Any] | None:
        for condition in (self.pool().get("status") or {}).get("conditions") or []:
            if condition["type"] == "RogueDHCPServer":
                return dict(condition)
        return None

    def events(self, reason: str) -> list[str]:
        items = self.core.list_namespaced_event(self.ns).items
        return [
            e.message for e in items if e.reason == reason and e.involved_object.kind == "IPPool"
        ]

    def report_leases(self) -> list[Any]:
        api = CoordinationV1Api(self.custom.api_client)
        selector = f"{GROUP}/agent-report=true"
        return list(api.list_namespaced_lease(self.agents, label_selector=selector).items)

    def allocated(self, vm: str) -> str | None:
        return allocated_address(self.custom, self.ns, vm)

    def vm(self, name: str, mac: str) -> None:
        create_vm(self.custom, self.ns, name, mac)


@pytest.fixture
def world(
    cluster: Cluster,
    api_client: ApiClient,
    namespace: str,
    kubectl: Callable[..., str],
    tmp_path: Path,
) -> Iterator[World]:
    agents = unique_namespace_name("rogue-agents")
    create_namespace(api_client, agents)
    grant_agent_as_the_chart_does(api_client, agents)
    agent_kubeconfig = cluster.mint(f"system:serviceaccount:{agents}:vm-dhcp-agent")
    custom = CustomObjectsApi(api_client)
    seed_network(custom, namespace)
    args = [
        "--name", "rogue-controller", "--namespace", agents, "--no-agent",
        "--no-leader-election", "--kubeconfig", str(cluster.kubeconfig),
    ]  # fmt: skip
    try:
        with (
            # the lab's own server namespace holds another address: the agents hold the pool's
            Lab(tmp_path, network="192.168.48.0/24", server_ip="192.168.48.250") as lab,
            running_controller(args, tmp_path / "controller.log"),
            contextlib.ExitStack() as stack,
        ):
            core = CoreV1Api(api_client)
            yield World(custom, core, kubectl, namespace, agents, lab, agent_kubeconfig, stack)
    finally:
        delete_namespace(api_client, agents)


def _lease(client: Dhclient) -> Any:
    try:
        return client.acquire()
    except Exception:
        return None


def test_a_rogue_dnsmasq_is_reported_as_metric_event_and_condition_then_cleared(
    world: World,
) -> None:
    agent = world.start("net-48-agent", address=True)  # one agent, no election: upstream's
    probes = "vmdhcp_agent_rogue_probes_total"
    wait_for(lambda: agent.metric(probes) >= 2, 30, "two probes")
    # nothing foreign on the network: nothing reported, and no report Lease written at all
    assert agent.metric("vmdhcp_agent_rogue_servers") == 0
    assert world.condition() is None
    assert world.report_leases() == []

    node: Netns = rogue_node(world.lab, ROGUE_IP)
    rogue = RogueDnsmasq(node, ignore=(VM_MAC,), network=world.lab.network).start()
    began = time.monotonic()
    seen: dict[str, float] = {}

    def all_three() -> bool:
        now = time.monotonic() - began
        if "metric" not in seen and agent.metric("vmdhcp_agent_rogue_servers") == 1:
            seen["metric"] = now
        if "event" not in seen and world.events("RogueDHCPServer"):
            seen["event"] = now
        condition = world.condition()
        if "condition" not in seen and condition and condition["status"] == "True":
            seen["condition"] = now
        return len(seen) == 3

    wait_for(all_three, 2 * INTERVAL, f"metric, Event and condition (seen: {seen})")
    info = agent.metric("vmdhcp_agent_rogue_server_info", server_id=str(ROGUE_IP), mac=node.mac)
    assert info == 1
    (message,) = world.events("RogueDHCPServer")
    assert str(ROGUE_IP) in message, message
    assert node.mac in message, message
    condition = world.condition()
    assert condition is not None
    assert condition["reason"] == "RogueServerSeen"
    assert str(ROGUE_IP) in condition["message"]
    assert node.mac in condition["message"]
    described = world.kubectl("describe", "ippl", "net-48", "-n", world.ns)
    assert "RogueDHCPServer" in described, described
    assert str(ROGUE_IP) in described, described

    # the agent still serves its VM, and the controller's own status writes (the VM's
    # allocation) keep the condition
    world.vm("vm-1", VM_MAC)
    address = wait_for(lambda: world.allocated("vm-1"), 15, "the VM's allocation")
    wait_for(
        lambda: (
            ((world.pool().get("status") or {}).get("ipv4") or {}).get("allocated", {}).get(address)
        ),
        15,
        "the allocation in the pool's status",
    )
    assert (world.condition() or {}).get("status") == "True"
    client = Dhclient(world.lab.add_client(mac=VM_MAC), timeout=10)
    lease = wait_for(lambda: _lease(client), 30, "the VM's lease from the agent")
    assert str(lease.ip) == address
    assert lease.server_id == SERVER_IP

    rogue.stop()
    stopped = time.monotonic()

    def cleared() -> bool:
        condition = world.condition() or {}
        return (
            condition.get("status") == "False"
            and agent.metric("vmdhcp_agent_rogue_servers") == 0
            and bool(world.events("RogueDHCPServerGone"))
        )

    wait_for(cleared, 5 * INTERVAL * 1.1 + 2, "the rogue server to be forgotten")
    assert time.monotonic() - stopped >= 2 * INTERVAL * 0.9
    condition = world.condition()
    assert condition is not None
    assert condition["reason"] == "NoRogueServer"
    assert agent.metric("vmdhcp_agent_rogue_server_info") == 0
    log.info(
        "reported after %s; cleared %.2fs after dnsmasq stopped",
        {k: round(v, 2) for k, v in seen.items()},
        time.monotonic() - stopped,
    )


def test_only_the_serving_replica_looks_and_a_failover_keeps_the_condition(
    world: World,
) -> None:
    replicas = [world.start(name, "--leader-election") for name in ("agent-a", "agent-b")]

    def leader() -> Replica | None:
        leading = [r for r in replicas if r.metric("vmdhcp_agent_leader") == 1]
        return leading[0] if len(leading) == 1 else None

    first = wait_for(leader, 30, "one leader")
    standby = next(r for r in replicas if r is not first)
    node = rogue_node(world.lab, ROGUE_IP)
    rogue = RogueDnsmasq(node, network=world.lab.network).start()
    wait_for(
        lambda: (world.condition() or {}).get("status") == "True", 2 * INTERVAL + 2, "condition"
    )
    assert first.metric("vmdhcp_agent_rogue_servers") == 1
    # the standby neither probes nor looks, though the foreign OFFERs reach it too
    assert standby.metric("vmdhcp_agent_rogue_probes_total") == 0
    assert standby.metric("vmdhcp_agent_rogue_servers") == 0
    assert standby.metric("vmdhcp_agent_rogue_frames_total") == 0

    samples: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(str((world.condition() or {}).get("status")))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert first.proc.stop() == 0
        wait_for(lambda: standby.metric("vmdhcp_agent_leader") == 1, 30, "the takeover")
        # the new leader starts from the report (no flapping), and sees the server itself
        wait_for(
            lambda: standby.metric("vmdhcp_agent_rogue_frames_total", result="foreign") >= 1,
            3 * INTERVAL,
            "the new leader's own sighting",
        )
        assert standby.metric("vmdhcp_agent_rogue_servers") == 1
    finally:
        stop.set()
        sampler.join()
    assert samples
    assert set(samples) == {"True"}, samples

    # the server goes and the leader with it, before it was forgotten: the next leader,
    # which never saw it, still clears it (it starts from the report, then forgets)
    third = world.start("agent-c", "--leader-election")
    rogue.stop()
    assert standby.proc.stop() == 0
    wait_for(lambda: third.metric("vmdhcp_agent_leader") == 1, 30, "the second takeover")
    wait_for(
        lambda: (world.condition() or {}).get("status") == "False",
        5 * INTERVAL * 1.1 + 2,
        "the condition to clear",
    )
    assert third.metric("vmdhcp_agent_rogue_frames_total", result="foreign") == 0
    assert third.metric("vmdhcp_agent_rogue_servers") == 0


def test_a_starting_controller_waits_for_the_reports_before_it_reconciles_a_pool(
    cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The reports are listed before the first pool reconcile: a controller that starts
    while a report says a rogue server is there keeps RogueDHCPServer True throughout (before,
    a reconcile ahead of the report listing set it False, then True again, its
    lastTransitionTime reset). No lab: only the API server and the controller."""
    from kubernetes import watch

    from vmdhcp.agent.report import AgentReport, ReportedServer, lease_body

    agents = unique_namespace_name("report-agents")
    create_namespace(api_client, agents)
    custom = CustomObjectsApi(api_client)
    seed_network(custom, namespace)
    pool = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", "net-48")
    server = ReportedServer(str(ROGUE_IP), "02:00:00:00:00:09", "2026-12-05T07:00:00Z")
    report = AgentReport((namespace, "net-48"), pool["metadata"]["uid"], "a-0", 60.0, (server,))
    CoordinationV1Api(api_client).create_namespaced_lease(
        agents, lease_body(report, agents, "a-0", None)
    )
    args = [
        "--name", "rogue-controller", "--namespace", agents, "--no-agent",
        "--no-leader-election", "--kubeconfig", str(cluster.kubeconfig),
    ]  # fmt: skip

    def rogue_condition() -> dict[str, Any] | None:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", "net-48")
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition["type"] == "RogueDHCPServer":
                return dict(condition)
        return None

    try:
        with running_controller(args, tmp_path / "first.log"):
            first = wait_for(
                lambda: (c := rogue_condition()) and c["status"] == "True" and c,
                30,
                "RogueDHCPServer True",
            )
        seen: list[str] = []
        version = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "ippools", "net-48"
        )["metadata"]["resourceVersion"]
        stream = watch.Watch()

        def follow() -> None:
            with contextlib.suppress(Exception):  # the stream ends when the test stops it
                _follow()

        def _follow() -> None:
            for event in stream.stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "ippools",
                resource_version=version,
                timeout_seconds=60,
            ):
                for condition in (event["object"].get("status") or {}).get("conditions") or []:
                    if condition["type"] == "RogueDHCPServer":
                        seen.append(condition["status"])

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        with running_controller(args, tmp_path / "second.log"):
            # an allocation's status write comes after the pool's first reconcile
            nic = {"name": "nic-1", "bridge": {}, "macAddress": VM_MAC}
            network = {"name": "nic-1", "multus": {"networkName": f"{namespace}/net-48"}}
            devices = {"domain": {"devices": {"interfaces": [nic]}}, "networks": [network]}
            vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                  "metadata": {"name": "vm-1"},
                  "spec": {"template": {"spec": devices}}}  # fmt: skip
            custom.create_namespaced_custom_object(
                "kubevirt.io", "v1", namespace, "virtualmachines", vm
            )

            def allocated() -> bool:
                body = custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "ippools", "net-48"
                )
                return (
                    VM_MAC
                    in ((body.get("status") or {}).get("ipv4") or {}).get("allocated", {}).values()
                )

            wait_for(allocated, 30, "the VM's address in the pool's status")
        stream.stop()
        assert seen, "the pool's status was written after the restart"
        assert set(seen) == {"True"}, f"RogueDHCPServer flapped: {seen}"
        last = rogue_condition()
        assert last is not None
        assert last["lastTransitionTime"] == first["lastTransitionTime"]
    finally:
        delete_namespace(api_client, agents)

"""End to end: a VM is created, the controller allocates, an agent pod appears, the node
simulator runs it in a network namespace on the VM network's bridge, and a real DHCP
client with the VM's MAC gets exactly the allocated address and options.

Needs root and the lab's binaries (tests/netns); skipped with the reason otherwise."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi, RbacAuthorizationV1Api

from tests.agentproc import AgentProcess, running_controller, wait_for
from tests.cluster import Cluster, create_namespace, delete_namespace, unique_namespace_name
from tests.netns.lab import Dhclient, Lab, skip_reason
from tests.nodesim import NodeSimulator, Runner, run_in_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.netns]

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
IMAGE = "registry.example:5000/vm-dhcp-agent:dev"
SEED_POOL = {
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
        "ntp": ["192.168.48.5"],
        "leaseTime": 300,
    }
}


@pytest.fixture(scope="module", autouse=True)
def _lab_possible() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


@dataclass
class System:
    cluster: Cluster
    custom: CustomObjectsApi
    ns: str
    agents: str
    lab: Lab
    sim: NodeSimulator
    controller: AgentProcess

    def pool(self) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "ippools", "net-48"
        )
        return result

    def condition(self, kind: str) -> str | None:
        for condition in (self.pool().get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return str(condition["status"])
        return None

    def vm(self, name: str, mac: str) -> None:
        create_vm(self.custom, self.ns, name, mac)

    def allocated(self, vm: str) -> str | None:
        return allocated_address(self.custom, self.ns, vm)


def create_vm(custom: CustomObjectsApi, namespace: str, name: str, mac: str) -> None:
    """A VirtualMachine with one NIC of MAC `mac` on `<namespace>/net-48`."""
    nic = {"name": "nic-1", "bridge": {}, "macAddress": mac}
    network = {"name": "nic-1", "multus": {"networkName": f"{namespace}/net-48"}}
    template = {"spec": {"domain": {"devices": {"interfaces": [nic]}}, "networks": [network]}}
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"template": template},
    }
    custom.create_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines", body)


def allocated_address(custom: CustomObjectsApi, namespace: str, vm: str) -> str | None:
    """The address the VM's vmnetcfg status shows Allocated, if any yet."""
    try:
        cfg = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "virtualmachinenetworkconfigs", vm
        )
    except Exception:
        return None
    for entry in (cfg.get("status") or {}).get("networkConfigs") or []:
        if entry.get("state") == "Allocated":
            return str(entry["allocatedIPAddress"])
    return None


def grant_agent(api: ApiClient, agents: str) -> None:
    """What the chart gives the agent's service account: read IPPools, post Events."""
    rbac = RbacAuthorizationV1Api(api)
    name = f"vm-dhcp-agent-{agents}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["ippools"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
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
            "subjects": [{"kind": "ServiceAccount", "name": "vm-dhcp-agent", "namespace": agents}],
        }
    )


def seed_network(custom: CustomObjectsApi, namespace: str) -> None:
    """The NAD `<namespace>/net-48` (cluster network mgmt) and the seed IPPool on it."""
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": "net-48",
            "labels": {"network.harvesterhci.io/clusternetwork": "mgmt"},
        },
        "spec": {"config": "{}"},
    }
    custom.create_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", namespace, "network-attachment-definitions", nad
    )
    spec = copy.deepcopy(SEED_POOL)
    spec["networkName"] = f"{namespace}/net-48"
    pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": "net-48"}}
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "ippools", {**pool, "spec": spec}
    )


@pytest.fixture
def system(
    cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> Iterator[System]:
    with running_system(cluster, api_client, namespace, tmp_path, IMAGE, "e2e-agents") as system:
        yield system


@contextmanager
def running_system(
    cluster: Cluster,
    api_client: ApiClient,
    namespace: str,
    tmp_path: Path,
    image: str,
    agents_prefix: str,
    runner: Runner = run_in_namespace,
) -> Iterator[System]:
    """The seed network, a controller with one agent pod per pool (`image`), and the node
    simulator running that pod with `runner`, in an agent namespace of its own."""
    agents = unique_namespace_name(agents_prefix)
    create_namespace(api_client, agents)
    grant_agent(api_client, agents)
    agent_kubeconfig = cluster.mint(f"system:serviceaccount:{agents}:vm-dhcp-agent")
    custom = CustomObjectsApi(api_client)
    seed_network(custom, namespace)
    args = [
        "--name", "e2e-controller", "--namespace", agents, "--image", image,
        "--service-account-name", "vm-dhcp-agent", "--no-leader-election", "--agent-replicas", "1",
        "--kubeconfig", str(cluster.kubeconfig), "--enable-cache-dump-api",
    ]  # fmt: skip
    with (
        Lab(tmp_path, network="192.168.48.0/24", server_ip="192.168.48.250") as lab,
        NodeSimulator(lab, api_client, agent_kubeconfig, agents, runner=runner) as sim,
        running_controller(args, tmp_path / "controller.log") as controller,
    ):
        yield System(cluster, custom, namespace, agents, lab, sim, controller)
    delete_namespace(api_client, agents)


def test_a_vm_gets_its_address_from_the_agent_the_controller_started(system: System) -> None:
    wait_for(lambda: system.condition("AgentReady") == "True", 30, "the agent pod to be ready")
    system.vm("test-vm", "fa:cf:8e:50:82:fc")
    address = wait_for(lambda: system.allocated("test-vm"), 15, "the allocation")
    assert address == "192.168.48.82"

    vm = system.lab.add_client(mac="fa:cf:8e:50:82:fc")
    client = Dhclient(vm, timeout=10)
    # the agent learns the allocation from the IPPool status a moment after the vmnetcfg
    lease = wait_for(lambda: _try(client), 30, "dhclient to get a lease")
    assert lease.ip == IPv4Address("192.168.48.82")
    assert lease.mask == IPv4Address("255.255.255.0")
    assert lease.routers == (IPv4Address("192.168.48.1"),)
    assert lease.dns == (IPv4Address("1.1.1.1"),)
    assert lease.domain == "aibao.moe"
    assert lease.search == ("aibao.moe",)
    assert lease.ntp == (IPv4Address("192.168.48.5"),)
    assert lease.lease_time == 300
    assert lease.server_id == IPv4Address("192.168.48.77")


def _try(client: Dhclient) -> Any:
    try:
        return client.acquire()
    except Exception:
        return None


def _ready_lease(system: System, mac: str, name: str) -> tuple[Dhclient, Any]:
    wait_for(lambda: system.condition("AgentReady") == "True", 30, "the agent pod to be ready")
    system.vm(name, mac)
    wait_for(lambda: system.allocated(name), 15, "the allocation")
    client = Dhclient(system.lab.add_client(mac=mac), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "a first lease")
    client.stop()  # keep the lease file: the next acquire is an INIT-REBOOT renewal
    return client, lease


def agent_pod_name(system: System) -> str:
    return f"{system.ns}-net-48-agent"


def test_dns_change_reaches_the_next_renewal_without_restarts(system: System) -> None:
    client, lease = _ready_lease(system, "02:00:00:00:48:01", "vm-dns")
    assert lease.dns == (IPv4Address("1.1.1.1"),)
    pod = system.sim.pod(agent_pod_name(system))
    assert pod is not None
    assert pod.proc is not None
    pid = pod.proc.pid
    system.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        system.ns,
        "ippools",
        "net-48",
        {"spec": {"ipv4Config": {"dns": ["9.9.9.9"]}}},
    )

    def renewed_with_new_dns() -> Any:
        result = _try(client)
        client.stop()
        return result if result is not None and result.dns == (IPv4Address("9.9.9.9"),) else None

    renewed = wait_for(renewed_with_new_dns, 30, "a renewal carrying the new DNS")
    assert renewed.ip == lease.ip
    assert pod.proc.pid == pid
    assert pod.restarts == 0


def test_agent_killed_while_clients_renew(system: System) -> None:
    client, lease = _ready_lease(system, "02:00:00:00:48:02", "vm-kill")
    name = agent_pod_name(system)
    killed = system.sim.kill_agent(name)
    pod = system.sim.pod(name)
    assert pod is not None
    wait_for(lambda: pod.restarts == 1 and pod.proc is not None and pod.proc.pid != killed, 15,
             "the agent to be restarted")  # fmt: skip
    for _ in range(3):
        renewed = wait_for(lambda: _try(client), 30, "a renewal after the restart")
        client.stop()
        assert renewed.ip == lease.ip
    wait_for(lambda: system.condition("AgentReady") == "True", 30, "the pod to be ready again")


def test_api_server_away_for_30_seconds(system: System) -> None:
    from tests.integration.test_agent_kubernetes import restart_apiserver_later

    client, lease = _ready_lease(system, "02:00:00:00:48:03", "vm-away")
    pod = system.sim.pod(agent_pod_name(system))
    assert pod is not None
    assert pod.proc is not None
    agent_pid, controller_pid = pod.proc.pid, system.controller.process.pid
    restart = restart_apiserver_later(system.cluster)
    try:
        deadline = 30.0
        import time

        began = time.monotonic()
        while time.monotonic() - began < deadline:
            renewed = wait_for(lambda: _try(client), 15, "a renewal with the API server away")
            client.stop()
            assert renewed.ip == lease.ip
            assert renewed.dns == lease.dns
    finally:
        restart()
    wait_for(lambda: _api_answers(system), 60, "the API server to return")
    system.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        system.ns,
        "ippools",
        "net-48",
        {"spec": {"ipv4Config": {"dns": ["8.8.4.4"]}}},
    )

    def resynchronised() -> Any:
        result = _try(client)
        client.stop()
        return result if result is not None and result.dns == (IPv4Address("8.8.4.4"),) else None

    wait_for(resynchronised, 60, "the agent to resynchronise")
    system.vm("vm-after", "02:00:00:00:48:04")
    wait_for(lambda: system.allocated("vm-after"), 30, "the controller to resynchronise")
    assert pod.proc.pid == agent_pid
    assert system.controller.process.pid == controller_pid
    assert system.controller.process.poll() is None


def _api_answers(system: System) -> bool:
    try:
        system.pool()
    except Exception:
        return False
    return True


def test_an_address_is_reused_only_after_release(system: System) -> None:
    wait_for(lambda: system.condition("AgentReady") == "True", 30, "the agent pod to be ready")
    system.vm("vm-first", "02:00:00:00:48:05")
    first = wait_for(lambda: system.allocated("vm-first"), 15, "the first allocation")
    system.vm("vm-second", "02:00:00:00:48:06")
    second = wait_for(lambda: system.allocated("vm-second"), 15, "the second allocation")
    assert first != second
    system.custom.delete_namespaced_custom_object(
        "kubevirt.io", "v1", system.ns, "virtualmachines", "vm-first"
    )
    wait_for(lambda: system.allocated("vm-first") is None, 15, "the release")
    system.vm("vm-third", "02:00:00:00:48:07")
    third = wait_for(lambda: system.allocated("vm-third"), 15, "the third allocation")
    assert third == first  # lowest free again, and only after the release
    client = Dhclient(system.lab.add_client(mac="02:00:00:00:48:07"), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "the new VM's lease")
    assert str(lease.ip) == first

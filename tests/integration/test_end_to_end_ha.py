"""End to end with agent replicas (`--agent-replicas 2`, the default): the controller's
two agent pods run in the node simulator, each in its own network namespace on the VM
network; one serves. A VM's dhclient keeps renewing when the serving agent's node dies
(frozen process, link cut, pod marked not Ready), and the controller brings the pool back
to two ready agents without anyone's help."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
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
from tests.nodesim import NodeSimulator

pytestmark = [pytest.mark.cluster, pytest.mark.netns]

SERVER = IPv4Interface("192.168.48.77/24")


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


@pytest.fixture
def ha(cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path) -> Iterator[System]:
    agents = unique_namespace_name("e2e-ha-agents")
    create_namespace(api_client, agents)
    grant_agent(api_client, agents)
    grant_leases(api_client, agents)
    agent_kubeconfig = cluster.mint(f"system:serviceaccount:{agents}:vm-dhcp-agent")
    custom = CustomObjectsApi(api_client)
    seed_network(custom, namespace)
    args = [
        "--name", "e2e-ha-controller", "--namespace", agents, "--image", IMAGE,
        "--service-account-name", "vm-dhcp-agent", "--no-leader-election",
        "--agent-replicas", "2", "--agent-replace-after", "3",
        "--kubeconfig", str(cluster.kubeconfig), "--enable-cache-dump-api",
    ]  # fmt: skip
    with (
        Lab(tmp_path, network="192.168.48.0/24", server_ip="192.168.48.250") as lab,
        NodeSimulator(lab, api_client, agent_kubeconfig, agents) as sim,
        running_controller(args, tmp_path / "controller.log") as controller,
    ):
        yield System(cluster, custom, namespace, agents, lab, sim, controller)
    delete_namespace(api_client, agents)


def serving(system: System) -> str | None:
    status = system.pool().get("status") or {}
    if system.condition("AgentReady") != "True":
        return None
    return str((status.get("agentPodRef") or {}).get("name") or "") or None


def ready_agents(system: System) -> list[str]:
    pods = system.sim.core.list_namespaced_pod(system.agents).items
    return [
        p.metadata.name
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_a_vm_keeps_its_address_when_the_serving_agents_node_dies(ha: System) -> None:
    leader = wait_for(lambda: serving(ha), 60, "an agent serving the pool")
    wait_for(lambda: len(ready_agents(ha)) == 2, 30, "two ready agents")
    mac = "fa:cf:8e:50:82:fc"
    ha.vm("ha-vm", mac)
    address = wait_for(lambda: ha.allocated("ha-vm"), 15, "the allocation")
    client = Dhclient(ha.lab.add_client(mac=mac), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "a first lease")
    assert str(lease.ip) == address
    assert lease.server_id == IPv4Address("192.168.48.77")
    client.stop()  # keep the lease file: the next acquire is an INIT-REBOOT renewal

    crashed = ha.sim.pod(leader)
    assert crashed is not None
    assert SERVER in crashed.netns.addresses()
    began = time.monotonic()
    ha.sim.crash_node_of(leader)
    renewed = wait_for(lambda: _try(client), 60, "a renewal from the other agent")
    answered_after = time.monotonic() - began
    assert str(renewed.ip) == address
    assert renewed.server_id == IPv4Address("192.168.48.77")
    assert answered_after < 30, answered_after  # lease 15 s, plus the client's retries
    new_leader = wait_for(lambda: serving(ha) if serving(ha) != leader else None, 30, "status")
    assert new_leader != leader
    # the controller replaces the dead node's pod; the pool has two ready agents again
    wait_for(lambda: len(ready_agents(ha)) == 2 and leader not in ready_agents(ha), 60, "healed")
    events = ha.sim.core.list_namespaced_event(ha.ns).items
    reasons = {e.reason for e in events}
    assert {"AgentFailover", "AgentReplaced"} <= reasons, reasons

"""The node simulator's scheduler and eviction rules (tests/nodesim/scheduling.py), on the
agent pod the controller builds: what the HA end-to-end tests rely on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.nodesim.scheduling import choose_node, eviction_allowed, expression_holds
from vmdhcp.controller.config import Image
from vmdhcp.controller.manifests import agent_pdb, agent_pod

LABEL = "network.harvesterhci.io/mgmt"


def node(name: str, network: bool = True, **spec: Any) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, **({LABEL: "true"} if network else {})}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


def replica(index: int, on: str | None = None, ready: bool = True) -> dict[str, Any]:
    pod: dict[str, Any] = agent_pod(**_pod_args(index))
    pod["spec"]["nodeName"] = on
    flag = "True" if ready else "False"
    pod["status"] = {"conditions": [{"type": "Ready", "status": flag}]}
    return pod


def _pod_args(index: int) -> dict[str, Any]:
    return {
        "pool_namespace": "default",
        "pool_name": "net-48",
        "network_name": "default/net-48",
        "server_ip": "192.168.48.77",
        "cidr": "192.168.48.0/24",
        "cluster_network": "mgmt",
        "agent_namespace": "agents",
        "service_account": "vm-dhcp-agent",
        "image": Image("agent", "v1"),
        "dry_run": False,
        "replica": index,
    }


def test_a_replica_goes_to_a_node_without_another_replica() -> None:
    nodes = [node("a"), node("b"), node("c")]
    assert choose_node(replica(1), nodes, [replica(0, on="a")]) == "b"
    assert choose_node(replica(1), nodes, [replica(0, on="b")]) == "a"


def test_anti_affinity_is_preferred_not_required() -> None:
    assert choose_node(replica(1), [node("a")], [replica(0, on="a")]) == "a"


def test_required_node_affinity_keeps_pods_off_nodes_without_the_network() -> None:
    assert choose_node(replica(0), [node("x", network=False)], []) is None
    assert choose_node(replica(0), [node("x", network=False), node("y")], []) == "y"


def test_cordoned_and_tainted_nodes_take_nothing() -> None:
    cordoned = node("a", unschedulable=True)
    tainted = node("b", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])
    assert choose_node(replica(0), [cordoned, tainted], []) is None
    assert choose_node(replica(0), [cordoned, tainted, node("c")], []) == "c"


def test_the_budget_keeps_one_ready_replica() -> None:
    budget = agent_pdb(
        pool_namespace="default", pool_name="net-48", agent_namespace="agents", replicas=2
    )
    both = [replica(0, "a"), replica(1, "b")]
    assert eviction_allowed(both[0], [budget], both) is None
    one_down = [replica(0, "a"), replica(1, "b", ready=False)]
    assert eviction_allowed(one_down[0], [budget], one_down) is not None
    # AlwaysAllow: the unhealthy one may always go
    assert eviction_allowed(one_down[1], [budget], one_down) is None


@pytest.mark.parametrize(
    ("operator", "values", "labels", "holds"),
    [
        ("In", ["true"], {"k": "true"}, True),
        ("In", ["true"], {}, False),
        ("NotIn", ["true"], {}, True),
        ("Exists", [], {"k": ""}, True),
        ("DoesNotExist", [], {"k": ""}, False),
    ],
)
def test_expressions(operator: str, values: list[str], labels: dict[str, str], holds: bool) -> None:
    expression = {"key": "k", "operator": operator, "values": values}
    assert expression_holds(expression, labels) is holds

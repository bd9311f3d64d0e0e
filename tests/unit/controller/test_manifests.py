import hashlib
import json
import re
from typing import Any

import pytest

from vmdhcp.controller.config import Image
from vmdhcp.controller.manifests import (
    DesiredNic,
    agent_base_name,
    agent_pdb,
    agent_pod,
    agent_pod_name,
    agent_replica_name,
    nics_from_vm,
    vm_networks,
)


def test_agent_pod_names_follow_upstream() -> None:
    assert agent_pod_name("default", "net-48") == "default-net-48-agent"
    long_ns, long_name = "a" * 30, "b" * 40
    full = f"{long_ns}-{long_name}"
    digest = hashlib.sha256(full.encode()).hexdigest()
    assert agent_pod_name(long_ns, long_name) == f"{full[:51]}-{digest[:5]}-agent"
    namespace, pool = "x" * 30, "y" * 19 + "-" + "z" * 20  # index 50 of the joined name: "-"
    name = agent_pod_name(namespace, pool)
    full = f"{namespace}-{pool}"
    assert full[50] == "-"
    assert name == f"{full[:50]}-{hashlib.sha256(full.encode()).hexdigest()[:6]}-agent"
    assert len(name) <= 63


def test_agent_pod_dry_run_and_prefix() -> None:
    pod = agent_pod(
        pool_namespace="default",
        pool_name="net-48",
        network_name="net-48",
        server_ip="10.1.2.3",
        cidr="10.1.0.0/16",
        cluster_network="vlan",
        agent_namespace="harvester-system",
        service_account="agent",
        image=Image("rancher/agent", "v2"),
        dry_run=True,
    )
    assert pod["spec"]["containers"][0]["args"] == ["--ippool-ref", "default/net-48", "--dry-run"]
    assert "ip address add 10.1.2.3/16 dev eth1" in pod["spec"]["initContainers"][0]["command"][2]
    annotation = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])
    assert annotation == [{"namespace": "default", "name": "net-48", "interface": "eth1"}]


def vm(
    interfaces: list[dict[str, Any]],
    networks: list[dict[str, Any]],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "vm", "namespace": "team", "annotations": annotations or {}},
        "spec": {
            "template": {
                "spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": networks}
            }
        },
    }


MULTUS = [{"name": "nic-1", "multus": {"networkName": "default/net-48"}}]


def test_vm_without_mac_gets_nothing() -> None:
    assert nics_from_vm(vm([{"name": "nic-1"}], MULTUS)) == ([], [])


def test_vm_networks_are_every_multus_network_whatever_the_macs() -> None:
    networks = [
        {"name": "default", "pod": {}},
        *MULTUS,
        {"name": "nic-2", "multus": {"networkName": "net-49"}},  # the VM's namespace
    ]
    assert vm_networks(vm([{"name": "nic-1"}], networks)) == {"default/net-48", "team/net-49"}
    assert vm_networks(vm([], [{"name": "default", "pod": {}}])) == set()


def test_mac_from_annotation_and_spec_wins() -> None:
    annotation = {"harvesterhci.io/mac-address": json.dumps({"nic-1": "aa:aa:aa:aa:aa:aa"})}
    assert nics_from_vm(vm([{"name": "nic-1"}], MULTUS, annotation))[0] == [
        DesiredNic("default/net-48", "aa:aa:aa:aa:aa:aa")
    ]
    both = vm([{"name": "nic-1", "macAddress": "BB:BB:BB:BB:BB:BB"}], MULTUS, annotation)
    assert nics_from_vm(both)[0] == [DesiredNic("default/net-48", "bb:bb:bb:bb:bb:bb")]


def test_pod_network_nics_are_skipped_and_order_is_the_vms() -> None:
    interfaces = [
        {"name": "default", "macAddress": "02:00:00:00:00:01"},
        {"name": "z-nic", "macAddress": "02:00:00:00:00:03"},
        {"name": "a-nic", "macAddress": "02:00:00:00:00:02"},
    ]
    networks = [
        {"name": "default", "pod": {}},
        {"name": "a-nic", "multus": {"networkName": "net-a"}},
        {"name": "z-nic", "multus": {"networkName": "other/net-z"}},
    ]
    nics, warnings = nics_from_vm(vm(interfaces, networks))
    assert nics == [
        DesiredNic("other/net-z", "02:00:00:00:00:03"),
        DesiredNic("team/net-a", "02:00:00:00:00:02"),  # no namespace: the VM's own
    ]
    assert warnings == []


@pytest.mark.parametrize(
    ("annotations", "ip", "warning"),
    [
        ({"static-ip.harvesterhci.io/nic-1": "192.168.48.50"}, "192.168.48.50", None),
        (
            {"static-ip.harvesterhci.io/nic-1": "banana"},
            None,
            "static ip annotation value is not a valid IPv4 address",
        ),
        (
            {"static-ip.harvesterhci.io/nic-9": "192.168.48.50"},
            None,
            "static ip annotation references unknown nic nic-9",
        ),
        ({"harvesterhci.io/mac-address": "{not json"}, None, "is not valid JSON"),
    ],
)
def test_annotations(annotations: dict[str, str], ip: str | None, warning: str | None) -> None:
    nics, warnings = nics_from_vm(
        vm([{"name": "nic-1", "macAddress": "02:00:00:00:00:01"}], MULTUS, annotations)
    )
    assert nics == [DesiredNic("default/net-48", "02:00:00:00:00:01", ip)]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warning in warnings[0]


# -- agent replicas (--agent-replicas > 1) -------------------------------------------------


def pool_agent(replica: int | None, namespace: str = "default", name: str = "net-48") -> Any:
    return agent_pod(
        pool_namespace=namespace,
        pool_name=name,
        network_name="default/net-48",
        server_ip="10.1.2.3",
        cidr="10.1.0.0/16",
        cluster_network="vlan",
        agent_namespace="harvester-system",
        service_account="agent",
        image=Image("rancher/agent", "v2"),
        dry_run=False,
        replica=replica,
    )


POOL_LABELS = {
    "network.harvesterhci.io/vm-dhcp-controller": "agent",
    "network.harvesterhci.io/ippool-namespace": "default",
    "network.harvesterhci.io/ippool-name": "net-48",
}
NODE_AFFINITY = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "network.harvesterhci.io/vlan", "operator": "In", "values": ["true"]}
                ]
            }
        ]
    }
}


def test_one_replica_is_upstreams_pod_unchanged() -> None:
    pod = pool_agent(None)
    assert pod["metadata"]["name"] == "default-net-48-agent"
    assert pod["metadata"]["labels"] == POOL_LABELS
    assert pod["spec"]["affinity"] == {"nodeAffinity": NODE_AFFINITY}
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["ip-setter"]
    agent = pod["spec"]["containers"][0]
    assert agent["args"] == ["--ippool-ref", "default/net-48"]
    assert agent["env"] == [{"name": "VM_DHCP_AGENT_NAME", "value": "default-net-48-agent"}]


def test_a_replica_elects_sets_its_own_address_and_spreads_over_nodes() -> None:
    pod = pool_agent(1)
    assert pod["metadata"]["name"] == "default-net-48-agent-1"
    assert pod["metadata"]["labels"] == {
        **POOL_LABELS,
        "network.harvesterhci.io/ippool-agent-replica": "1",
    }
    assert "initContainers" not in pod["spec"]  # the elected agent sets the address
    agent = pod["spec"]["containers"][0]
    assert agent["args"] == ["--ippool-ref", "default/net-48", "--leader-election"]
    assert agent["env"] == [
        {"name": "VM_DHCP_AGENT_NAME", "value": "default-net-48-agent-1"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]
    affinity = pod["spec"]["affinity"]
    assert affinity["nodeAffinity"] == NODE_AFFINITY  # nodes that carry the network
    # preferred: a one-node cluster still runs every replica
    assert affinity["podAntiAffinity"] == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": POOL_LABELS},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    }
    assert pool_agent(None)["spec"]["containers"][0]["securityContext"] == agent["securityContext"]


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("default", "net-48"),
        ("a" * 28, "b" * 28),  # upstream's name is 63 long
        ("x" * 30, "y" * 19 + "-" + "z" * 20),
        ("n" * 63, "p" * 200),
        ("ns", "a" * 47 + ".b" * 10),  # the cut ends on a dot
    ],
)
def test_replica_names_fit_in_63_and_are_the_base_and_an_index(namespace: str, name: str) -> None:
    base = agent_base_name(namespace, name)
    names = [agent_replica_name(namespace, name, i) for i in range(9)]
    assert names == [f"{base}-{i}" for i in range(9)]
    assert all(len(n) <= 63 for n in names)
    assert agent_base_name(namespace, name) == base  # deterministic
    label = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    assert all(re.fullmatch(rf"{label}(\.{label})*", n) for n in names)  # DNS-1123
    if len(agent_pod_name(namespace, name)) <= 61:
        assert base == agent_pod_name(namespace, name)
    assert base != agent_base_name(namespace, name + "x")


def test_the_pdb_selects_the_pools_agents_and_allows_one_down() -> None:
    pdb = agent_pdb(
        pool_namespace="default", pool_name="net-48", agent_namespace="agents", replicas=2
    )
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["kind"] == "PodDisruptionBudget"
    assert pdb["metadata"] == {
        "name": "default-net-48-agent",
        "namespace": "agents",
        "labels": POOL_LABELS,
    }
    assert pdb["spec"] == {
        "selector": {"matchLabels": POOL_LABELS},
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= pool_agent(0)["metadata"]["labels"].items()
    )

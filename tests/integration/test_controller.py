"""vm-dhcp-controller against the real test API server: pools, agent pods, VMs, allocation,
pause and resume, deletion, restart recovery, metrics and cache dumps.

The server has no garbage collector, scheduler or kubelet: tests assert on owner
references and pod specs, and play the kubelet by patching pod status."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.agentproc import AgentProcess, running_controller, wait_for
from tests.cluster import Cluster, create_namespace, delete_namespace, unique_namespace_name

pytestmark = pytest.mark.cluster

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
IMAGE = "registry.example:5000/vm-dhcp-agent:v1"
FINALIZER = "network.harvesterhci.io/vm-dhcp-controller"

POOL_SPEC = {
    "networkName": "",
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
        "leaseTime": 300,
    },
}


@pytest.fixture(scope="module")
def agent_namespace(cluster: Cluster) -> Iterator[str]:
    name = unique_namespace_name("agents")
    with cluster.api_client() as api:
        create_namespace(api, name)
        yield name
        delete_namespace(api, name)


@pytest.fixture(scope="module")
def controller(
    cluster: Cluster, agent_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    log = tmp_path_factory.mktemp("controller") / "controller.log"
    args = [
        "--name", "vm-dhcp-controller-test",
        "--namespace", agent_namespace,
        "--image", IMAGE,
        "--service-account-name", "vm-dhcp-agent",
        "--no-leader-election", "--agent-replicas", "1",
        "--enable-cache-dump-api",
        "--kubeconfig", str(cluster.kubeconfig),
        # every second: the whole suite also proves a resync undoes nothing the watches did
        "--resync-period", "1",
    ]  # fmt: skip
    with running_controller(args, log) as process:
        yield process
        # the resync is a safety net: over the whole module it must have found nothing
        _, metrics = process.get("/metrics")
        corrections = [
            line
            for line in str(metrics).splitlines()
            if line.startswith("vmdhcpcontroller_resync_corrections_total{")
            and float(line.split()[-1]) != 0
        ]
        resyncs = process.metric('vmdhcpcontroller_resyncs_total{result="ok"}')
    assert "Traceback" not in process.output(), process.output()
    assert resyncs >= 3, "the resync must have run to prove anything"
    assert corrections == [], corrections


class Env:
    """One test's namespace, with helpers to create and read the objects."""

    def __init__(self, api: ApiClient, namespace: str, agent_namespace: str) -> None:
        self.custom = CustomObjectsApi(api)
        self.core = CoreV1Api(api)
        self.ns = namespace
        self.agents = agent_namespace

    def nad(self, name: str = "net-48", cluster_network: str | None = "mgmt") -> None:
        labels = (
            {"network.harvesterhci.io/clusternetwork": cluster_network} if cluster_network else {}
        )
        body = {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": self.ns, "labels": labels},
            "spec": {"config": "{}"},
        }
        self.custom.create_namespaced_custom_object(
            "k8s.cni.cncf.io", "v1", self.ns, "network-attachment-definitions", body
        )

    def pool(self, name: str = "net-48", network: str = "net-48", **spec: Any) -> None:
        body_spec = copy.deepcopy(POOL_SPEC)
        body_spec["networkName"] = f"{self.ns}/{network}"
        body_spec.update(spec)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": body_spec,
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "ippools", body)

    def vm(
        self,
        name: str,
        mac: str,
        network: str = "net-48",
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {
                "template": {
                    "spec": {
                        "domain": {
                            "devices": {
                                "interfaces": [
                                    {"name": "default", "masquerade": {}},
                                    {"name": "nic-1", "bridge": {}, "macAddress": mac},
                                ]
                            }
                        },
                        "networks": [
                            {"name": "default", "pod": {}},
                            {"name": "nic-1", "multus": {"networkName": f"{self.ns}/{network}"}},
                        ],
                    }
                }
            },
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", self.ns, "virtualmachines", body
        )
        return result

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def allocated_vm(self, name: str, mac: str) -> None:
        """The network, its pool, and a VM on it holding an address."""
        self.nad()
        self.pool()
        wait_for(is_true(self, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
        self.vm(name, mac)
        wait_for(lambda: mac in self.allocated().values(), 15, "allocated")

    def read_vm(self, name: str) -> dict[str, Any]:
        vm: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "kubevirt.io", "v1", self.ns, "virtualmachines", name
        )
        return vm

    def patch_vm(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io", "v1", self.ns, "virtualmachines", name, body
        )

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name, body)

    def condition(self, plural: str, name: str, kind: str) -> dict[str, Any] | None:
        obj = self.get(plural, name) or {}
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return dict(condition)
        return None

    def allocated(self, pool: str = "net-48") -> dict[str, str]:
        obj = self.get("ippools", pool) or {}
        return dict(((obj.get("status") or {}).get("ipv4") or {}).get("allocated") or {})

    def addresses(self, cfg: str) -> list[tuple[str, str, str]]:
        obj = self.get("virtualmachinenetworkconfigs", cfg) or {}
        return [
            (e.get("macAddress"), e.get("allocatedIPAddress"), e.get("state"))
            for e in (obj.get("status") or {}).get("networkConfigs") or []
        ]

    def agent_pod(self, pool: str = "net-48") -> dict[str, Any] | None:
        name = f"{self.ns}-{pool}-agent"
        try:
            pod = self.core.read_namespaced_pod(name, self.agents)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = self.core.api_client.sanitize_for_serialization(pod)
        return result

    def mark_pod_ready(self, name: str) -> None:
        status = {
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }
        self.core.patch_namespaced_pod_status(name, self.agents, status)


@pytest.fixture
def env(
    api_client: ApiClient, namespace: str, agent_namespace: str, controller: AgentProcess
) -> Env:
    return Env(api_client, namespace, agent_namespace)


def is_true(env: Env, plural: str, name: str, kind: str) -> Callable[[], bool]:
    return lambda: (env.condition(plural, name, kind) or {}).get("status") == "True"


def test_pool_gets_finalizer_nad_link_agent_pod_and_status(
    env: Env, controller: AgentProcess
) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    pod = wait_for(env.agent_pod, 15, "the agent pod")
    pool = env.get("ippools", "net-48")
    assert pool is not None
    assert FINALIZER in pool["metadata"]["finalizers"]
    nad = env.custom.get_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", env.ns, "network-attachment-definitions", "net-48"
    )
    assert nad["metadata"]["labels"]["network.harvesterhci.io/ippool-namespace"] == env.ns
    assert nad["metadata"]["labels"]["network.harvesterhci.io/ippool-name"] == "net-48"

    name = f"{env.ns}-net-48-agent"
    assert pod["metadata"]["labels"] == {
        "network.harvesterhci.io/vm-dhcp-controller": "agent",
        "network.harvesterhci.io/ippool-namespace": env.ns,
        "network.harvesterhci.io/ippool-name": "net-48",
    }
    assert json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]) == [
        {"namespace": env.ns, "name": "net-48", "interface": "eth1"}
    ]
    spec = pod["spec"]
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "network.harvesterhci.io/mgmt", "operator": "In", "values": ["true"]}
    ]
    assert spec["serviceAccountName"] == "vm-dhcp-agent"
    init = spec["initContainers"][0]
    assert init["name"] == "ip-setter"
    assert init["image"] == IMAGE
    assert init["imagePullPolicy"] == "IfNotPresent"
    assert "ip address add 192.168.48.77/24 dev eth1" in init["command"][2]
    agent = spec["containers"][0]
    assert agent["image"] == IMAGE
    assert agent["args"] == ["--ippool-ref", f"{env.ns}/net-48"]
    assert agent["env"] == [{"name": "VM_DHCP_AGENT_NAME", "value": name}]
    assert agent["securityContext"]["capabilities"]["add"] == [
        "NET_ADMIN",
        "NET_RAW",
        "NET_BIND_SERVICE",
    ]
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"

    status = (env.get("ippools", "net-48") or {})["status"]
    assert status["ipv4"]["used"] == 0
    assert status["ipv4"]["available"] == 8
    assert status["ipv4"]["allocated"] == {"192.168.48.81": "EXCLUDED", "192.168.48.90": "EXCLUDED"}
    assert status["agentPodRef"] == {
        "namespace": env.agents,
        "name": name,
        "image": IMAGE,
        "uid": pod["metadata"]["uid"],
    }
    agent_ready = env.condition("ippools", "net-48", "AgentReady") or {}
    assert agent_ready["status"] == "False"
    assert agent_ready["reason"] == "Error"
    assert agent_ready["message"] == f"agent pod {name} not ready"
    assert (env.condition("ippools", "net-48", "Stopped") or {})["status"] == "False"

    env.mark_pod_ready(name)
    wait_for(
        is_true(env, "ippools", "net-48", "AgentReady"), 15, "AgentReady after the pod is ready"
    )
    ready = env.condition("ippools", "net-48", "AgentReady") or {}
    assert ready["lastTransitionTime"] >= agent_ready["lastTransitionTime"]
    assert ready["message"] == ""


def test_missing_cluster_network_label_is_reported(env: Env) -> None:
    env.nad(cluster_network=None)
    env.pool()
    wait_for(
        lambda: (env.condition("ippools", "net-48", "Registered") or {}).get("message"),
        15,
        "Registered",
    )
    registered = env.condition("ippools", "net-48", "Registered") or {}
    assert registered["status"] == "False"
    assert registered["message"] == f"could not find clusternetwork for nad {env.ns}/net-48"
    assert env.agent_pod() is None


def test_vm_gets_a_vmnetcfg_and_the_lowest_free_address(env: Env, controller: AgentProcess) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    vm = env.vm("vm-a", "FA:CF:8E:50:82:FC")
    cfg = wait_for(lambda: env.get("virtualmachinenetworkconfigs", "vm-a"), 15, "the vmnetcfg")
    assert cfg["spec"] == {
        "vmName": "vm-a",
        "networkConfigs": [{"networkName": f"{env.ns}/net-48", "macAddress": "fa:cf:8e:50:82:fc"}],
    }
    assert cfg["metadata"]["labels"] == {"harvesterhci.io/vmName": "vm-a"}
    assert cfg["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "name": "vm-a",
            "uid": vm["metadata"]["uid"],
            "controller": True,
        }
    ]
    assert FINALIZER in cfg["metadata"]["finalizers"]
    wait_for(
        lambda: env.addresses("vm-a") == [("fa:cf:8e:50:82:fc", "192.168.48.82", "Allocated")],
        15,
        "allocation",
    )
    assert is_true(env, "virtualmachinenetworkconfigs", "vm-a", "Allocated")()
    wait_for(
        lambda: env.allocated().get("192.168.48.82") == "fa:cf:8e:50:82:fc", 15, "the pool status"
    )
    pool = env.get("ippools", "net-48") or {}
    assert pool["status"]["ipv4"]["used"] == 1
    assert pool["status"]["ipv4"]["available"] == 7

    network = f"{env.ns}/net-48"
    assert controller.get(f"/caches/{network}") == (200, {"fa:cf:8e:50:82:fc": "192.168.48.82"})
    status, ipams = controller.get(f"/ipams/{network}")
    assert status == 200
    assert ipams["192.168.48.82"] == "true"
    assert ipams["192.168.48.83"] == "false"
    assert "192.168.48.81" not in ipams
    assert len(ipams) == 8
    # a network no pool serves: 404, upstream's message (a bare 500 there) in a JSON body
    assert controller.get("/ipams/nope/nope") == (
        404,
        {"error": "failed to list ipam of nope/nope: network nope/nope does not exist"},
    )
    assert controller.get("/caches/nope/nope") == (
        404,
        {"error": "failed to list cache of nope/nope: network nope/nope does not exist"},
    )
    labels = f'ippool="{env.ns}/net-48",network="{network}"'
    assert (
        controller.metric(f'vmdhcpcontroller_ippool_used{{cidr="192.168.48.0/24",{labels}}}') == 1
    )
    series = (
        f'vmdhcpcontroller_vmnetcfg_status{{ip="192.168.48.82",mac="fa:cf:8e:50:82:fc",'
        f'network="{network}",state="Allocated",vmnetcfg="{env.ns}/vm-a"}}'
    )
    assert controller.metric(series) == 1

    # the VM goes: its vmnetcfg goes (no garbage collector here), the address is freed
    env.custom.delete_namespaced_custom_object(
        "kubevirt.io", "v1", env.ns, "virtualmachines", "vm-a"
    )
    wait_for(
        lambda: env.get("virtualmachinenetworkconfigs", "vm-a") is None, 15, "vmnetcfg deletion"
    )
    wait_for(lambda: "192.168.48.82" not in env.allocated(), 15, "the release in the pool status")
    env.vm("vm-b", "02:00:00:00:00:0b")
    wait_for(
        lambda: env.addresses("vm-b") == [("02:00:00:00:00:0b", "192.168.48.82", "Allocated")],
        15,
        "reuse",
    )
    metrics = controller.get("/metrics")[1]
    assert f'vmnetcfg="{env.ns}/vm-a"' not in metrics


def test_static_addresses_follow_the_spec_and_annotation(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    env.vm(
        "vm-s",
        "02:00:00:00:00:05",
        annotations={"static-ip.harvesterhci.io/nic-1": "192.168.48.88"},
    )
    wait_for(
        lambda: env.addresses("vm-s") == [("02:00:00:00:00:05", "192.168.48.88", "Allocated")],
        15,
        "static",
    )
    cfg = env.get("virtualmachinenetworkconfigs", "vm-s") or {}
    assert cfg["spec"]["networkConfigs"][0]["ipAddress"] == "192.168.48.88"
    # a changed static address for the same MAC moves the allocation (upstream ignores it)
    env.patch(
        "virtualmachinenetworkconfigs",
        "vm-s",
        {
            "spec": {
                "networkConfigs": [
                    {
                        "networkName": f"{env.ns}/net-48",
                        "macAddress": "02:00:00:00:00:05",
                        "ipAddress": "192.168.48.86",
                    }
                ]
            }
        },
    )
    wait_for(
        lambda: env.addresses("vm-s") == [("02:00:00:00:00:05", "192.168.48.86", "Allocated")],
        15,
        "move",
    )
    wait_for(
        lambda: "192.168.48.88" not in env.allocated() and "192.168.48.86" in env.allocated(),
        15,
        "pool",
    )
    # an excluded address is refused with the reason
    env.patch(
        "virtualmachinenetworkconfigs",
        "vm-s",
        {
            "spec": {
                "networkConfigs": [
                    {
                        "networkName": f"{env.ns}/net-48",
                        "macAddress": "02:00:00:00:00:05",
                        "ipAddress": "192.168.48.90",
                    }
                ]
            }
        },
    )
    wait_for(
        lambda: (
            (env.condition("virtualmachinenetworkconfigs", "vm-s", "Allocated") or {}).get("status")
            == "False"
        ),
        15,
        "refusal",
    )
    message = (env.condition("virtualmachinenetworkconfigs", "vm-s", "Allocated") or {})["message"]
    assert message == "designated ip 192.168.48.90 is excluded from the pool"


def test_same_mac_in_two_vmnetcfgs_does_not_share_an_address(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    for name in ("dup-1", "dup-2"):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualMachineNetworkConfig",
            "metadata": {"name": name},
            "spec": {
                "vmName": name,
                "networkConfigs": [
                    {"networkName": f"{env.ns}/net-48", "macAddress": "02:00:00:00:00:99"}
                ],
            },
        }
        env.custom.create_namespaced_custom_object(
            GROUP, VERSION, env.ns, "virtualmachinenetworkconfigs", body
        )
        wait_for(
            lambda n=name: env.condition("virtualmachinenetworkconfigs", n, "Allocated"),
            15,
            "a verdict",
        )
    verdicts = {
        n: (env.condition("virtualmachinenetworkconfigs", n, "Allocated") or {})["status"]
        for n in ("dup-1", "dup-2")
    }
    assert verdicts == {"dup-1": "True", "dup-2": "False"}
    message = (env.condition("virtualmachinenetworkconfigs", "dup-2", "Allocated") or {})["message"]
    network = f"{env.ns}/net-48"
    assert message == (
        f"mac 02:00:00:00:00:99 on network {network} is already used by vmnetcfg {env.ns}/dup-1"
    )


def test_pause_and_resume(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(env.agent_pod, 15, "the agent pod")
    env.vm("vm-p", "02:00:00:00:00:07")
    wait_for(
        lambda: env.addresses("vm-p") == [("02:00:00:00:00:07", "192.168.48.82", "Allocated")],
        15,
        "allocation",
    )

    env.patch("ippools", "net-48", {"spec": {"paused": True}})
    wait_for(is_true(env, "ippools", "net-48", "Stopped"), 15, "Stopped")
    wait_for(lambda: env.agent_pod() is None, 15, "the agent pod to go")
    # allocations kept (the pool status is written once allocation changes pause)
    wait_for(lambda: env.allocated().get("192.168.48.82") == "02:00:00:00:00:07", 15, "kept")
    env.patch("ippools", "net-48", {"spec": {"paused": False}})
    wait_for(env.agent_pod, 15, "the agent pod to return")

    env.patch("virtualmachinenetworkconfigs", "vm-p", {"spec": {"paused": True}})
    wait_for(
        lambda: env.addresses("vm-p") == [("02:00:00:00:00:07", "192.168.48.82", "Pending")],
        15,
        "Pending",
    )
    assert is_true(env, "virtualmachinenetworkconfigs", "vm-p", "Disabled")()
    wait_for(lambda: "192.168.48.82" not in env.allocated(), 15, "the address freed in the pool")
    env.patch("virtualmachinenetworkconfigs", "vm-p", {"spec": {"paused": False}})
    wait_for(
        lambda: env.addresses("vm-p") == [("02:00:00:00:00:07", "192.168.48.82", "Allocated")],
        15,
        "resume",
    )


def test_pool_deletion_cleans_up(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(env.agent_pod, 15, "the agent pod")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools", "net-48")
    wait_for(lambda: env.get("ippools", "net-48") is None, 15, "the finalizer to be removed")
    wait_for(lambda: env.agent_pod() is None, 15, "the agent pod to be deleted")
    nad = env.custom.get_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", env.ns, "network-attachment-definitions", "net-48"
    )
    labels = nad["metadata"].get("labels") or {}
    assert "network.harvesterhci.io/ippool-name" not in labels


def test_nad_annotation_creates_and_updates_its_pool(env: Env) -> None:
    annotation = {"cidr": "10.10.0.0/24", "router": "10.10.0.1", "dns": ["10.10.0.2"]}
    body = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": "vlan10",
            "namespace": env.ns,
            "labels": {"network.harvesterhci.io/clusternetwork": "mgmt"},
            "annotations": {"network.harvesterhci.io/dhcp-pool": json.dumps(annotation)},
        },
        "spec": {"config": "{}"},
    }
    nad = env.custom.create_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", env.ns, "network-attachment-definitions", body
    )
    pool = wait_for(lambda: env.get("ippools", "vlan10"), 15, "the ippool from the annotation")
    assert pool["spec"]["networkName"] == f"{env.ns}/vlan10"
    assert pool["spec"]["ipv4Config"] == {
        "cidr": "10.10.0.0/24",
        "router": "10.10.0.1",
        "dns": ["10.10.0.2"],
        "serverIP": "10.10.0.2",  # the webhook's default: lowest address that is not the router
        "pool": {"start": "10.10.0.1", "end": "10.10.0.254"},
    }
    assert pool["metadata"]["ownerReferences"][0]["uid"] == nad["metadata"]["uid"]
    wait_for(is_true(env, "ippools", "vlan10", "CacheReady"), 15, "the pool to be served")

    annotation["dns"] = ["9.9.9.9"]
    env.custom.patch_namespaced_custom_object(
        "k8s.cni.cncf.io",
        "v1",
        env.ns,
        "network-attachment-definitions",
        "vlan10",
        {
            "metadata": {
                "annotations": {"network.harvesterhci.io/dhcp-pool": json.dumps(annotation)}
            }
        },
    )
    wait_for(
        lambda: (env.get("ippools", "vlan10") or {})["spec"]["ipv4Config"]["dns"] == ["9.9.9.9"],
        15,
        "the pool to follow the annotation",
    )


# -- upstream's bugs (reference section 9.2), each with a test upstream would fail ---------


def test_mac_change_on_the_vm_moves_the_allocation_and_keeps_a_users_ip(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    env.vm("vm-m", "02:00:00:00:00:21")
    wait_for(
        lambda: env.addresses("vm-m") == [("02:00:00:00:00:21", "192.168.48.82", "Allocated")],
        15,
        "first",
    )
    # a user pins the address on the VM-owned vmnetcfg (upstream drops it on the next VM event)
    pinned = {"macAddress": "02:00:00:00:00:21", "ipAddress": "192.168.48.85"}
    configs = [{"networkName": f"{env.ns}/net-48", **pinned}]
    env.patch("virtualmachinenetworkconfigs", "vm-m", {"spec": {"networkConfigs": configs}})
    wait_for(
        lambda: env.addresses("vm-m") == [("02:00:00:00:00:21", "192.168.48.85", "Allocated")],
        15,
        "pin",
    )
    env.patch_vm("vm-m", {"metadata": {"labels": {"touched": "yes"}}})
    wait_for(lambda: env.allocated().get("192.168.48.85") == "02:00:00:00:00:21", 15, "pool status")
    cfg = env.get("virtualmachinenetworkconfigs", "vm-m") or {}
    assert cfg["spec"]["networkConfigs"][0].get("ipAddress") == "192.168.48.85"
    # the VM's NIC gets a new MAC: the old MAC's address is released, the new one allocated
    vm = env.read_vm("vm-m")
    interfaces = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
    interfaces[1]["macAddress"] = "02:00:00:00:00:22"
    patch = {"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": interfaces}}}}}}
    env.patch_vm("vm-m", patch)
    wait_for(
        lambda: [m for m, _, _ in env.addresses("vm-m")] == ["02:00:00:00:00:22"], 15, "the new MAC"
    )
    wait_for(
        lambda: "02:00:00:00:00:21" not in env.allocated().values(), 15, "the old MAC released"
    )


def test_mixed_vm_gets_a_vmnetcfg_for_its_managed_nic_only(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    body = env.vm("vm-x", "02:00:00:00:00:31")
    body["metadata"] = {"name": "vm-y"}
    body["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"].append(
        {"name": "nic-2", "bridge": {}, "macAddress": "02:00:00:00:00:32"}
    )
    body["spec"]["template"]["spec"]["networks"].append(
        {"name": "nic-2", "multus": {"networkName": f"{env.ns}/unmanaged"}}
    )
    env.custom.create_namespaced_custom_object("kubevirt.io", "v1", env.ns, "virtualmachines", body)
    cfg = wait_for(lambda: env.get("virtualmachinenetworkconfigs", "vm-y"), 15, "the vmnetcfg")
    assert [c["macAddress"] for c in cfg["spec"]["networkConfigs"]] == ["02:00:00:00:00:31"]


def test_a_vm_that_leaves_its_managed_network_releases_its_address(env: Env) -> None:
    env.allocated_vm("vm-l", "02:00:00:00:00:41")
    vm = env.read_vm("vm-l")
    template = vm["spec"]["template"]["spec"]
    template["networks"][1]["multus"]["networkName"] = f"{env.ns}/unmanaged"
    patch = {"spec": {"template": {"spec": {"networks": template["networks"]}}}}
    env.patch_vm("vm-l", patch)
    wait_for(lambda: env.get("virtualmachinenetworkconfigs", "vm-l") is None, 15, "deleted")
    wait_for(lambda: "02:00:00:00:00:41" not in env.allocated().values(), 15, "released")


def test_a_vm_whose_pool_is_gone_keeps_its_vmnetcfg(env: Env, controller: AgentProcess) -> None:
    """Only leaving the network deletes the vmnetcfg: a VM still on a network whose pool was
    deleted keeps it (and any ipAddress a user pinned in it)."""
    env.allocated_vm("vm-k", "02:00:00:00:00:42")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools", "net-48")
    wait_for(lambda: env.get("ippools", "net-48") is None, 15, "pool deleted")
    env.patch_vm("vm-k", {"metadata": {"labels": {"touched": "yes"}}})
    decided = f"vm {env.ns}/vm-k: no NIC with a MAC on a network with a pool; keeping its vmnetcfg"
    wait_for(lambda: decided in controller.output(), 15, "the controller's decision")
    assert env.get("virtualmachinenetworkconfigs", "vm-k") is not None


def test_a_vm_whose_nic_lost_its_mac_keeps_its_vmnetcfg(env: Env, controller: AgentProcess) -> None:
    """A NIC still on the managed network but without a usable MAC (cleared from the spec,
    no annotation) has not left the network: its address stays allocated."""
    env.allocated_vm("vm-n", "02:00:00:00:00:43")
    vm = env.read_vm("vm-n")
    interfaces = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
    interfaces[1]["macAddress"] = "not-a-mac"
    patch = {"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": interfaces}}}}}}
    env.patch_vm("vm-n", patch)
    decided = f"vm {env.ns}/vm-n: no NIC with a MAC on a network with a pool; keeping its vmnetcfg"
    wait_for(lambda: decided in controller.output(), 15, "the controller's decision")
    assert env.get("virtualmachinenetworkconfigs", "vm-n") is not None
    assert "02:00:00:00:00:43" in env.allocated().values()


def test_the_controller_resyncs_periodically(controller: AgentProcess) -> None:
    def resyncs() -> float:
        text = str(controller.get("/metrics")[1])
        for line in text.splitlines():
            if line.startswith('vmdhcpcontroller_resyncs_total{result="ok"}'):
                return float(line.split()[1])
        return 0.0

    first = wait_for(resyncs, 15, "a resync")
    wait_for(lambda: resyncs() > first, 15, "another resync")
    assert 'vmdhcpcontroller_resyncs_total{result="error"} 0.0' in controller.get("/metrics")[1]


def test_a_second_pool_on_one_network_is_refused(env: Env) -> None:
    env.nad()
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    env.pool(name="net-48-again")
    wait_for(lambda: env.condition("ippools", "net-48-again", "CacheReady"), 15, "a verdict")
    verdict = env.condition("ippools", "net-48-again", "CacheReady") or {}
    assert verdict["status"] == "False"
    assert (
        verdict["message"] == f"network {env.ns}/net-48 is already served by ippool {env.ns}/net-48"
    )
    assert is_true(env, "ippools", "net-48", "CacheReady")()
    # no second DHCP server on the network, and the NAD still points at the first pool
    assert env.agent_pod("net-48-again") is None
    registered = env.condition("ippools", "net-48-again", "Registered") or {}
    assert registered["status"] == "False"
    nad = env.custom.get_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", env.ns, "network-attachment-definitions", "net-48"
    )
    assert nad["metadata"]["labels"]["network.harvesterhci.io/ippool-name"] == "net-48"


def test_pool_metrics_go_with_the_pool_whatever_its_name(
    env: Env, controller: AgentProcess
) -> None:
    env.nad(name="vlan-7")
    env.pool(name="my-pool", network="vlan-7")
    wait_for(is_true(env, "ippools", "my-pool", "CacheReady"), 15, "CacheReady")
    series = f'ippool="{env.ns}/my-pool"'
    wait_for(lambda: series in controller.get("/metrics")[1], 15, "the pool's series")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools", "my-pool")
    wait_for(lambda: series not in controller.get("/metrics")[1], 15, "the series to go")


def test_vmnetcfg_of_a_deleted_pool_is_still_deletable(env: Env) -> None:
    env.nad()
    env.pool()
    env.vm("vm-d", "02:00:00:00:00:41")
    wait_for(lambda: env.addresses("vm-d"), 15, "allocation")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools", "net-48")
    wait_for(lambda: env.get("ippools", "net-48") is None, 15, "the pool to go")
    env.custom.delete_namespaced_custom_object(
        GROUP, VERSION, env.ns, "virtualmachinenetworkconfigs", "vm-d"
    )
    wait_for(
        lambda: env.get("virtualmachinenetworkconfigs", "vm-d") is None, 15, "no stuck finalizer"
    )


def test_pool_status_counts_a_server_outside_the_range(env: Env) -> None:
    env.nad()
    config = copy.deepcopy(POOL_SPEC["ipv4Config"])
    config.update(
        serverIP="192.168.48.2", pool={"start": "192.168.48.101", "end": "192.168.48.200"}
    )
    del config["router"]
    env.pool(ipv4Config=config)
    wait_for(
        lambda: ((env.get("ippools", "net-48") or {}).get("status") or {}).get("ipv4"), 15, "status"
    )
    ipv4 = (env.get("ippools", "net-48") or {})["status"]["ipv4"]
    assert (ipv4["used"], ipv4["available"]) == (0, 100)
    assert not ipv4.get("allocated")


# -- upstream's handler scenarios not covered above (reference 8.5) --------------------------


def test_nad_not_found(env: Env) -> None:
    env.pool(network="you-cant-find-me")
    wait_for(lambda: env.condition("ippools", "net-48", "Registered"), 15, "Registered")
    registered = env.condition("ippools", "net-48", "Registered") or {}
    assert registered["status"] == "False"
    assert registered["message"] == (
        'network-attachment-definitions.k8s.cni.cncf.io "you-cant-find-me" not found'
    )
    agent_ready = env.condition("ippools", "net-48", "AgentReady") or {}
    assert agent_ready["message"] == f"agent for ippool {env.ns}/net-48 is not deployed"
    assert is_true(env, "ippools", "net-48", "CacheReady")()  # the IPAM does not need the NAD


def test_an_agent_pod_that_already_exists_is_adopted(env: Env) -> None:
    from vmdhcp.controller.config import Image
    from vmdhcp.controller.manifests import agent_pod

    env.nad()
    manifest = agent_pod(
        pool_namespace=env.ns,
        pool_name="net-48",
        network_name=f"{env.ns}/net-48",
        server_ip="192.168.48.77",
        cidr="192.168.48.0/24",
        cluster_network="mgmt",
        agent_namespace=env.agents,
        service_account="vm-dhcp-agent",
        image=Image("registry.example:5000/vm-dhcp-agent", "v1"),
        dry_run=False,
    )
    existing = env.core.create_namespaced_pod(env.agents, manifest)
    env.pool()
    wait_for(is_true(env, "ippools", "net-48", "Registered"), 15, "Registered")
    ref = (env.get("ippools", "net-48") or {})["status"]["agentPodRef"]
    assert ref["uid"] == existing.metadata.uid  # upstream records no name or uid here
    assert ref["name"] == f"{env.ns}-net-48-agent"


def test_an_exclude_added_later_reaches_the_ipam(env: Env) -> None:
    env.nad()
    config = copy.deepcopy(POOL_SPEC["ipv4Config"])
    del config["pool"]["exclude"]
    env.pool(ipv4Config=config)
    wait_for(is_true(env, "ippools", "net-48", "CacheReady"), 15, "CacheReady")
    env.vm("vm-e1", "02:00:00:00:00:71")
    wait_for(lambda: env.addresses("vm-e1"), 15, "first allocation")
    assert env.addresses("vm-e1")[0][1] == "192.168.48.81"
    # exclude the address vm-e1 holds and the next free one
    patch = {"spec": {"ipv4Config": {"pool": {"exclude": ["192.168.48.81", "192.168.48.82"]}}}}
    env.patch("ippools", "net-48", patch)
    wait_for(
        lambda: env.allocated().get("192.168.48.82") == "EXCLUDED", 15, "the new marks in status"
    )
    wait_for(
        lambda: [ip for _, ip, _ in env.addresses("vm-e1")] == ["192.168.48.83"],
        15,
        "vm-e1 to move off the newly excluded address",
    )
    reported = env.condition("ippools", "net-48", "Conflicts") or {}
    assert reported.get("status") == "True"
    assert "192.168.48.81" in reported["message"]
    env.vm("vm-e2", "02:00:00:00:00:72")
    wait_for(lambda: env.addresses("vm-e2"), 15, "second allocation")
    assert env.addresses("vm-e2")[0][1] == "192.168.48.84"

"""The chart installed into an API server that enforces RBAC, as the README says
(`helm upgrade --install ... --namespace harvester-system --create-namespace`), and the three
programs run as real processes under minted identities of the chart's service accounts through
a whole scenario: webhook, controller, NAD and IPPool, agent pod and agent, VM and allocation,
a pool from a NAD annotation, pause, deletion. The API server audits every request of a service
account: one refusal fails the test, so a missing grant cannot go unnoticed, and so does a grant
that no request used (unless the scenario cannot reach the code that uses it: then a
SelfSubjectAccessReview checks it), so an unneeded one cannot either.

Nothing runs the Deployments here (no kubelet): the test plays the kubelet, starting each
program with the arguments of the Deployment (or, for the agent, the pod) the server stored,
plus a kubeconfig and loopback addresses. The webhook is reached through the chart's Service:
the test API server sends `service:` webhook calls to 127.0.0.1 at the Service's numeric
targetPort.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.agentproc import free_port, running_agent, running_controller, wait_for
from tests.chart.chart import CHART, NAMESPACE, RELEASE, WEBHOOK, Manifest, container, objects
from tests.chart.rbac import EXPECTED, NOT_EXERCISED, Grant, audit_log, audit_requests
from tests.cluster import Cluster, api_error, api_request, create_namespace

pytestmark = pytest.mark.cluster

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
VM = ("kubevirt.io", "v1", "virtualmachines")
WEBHOOK_PROGRAM = Path(sys.executable).parent / "vm-dhcp-webhook"
ACCOUNTS = {
    "controller": RELEASE,
    "agent": f"{RELEASE}-agent",
    "webhook": f"{RELEASE}-webhook",
}
POOL_SPEC: dict[str, Any] = {
    "ipv4Config": {
        "serverIP": "192.168.48.77",
        "cidr": "192.168.48.0/24",
        "pool": {"start": "192.168.48.81", "end": "192.168.48.90"},
        "router": "192.168.48.1",
        "dns": ["1.1.1.1"],
        "leaseTime": 300,
    }
}
MAC = "fa:cf:8e:50:82:fc"
REFUSALS = re.compile(r"[Ff]orbidden|\(403\)|HTTP 403|Not enough (RBAC )?permissions")


def user(account: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{account}"


USERS = {user(account) for account in ACCOUNTS.values()}


# -- installing the chart ----------------------------------------------------------------------


def upgrade_install(cfg: helm.Config, values: dict[str, Any]) -> dict[str, Any]:
    """`helm upgrade --install RELEASE ./chart --namespace NAMESPACE --create-namespace`."""
    if any(r["name"] == RELEASE for r in cfg.list(all_states=True)):
        return dict(cfg.upgrade(str(CHART), RELEASE, values, namespace=NAMESPACE, timeout=60))
    return dict(
        cfg.install(
            str(CHART), RELEASE, values, namespace=NAMESPACE, create_namespace=True, timeout=60
        )
    )


@dataclass
class Installed:
    cluster: Cluster
    values: dict[str, Any]
    revisions: list[dict[str, Any]]
    kubeconfigs: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def installed(rbac_cluster: Cluster) -> Installed:
    """The chart, installed and then upgraded with the same command (it must be repeatable),
    and a kubeconfig for each of its three service accounts."""
    values = {"webhook": {"httpsPort": free_port()}}
    with helm.Config(kubeconfig_path=str(rbac_cluster.kubeconfig), namespace=NAMESPACE) as cfg:
        revisions = [upgrade_install(cfg, values) for _ in range(2)]
    kubeconfigs = {
        component: rbac_cluster.mint(user(account)) for component, account in ACCOUNTS.items()
    }
    return Installed(rbac_cluster, values, revisions, kubeconfigs)


def test_install_then_upgrade_with_the_readme_command(installed: Installed) -> None:
    first, second = installed.revisions
    assert (first["revision"], first["status"]) == (1, "deployed")
    assert (second["revision"], second["status"]) == (2, "deployed")
    assert second["chart_name"] == "harvester-vm-dhcp-controller"
    with installed.cluster.api_client() as api:
        deployments = api_request(api, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        assert {d["metadata"]["name"] for d in deployments["items"]} == {RELEASE, WEBHOOK}
        crds = api_request(api, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        assert {
            "ippools.network.harvesterhci.io",
            "virtualmachinenetworkconfigs.network.harvesterhci.io",
        } <= {crd["metadata"]["name"] for crd in crds["items"]}


def test_service_monitor_is_installed_when_the_cluster_serves_the_api(
    installed: Installed,
) -> None:
    """`serviceMonitor.enabled: auto` (the default) with the Prometheus Operator's API present;
    the offline render (no such API) has none: test_render.py."""
    with installed.cluster.api_client() as api:
        path = f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/servicemonitors"
        monitors = api_request(api, "GET", path)
    assert [m["metadata"]["name"] for m in monitors["items"]] == [RELEASE]


def test_monitoring_resources_pass_a_strict_server_side_dry_run(installed: Installed) -> None:
    docs = objects(
        {
            "serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "10s"},
            "agent": {"podMonitor": {"enabled": True, "interval": "30s"}},
        }
    )
    custom = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    for doc in custom:  # the installed release has a ServiceMonitor of that name already
        doc["metadata"]["name"] += "-dry-run"
    assert {d["kind"] for d in custom} == {"ServiceMonitor", "PodMonitor"}
    with installed.cluster.api_client() as api:
        for doc in custom:
            plural = doc["kind"].lower() + "s"
            path = f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/{plural}"
            query = {"dryRun": "All", "fieldValidation": "Strict"}
            api_request(api, "POST", path, body=doc, query=query)
        # and the check bites: a misspelt field is refused
        broken = copy.deepcopy(custom[0])
        broken["spec"]["endpoint"] = broken["spec"].pop("endpoints", None) or broken["spec"].pop(
            "podMetricsEndpoints"
        )
        plural = broken["kind"].lower() + "s"
        with pytest.raises(ApiException) as refused:
            api_request(
                api,
                "POST",
                f"/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/{plural}",
                body=broken,
                query={"dryRun": "All", "fieldValidation": "Strict"},
            )
        assert 'unknown field "spec.endpoint"' in api_error(refused.value)[1]


# -- running the programs as the kubelet would -------------------------------------------------


def deployment_args(api: ApiClient, name: str) -> list[str]:
    """The container arguments of a Deployment, as the server stores them."""
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"
    main: Manifest = container(api_request(api, "GET", path))
    return list(main["args"])


@contextmanager
def running_webhook(
    args: Sequence[str], kubeconfig: Path, log: Path, api: ApiClient
) -> Iterator[subprocess.Popen[str]]:
    """vm-dhcp-webhook with `args` and `kubeconfig`, on 127.0.0.1; ready once its two
    configurations point at the chart's Service with a CA bundle and it refuses a bad
    IPPool (a dry run: nothing is stored). Stopped with SIGTERM; must exit 0."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [str(WEBHOOK_PROGRAM), *args, "--kubeconfig", str(kubeconfig)]
    command += ["--listen-address", "127.0.0.1"]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env
        )

    def registered() -> bool:
        configs = []
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            path = f"/apis/admissionregistration.k8s.io/v1/{kind}/{WEBHOOK}"
            try:
                configs.append(api_request(api, "GET", path))
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        hooks = [hook for config in configs for hook in config.get("webhooks") or []]
        return bool(hooks) and all(
            hook["clientConfig"].get("service", {}).get("namespace") == NAMESPACE
            and hook["clientConfig"]["service"].get("name") == WEBHOOK
            and hook["clientConfig"].get("caBundle")
            for hook in hooks
        )

    def refuses_a_bad_pool() -> bool:
        """A pool inside the service CIDR (the chart's --service-cidr default)."""
        bad = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPPool",
            "metadata": {"name": "probe", "namespace": "default"},
            "spec": {
                "networkName": "default/none",
                "ipv4Config": {**POOL_SPEC["ipv4Config"], "cidr": "10.53.1.0/24"},
            },
        }
        try:
            CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, "default", "ippools", bad, dry_run="All"
            )
        except ApiException as exc:
            message = api_error(exc)[1]
            return "denied the request" in message and "overlaps cluster service cidr" in message
        return False

    try:
        wait_for(
            lambda: process.poll() is not None or (registered() and refuses_a_bad_pool()),
            60,
            "the webhook to register and answer",
            interval=0.2,
        )
        assert process.poll() is None, f"the webhook exited:\n{log.read_text()}"
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, f"the webhook exited {process.returncode}:\n{log.read_text()}"


class Objects:
    """Admin access to the scenario's objects."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api = api
        self.custom = CustomObjectsApi(api)
        self.core = CoreV1Api(api)
        self.ns = namespace

    def read(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = api_request(self.api, "GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def get(self, group: str, version: str, plural: str, name: str) -> dict[str, Any] | None:
        return self.read(f"/apis/{group}/{version}/namespaces/{self.ns}/{plural}/{name}")

    def pool(self, name: str) -> dict[str, Any] | None:
        return self.get(GROUP, VERSION, "ippools", name)

    def condition(self, pool: str, kind: str) -> str | None:
        for condition in ((self.pool(pool) or {}).get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return str(condition["status"])
        return None

    def agent_pod(self, pool: str) -> dict[str, Any] | None:
        """Replica 0 of the pool's agents (the chart's default runs two)."""
        return self.read(f"/api/v1/namespaces/{NAMESPACE}/pods/{self.ns}-{pool}-agent-0")

    def nad(self, name: str, annotations: dict[str, str] | None = None) -> None:
        body = {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {
                "name": name,
                "labels": {"network.harvesterhci.io/clusternetwork": "mgmt"},
                "annotations": annotations or {},
            },
            "spec": {"config": "{}"},
        }
        self.custom.create_namespaced_custom_object(*NAD[:2], self.ns, NAD[2], body)

    def vm(self, name: str, network: str, mac: str) -> None:
        nic = {"name": "nic-1", "bridge": {}, "macAddress": mac}
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "domain": {"devices": {"interfaces": [nic]}},
                        "networks": [
                            {"name": "nic-1", "multus": {"networkName": f"{self.ns}/{network}"}}
                        ],
                    }
                }
            },
        }
        self.custom.create_namespaced_custom_object(*VM[:2], self.ns, VM[2], body)


def lease(api: ApiClient) -> dict[str, Any]:
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vm-dhcp-controllers"
    found: dict[str, Any] = api_request(api, "GET", path)
    return found


def run_scenario(installed: Installed, logs: dict[str, Path]) -> None:
    """Webhook, controller, a NAD and a pool, the agent pod and its agent, a VM and its
    address, a pool from a NAD annotation, pause and resume, deletions."""
    cluster = installed.cluster
    with cluster.api_client() as api, ExitStack() as running:
        webhook_args = deployment_args(api, WEBHOOK)
        controller_args = deployment_args(api, RELEASE)
        create_namespace(api, "vms")
        world = Objects(api, "vms")

        running.enter_context(
            running_webhook(webhook_args, installed.kubeconfigs["webhook"], logs["webhook"], api)
        )
        kubeconfig = installed.kubeconfigs["controller"]
        controller = running.enter_context(
            running_controller(
                # a resync every second: its relists must pass the chart's RBAC as well
                [*controller_args, "--kubeconfig", str(kubeconfig), "--resync-period", "1"],
                logs["controller"],
                env={"KUBECONFIG": str(kubeconfig)},
            )
        )

        # a VM network and its pool, through the webhook (mutated: pool.exclude defaulted)
        world.nad("net-48")
        pool_body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPPool",
            "metadata": {"name": "net-48"},
            "spec": {"networkName": "vms/net-48", **copy.deepcopy(POOL_SPEC)},
        }
        world.custom.create_namespaced_custom_object(GROUP, VERSION, "vms", "ippools", pool_body)
        wait_for(lambda: world.condition("net-48", "CacheReady") == "True", 30, "CacheReady")
        pod = wait_for(lambda: world.agent_pod("net-48"), 30, "the agent pod")
        nad = world.get(*NAD[:2], NAD[2], "net-48") or {}
        assert nad["metadata"]["labels"]["network.harvesterhci.io/ippool-name"] == "net-48"

        # the kubelet's part: the pod is Running and Ready, and its agent runs as its account
        # (replica 0 only: it wins the pool's Lease, and AgentReady says it serves)
        assert pod["spec"]["serviceAccountName"] == ACCOUNTS["agent"]
        world.core.patch_namespaced_pod_status(
            pod["metadata"]["name"],
            NAMESPACE,
            {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        )
        agent_container = pod["spec"]["containers"][0]
        downward = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": NAMESPACE,
            "metadata.uid": pod["metadata"]["uid"],
        }
        agent_env = {
            e["name"]: e["value"]
            if "value" in e
            else downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in agent_container.get("env", [])
        }
        agent_kubeconfig = installed.kubeconfigs["agent"]
        agent = running.enter_context(
            running_agent(
                [
                    *agent_container["args"],
                    "--kubeconfig",
                    str(agent_kubeconfig),
                    "--dry-run",
                    "--enable-cache-dump-api",
                ],
                logs["agent"],
                env={**agent_env, "KUBECONFIG": str(agent_kubeconfig)},
            )
        )

        wait_for(lambda: world.condition("net-48", "AgentReady") == "True", 30, "AgentReady")

        # a VM: its network config, an address, the pool's status, the agent's lease
        world.vm("vm-1", "net-48", MAC)

        def allocated() -> str | None:
            cfg = world.get(GROUP, VERSION, "virtualmachinenetworkconfigs", "vm-1") or {}
            for entry in (cfg.get("status") or {}).get("networkConfigs") or []:
                if entry.get("state") == "Allocated":
                    return str(entry["allocatedIPAddress"])
            return None

        address = wait_for(allocated, 30, "an allocation for vm-1")
        wait_for(
            lambda: (
                (((world.pool("net-48") or {}).get("status") or {}).get("ipv4") or {})
                .get("allocated", {})
                .get(address)
            ),
            30,
            "the allocation in the pool's status",
        )
        wait_for(lambda: MAC in {m.lower() for m in agent.leases()}, 30, "the agent's lease")
        assert controller.get("/metrics")[0] == 200

        # a pool along with a VM network (the controller creates it, the webhook admits it)
        annotation = {"serverIP": "192.168.49.2", "cidr": "192.168.49.0/24"}
        world.nad("net-49", {"network.harvesterhci.io/dhcp-pool": json.dumps(annotation)})
        wait_for(lambda: world.agent_pod("net-49"), 30, "the agent pod of the NAD's pool")

        # pause: the agent pod goes; resume: it comes back
        world.custom.patch_namespaced_custom_object(
            GROUP, VERSION, "vms", "ippools", "net-48", {"spec": {"paused": True}}
        )
        wait_for(lambda: world.agent_pod("net-48") is None, 30, "the paused pool's pod to go")
        world.custom.patch_namespaced_custom_object(
            GROUP, VERSION, "vms", "ippools", "net-48", {"spec": {"paused": False}}
        )
        wait_for(lambda: world.agent_pod("net-48"), 30, "the resumed pool's pod")

        # deletion: the VM's network config (finalizer), then the pool (finalizer, NAD labels)
        world.custom.delete_namespaced_custom_object(*VM[:2], "vms", VM[2], "vm-1")
        wait_for(
            lambda: world.get(GROUP, VERSION, "virtualmachinenetworkconfigs", "vm-1") is None,
            30,
            "vm-1's network config to go",
        )
        world.custom.delete_namespaced_custom_object(GROUP, VERSION, "vms", "ippools", "net-48")
        wait_for(lambda: world.pool("net-48") is None, 30, "the pool to go")
        wait_for(lambda: world.agent_pod("net-48") is None, 30, "its agent pod to go")
        labels = (world.get(*NAD[:2], NAD[2], "net-48") or {})["metadata"].get("labels") or {}
        assert "network.harvesterhci.io/ippool-name" not in labels

        events = api_request(api, "GET", "/api/v1/namespaces/vms/events")["items"]
        sources = {(e.get("source") or {}).get("component") for e in events}
        assert "vm-dhcp-controller" in sources, events
        # the lease was taken, and is renewed, under the chart's Role in kube-system
        acquired = wait_for(lambda: lease(api), 5, "the lease")
        assert acquired["spec"]["holderIdentity"].startswith(RELEASE)
        wait_for(
            lambda: lease(api)["spec"]["renewTime"] != acquired["spec"]["renewTime"],
            20,
            "the controller to renew its lease",
            interval=0.5,
        )


@pytest.mark.timeout(240)
def test_every_component_runs_a_whole_scenario_with_no_refusal(
    installed: Installed, tmp_path: Path
) -> None:
    audit = audit_log(installed.cluster)
    offset = audit.stat().st_size
    logs = {name: tmp_path / f"{name}.log" for name in ("webhook", "controller", "agent")}
    failure: AssertionError | None = None
    try:
        run_scenario(installed, logs)
    except AssertionError as exc:  # a refusal explains a stalled scenario: report it first
        failure = exc
    requests = [r for r in audit_requests(audit, offset) if r.user in USERS]
    refused = [str(r) for r in requests if r.refused]
    assert refused == [], (
        "the API server refused the chart's accounts:\n"
        + "\n".join(refused)
        + (f"\n\nand the scenario failed: {failure}" if failure else "")
    )
    if failure is not None:
        raise failure
    for name, log in logs.items():
        text = log.read_text(errors="replace")
        assert not REFUSALS.search(text), f"{name} was refused something:\n{text}"
        assert "Traceback" not in text, f"{name} failed:\n{text}"

    # least privilege: every grant was needed by some request, or is checked below
    for account, expected in EXPECTED.items():
        made = [r for r in requests if r.user == user(account)]
        unused = {
            grant
            for grant in expected
            if grant not in NOT_EXERCISED[account] and not any(r.uses(grant) for r in made)
        }
        assert unused == set(), f"{account} was granted what it never used: {sorted(unused)}"


# -- and no more than that ---------------------------------------------------------------------


def can_i(cluster: Cluster, kubeconfig: Path, **attributes: str) -> bool:
    """A SelfSubjectAccessReview under `kubeconfig`'s identity."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    with cluster.api_client(kubeconfig) as api:
        answer = api_request(
            api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review
        )
    return bool(answer["status"].get("allowed"))


DENIED = [
    ("agent", {"verb": "patch", "group": GROUP, "resource": "ippools", "subresource": "status",
               "namespace": "vms"}),
    ("agent", {"verb": "list", "resource": "secrets", "namespace": NAMESPACE}),
    ("controller", {"verb": "get", "resource": "secrets", "namespace": NAMESPACE}),
    ("controller", {"verb": "create", "resource": "pods", "namespace": "vms"}),
    ("controller", {"verb": "delete", "group": GROUP, "resource": "ippools", "namespace": "vms"}),
    ("controller", {"verb": "update", "group": "coordination.k8s.io", "resource": "leases",
                    "namespace": "kube-system", "name": "someone-elses-lease"}),
    ("controller", {"verb": "patch", "group": "apiextensions.k8s.io",
                    "resource": "customresourcedefinitions",
                    "name": "virtualmachines.kubevirt.io"}),
    ("webhook", {"verb": "get", "resource": "secrets", "namespace": NAMESPACE,
                 "name": "someone-elses-secret"}),
    ("webhook", {"verb": "patch", "group": "admissionregistration.k8s.io",
                 "resource": "validatingwebhookconfigurations", "name": "another-webhook"}),
    ("webhook", {"verb": "create", "group": GROUP, "resource": "ippools", "namespace": "vms"}),
]  # fmt: skip


UNEXERCISED = [
    (account, grant) for account, grants in NOT_EXERCISED.items() for grant in sorted(grants)
]


@pytest.mark.parametrize(("account", "grant"), UNEXERCISED)
def test_grants_the_scenario_cannot_exercise_are_there(
    installed: Installed, account: str, grant: Grant
) -> None:
    """What the code does only on a DECLINE on the wire, a certificate renewal, ...:
    NOT_EXERCISED in tests/chart/rbac.py says when."""
    namespace, group, resource, verb, name = grant
    resource, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": resource}
    attributes |= {"subresource": subresource} if subresource else {}
    attributes |= {"namespace": "vms" if namespace == "*" else namespace}
    attributes |= {"name": name} if name else {}
    component = next(c for c, a in ACCOUNTS.items() if a == account)
    assert can_i(installed.cluster, installed.kubeconfigs[component], **attributes)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("vm-dhcp-agent.policy.test", True), ("vm-dhcp-agent-report.policy.test", True),
     ("kube-scheduler", False), ("vm-dhcp-controllers", False)],
)  # fmt: skip
def test_the_agents_may_write_only_their_own_leases(
    installed: Installed, name: str, allowed: bool
) -> None:
    """RBAC cannot limit a create by name; the chart's ValidatingAdmissionPolicy does."""
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name}, "spec": {"holderIdentity": "agent"}}  # fmt: skip
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    with installed.cluster.api_client(installed.kubeconfigs["agent"]) as api:
        if not allowed:
            with pytest.raises(ApiException, match="may write only their own Leases") as refused:
                api_request(api, "POST", path, body=body)
            assert refused.value.status == 403
            return
        api_request(api, "POST", path, body=body)
    if allowed:
        with installed.cluster.api_client() as admin:
            api_request(admin, "DELETE", f"{path}/{name}")


@pytest.mark.parametrize(("component", "attributes"), DENIED)
def test_nothing_beyond_what_the_code_needs(
    installed: Installed, component: str, attributes: dict[str, str]
) -> None:
    assert not can_i(installed.cluster, installed.kubeconfigs[component], **attributes)


def test_service_account_identities_are_distinct(installed: Installed) -> None:
    """Each minted kubeconfig authenticates as its service account (not as the admin)."""
    for component, kubeconfig in installed.kubeconfigs.items():
        with installed.cluster.api_client(kubeconfig) as api:
            review = api_request(
                api,
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        assert review["status"]["userInfo"]["username"] == user(ACCOUNTS[component])
        assert "system:masters" not in review["status"]["userInfo"].get("groups", [])

"""The chart, rendered and linted offline with the Helm 4 SDK: built-in objects valid against the
Kubernetes schemas (kubernetes-validate, strict), upstream's values keys, labels, the
monitoring switches, the dashboard, the arguments the real command-line parsers accept, and the
least-privilege RBAC table (tests/chart/test_cluster.py proves it is also enough)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

import vmdhcp
from tests.chart.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    WEBHOOK,
    container,
    crds,
    find,
    kinds,
    objects,
    render,
)
from tests.chart.rbac import EXPECTED, grants
from tests.cluster import CRD_DIR
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.controller.config import load_config as controller_config
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.webhook.config import load_config as webhook_config

MONITORING = "monitoring.coreos.com/v1"
EVERYTHING_ON: dict[str, Any] = {
    "serviceMonitor": {"enabled": True, "interval": "30s", "labels": {"release": "prom"}},
    "agent": {"podMonitor": {"enabled": True, "interval": "30s"}},
    "grafanaDashboard": {"enabled": True, "namespace": "cattle-dashboards"},
    "controller": {"enableCacheDumpAPI": True, "noDHCP": True, "debug": True},
    "imagePullSecrets": [{"name": "regcred"}],
    "priorityClassName": "system-cluster-critical",
}
EVERYTHING_OFF: dict[str, Any] = {
    "serviceMonitor": {"enabled": False},
    "leaderElection": {"enabled": False},
    "controller": {"manageCRDs": False},
    "serviceAccount": {"create": False, "name": "existing"},
}
VALUE_SETS = {"defaults": {}, "everything-on": EVERYTHING_ON, "everything-off": EVERYTHING_OFF}


# -- lint and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_is_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert problems == []


@pytest.mark.parametrize("version", ["1.25", "1.36", latest_version()])
def test_built_in_objects_match_the_kubernetes_schemas(version: str) -> None:
    """Every object any value set renders, and the CRDs. 1.25 is the chart's kubeVersion
    floor; 1.36 is the test API server's version. Custom resources (ServiceMonitor,
    PodMonitor) are checked by the API server (test_cluster.py)."""
    unique = {
        json.dumps(doc, sort_keys=True): doc
        for values in VALUE_SETS.values()
        for doc in objects(values)
        if doc["apiVersion"] != MONITORING
    }
    assert len(unique) > 20
    for doc in [*unique.values(), *crds()]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {where}: {exc.message}")


def test_chart_floor_is_the_oldest_validated_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.25.0-0"


def test_chart_crds_are_identical_to_crds() -> None:
    ours = {p.name: p.read_bytes() for p in sorted(CRD_DIR.glob("*.yaml"))}
    shipped = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert ours, f"no CRDs in {CRD_DIR}"
    assert shipped.keys() == ours.keys()
    for name, content in ours.items():
        assert shipped[name] == content, f"chart/crds/{name} differs from crds/{name}"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["name"] == "harvester-vm-dhcp-controller"
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == chart["version"] == vmdhcp.__version__


# -- what the defaults install -----------------------------------------------------------------


def test_defaults_render_the_expected_objects() -> None:
    docs = objects()
    names = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert names == sorted(
        [
            ("ServiceAccount", RELEASE),
            ("ServiceAccount", f"{RELEASE}-agent"),
            ("ServiceAccount", f"{RELEASE}-webhook"),
            ("ClusterRole", RELEASE),
            ("ClusterRole", f"{RELEASE}-agent"),
            ("ClusterRole", f"{RELEASE}-webhook"),
            ("ClusterRoleBinding", RELEASE),
            ("ClusterRoleBinding", f"{RELEASE}-agent"),
            ("ClusterRoleBinding", f"{RELEASE}-webhook"),
            ("Role", f"{RELEASE}-agent-pods"),
            ("Role", f"{RELEASE}-agent-leases"),
            ("Role", f"{RELEASE}-leader-election"),
            ("Role", f"{RELEASE}-webhook-secrets"),
            ("RoleBinding", f"{RELEASE}-agent-pods"),
            ("RoleBinding", f"{RELEASE}-agent-leases"),
            ("RoleBinding", f"{RELEASE}-leader-election"),
            ("RoleBinding", f"{RELEASE}-webhook-secrets"),
            ("Deployment", RELEASE),
            ("Deployment", WEBHOOK),
            ("Service", RELEASE),
            ("Service", WEBHOOK),
        ]
    )
    for doc in docs:
        expected = (
            "kube-system" if doc["metadata"]["name"].endswith("leader-election") else NAMESPACE
        )
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == expected, doc["metadata"]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_carries_the_recommended_labels(values: dict[str, Any]) -> None:
    for doc in objects(values):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "harvester-vm-dhcp-controller"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "harvester-vm-dhcp-controller"
        assert labels["app.kubernetes.io/component"] in {
            "controller",
            "agent",
            "webhook",
            "dashboard",
        }
        assert labels["helm.sh/chart"] == "harvester-vm-dhcp-controller-0.1.0"


def test_selectors_tell_the_controller_and_the_webhook_apart() -> None:
    docs = objects()
    controller = find(docs, "Deployment", RELEASE)
    webhook = find(docs, "Deployment", WEBHOOK)
    for deployment in (controller, webhook):
        selector = deployment["spec"]["selector"]["matchLabels"]
        template = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template.items()
    assert not (
        controller["spec"]["selector"]["matchLabels"].items()
        <= webhook["spec"]["template"]["metadata"]["labels"].items()
    )
    for service, deployment in ((RELEASE, controller), (WEBHOOK, webhook)):
        selector = find(docs, "Service", service)["spec"]["selector"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]


# -- the controller --------------------------------------------------------------------------


def test_controller_deployment_probes_and_ports() -> None:
    docs = objects()
    main = container(find(docs, "Deployment", RELEASE))
    assert main["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = find(docs, "Service", RELEASE)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert (
        find(objects({"service": {"metricsPort": 9090}}), "Service", RELEASE)["spec"]["ports"][0][
            "port"
        ]
        == 9090
    )


def test_controller_arguments_are_what_its_parser_accepts() -> None:
    docs = objects()
    deployment = find(docs, "Deployment", RELEASE)
    config = controller_config(container(deployment)["args"], {})
    assert config.name == RELEASE
    assert config.agent_namespace == NAMESPACE
    assert str(config.agent_image) == "vm-dhcp/harvester-vm-dhcp-agent:0.1.0"
    assert config.agent_service_account == f"{RELEASE}-agent"
    find(docs, "ServiceAccount", config.agent_service_account)
    assert config.leader_election
    assert config.leader_election_namespace == "kube-system"
    assert config.install_crds
    assert str(config.service_cidr) == "10.53.0.0/16"
    assert not config.no_dhcp
    assert not config.cache_dump_api
    assert not config.no_agent
    assert config.agent_replicas == 2
    assert config.log_level == "INFO"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE


def test_controller_options_reach_its_arguments() -> None:
    values = {
        **EVERYTHING_ON,
        "agent": {"image": {"repository": "registry.example:5000/agent", "tag": "v9"}},
        "leaderElection": {
            "namespace": "vm-dhcp-system",
            "leaseDurationSeconds": 30,
            "renewDeadlineSeconds": 10,
            "retryPeriodSeconds": 3,
        },
        "serviceCIDR": "10.43.0.0/16",
    }
    docs = objects(values)
    config = controller_config(container(find(docs, "Deployment", RELEASE))["args"], {})
    assert str(config.agent_image) == "registry.example:5000/agent:v9"
    assert config.no_dhcp
    assert config.cache_dump_api
    assert config.log_level == "DEBUG"
    assert config.leader_election_namespace == "vm-dhcp-system"
    assert (config.lease_seconds, config.renew_deadline_seconds, config.retry_seconds) == (
        30,
        10,
        3,
    )
    assert str(config.service_cidr) == "10.43.0.0/16"
    assert find(docs, "Role", f"{RELEASE}-leader-election")["metadata"]["namespace"] == (
        "vm-dhcp-system"
    )

    off = objects(EVERYTHING_OFF)
    config = controller_config(container(find(off, "Deployment", RELEASE))["args"], {})
    assert not config.leader_election
    assert not config.install_crds
    assert not [d for d in off if d["metadata"]["name"].endswith("leader-election")]


@pytest.mark.parametrize("replicas", [1, 3, 9, "2"])
def test_agent_replicas_reach_the_controller(replicas: int | str) -> None:
    docs = objects({"agent": {"replicas": replicas}})
    config = controller_config(container(find(docs, "Deployment", RELEASE))["args"], {})
    assert config.agent_replicas == int(replicas)


def test_agent_replace_after_reaches_the_controller() -> None:
    default = objects({})
    config = controller_config(container(find(default, "Deployment", RELEASE))["args"], {})
    assert config.agent_replace_seconds == 30.0
    docs = objects({"agent": {"replaceAfterSeconds": 45}})
    config = controller_config(container(find(docs, "Deployment", RELEASE))["args"], {})
    assert config.agent_replace_seconds == 45.0


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 600.0), (45, 45.0), (0, 0.0), ("3600", 3600.0)]
)
def test_decline_quarantine_reaches_the_controller(value: int | str, seconds: float) -> None:
    docs = objects({"declineQuarantineSeconds": value})
    args = container(find(docs, "Deployment", RELEASE))["args"]
    assert ("--decline-quarantine" in args) == (value != "")
    assert controller_config(args, {}).decline_quarantine_seconds == seconds


@pytest.mark.parametrize("replicas", [0, 10, "two"])
def test_agent_replicas_out_of_range_are_refused(replicas: int | str) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"agent\.replicas must be a number from 1 to 9"):
        render({"agent": {"replicas": replicas}})


def test_agent_replicas_elect_with_leases_in_the_release_namespace() -> None:
    """The agents' Role: Leases in the release namespace, where the controller puts their
    pods (and reads who holds them); by any name, since a create cannot be limited by one
    and there is a Lease per IPPool."""
    docs = objects()
    role = find(docs, "Role", f"{RELEASE}-agent-leases")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create", "get", "update", "list", "watch"],
        }
    ]
    binding = find(docs, "RoleBinding", f"{RELEASE}-agent-leases")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-agent", "namespace": NAMESPACE}
    ]
    config = controller_config(container(find(docs, "Deployment", RELEASE))["args"], {})
    assert config.agent_namespace == NAMESPACE
    assert config.agent_service_account == f"{RELEASE}-agent"


def test_upstream_values_keys_exist_and_take_effect() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in [
        "replicaCount",
        "image.repository", "image.pullPolicy", "image.tag",
        "agent.image.repository", "agent.image.pullPolicy", "agent.image.tag",
        "webhook.replicaCount", "webhook.image.repository", "webhook.image.pullPolicy",
        "webhook.image.tag", "webhook.httpsPort", "webhook.service.type", "webhook.service.port",
        "webhook.resources",
        "imagePullSecrets", "nameOverride", "fullnameOverride",
        "serviceAccount.create", "serviceAccount.automount", "serviceAccount.annotations",
        "serviceAccount.name",
        "podAnnotations", "podLabels", "podSecurityContext", "securityContext",
        "service.type", "service.metricsPort", "resources",
        "nodeSelector", "tolerations", "affinity", "serviceCIDR",
    ]:  # fmt: skip
        node = values
        for part in path.split("."):
            assert part in node, f"values.yaml lacks upstream's key {path}"
            node = node[part]

    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}  # fmt: skip
    custom = {
        "replicaCount": 2,
        "image": {"repository": "example/controller", "tag": "t1", "pullPolicy": "Always"},
        "webhook": {"replicaCount": 3, "image": {"repository": "example/webhook", "tag": "t2"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "net"},
        "resources": {"requests": {"cpu": "10m"}},
        "nodeSelector": {"node-role.kubernetes.io/control-plane": "true"},
        "tolerations": [{"operator": "Exists"}],
        "affinity": affinity,
        "serviceAccount": {"name": "vmdhcp", "annotations": {"x": "y"}},
    }
    docs = objects(custom)
    controller = find(docs, "Deployment", RELEASE)
    webhook = find(docs, "Deployment", WEBHOOK)
    assert controller["spec"]["replicas"] == 2
    assert webhook["spec"]["replicas"] == 3
    assert container(controller)["image"] == "example/controller:t1"
    assert container(controller)["imagePullPolicy"] == "Always"
    assert container(webhook)["image"] == "example/webhook:t2"
    for deployment in (controller, webhook):
        pod = deployment["spec"]["template"]
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["metadata"]["annotations"] == {"a": "b"}
        assert pod["metadata"]["labels"]["team"] == "net"
        assert pod["spec"]["nodeSelector"] == custom["nodeSelector"]
        assert pod["spec"]["tolerations"] == custom["tolerations"]
        assert pod["spec"]["affinity"] == affinity
    assert container(controller)["resources"] == {"requests": {"cpu": "10m"}}
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts.keys() == {"vmdhcp", "vmdhcp-agent", "vmdhcp-webhook"}
    assert all(a["metadata"]["annotations"] == {"x": "y"} for a in accounts.values())
    assert controller_config(container(controller)["args"], {}).agent_service_account == (
        "vmdhcp-agent"
    )


def test_pods_run_as_non_root_with_no_capabilities_by_default() -> None:
    for name in (RELEASE, WEBHOOK):
        deployment = find(objects(), "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        security = container(deployment)["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        # a writable /tmp for what the processes write (the webhook's certificate files)
        assert {"name": "tmp", "mountPath": "/tmp"} in container(deployment)["volumeMounts"]


# -- the webhook -----------------------------------------------------------------------------


def test_webhook_service_is_named_after_the_webhook_and_targets_its_port() -> None:
    docs = objects({"webhook": {"httpsPort": 9443}, "serviceCIDR": "10.96.0.0/12"})
    deployment = find(docs, "Deployment", WEBHOOK)
    config = webhook_config(container(deployment)["args"], {})
    assert config.name == WEBHOOK
    assert config.namespace == NAMESPACE
    assert config.https_port == 9443
    assert str(config.service_cidr) == "10.96.0.0/12"
    assert config.advertise_url is None  # registered as the Service NAMESPACE/NAME, port 443
    service = find(docs, "Service", config.name)
    assert service["metadata"]["namespace"] == config.namespace
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"}
    ]
    assert container(deployment)["ports"][0]["containerPort"] == 9443
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-webhook"


def test_webhook_service_port_other_than_443_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="must be 443"):
        render({"webhook": {"service": {"port": 8443}}})


def test_long_release_names_still_make_valid_webhook_names() -> None:
    release = "r" * 60
    docs = objects(release=release)
    deployment = find(docs, "Deployment", f"{'r' * 55}-webhook")
    assert webhook_config(container(deployment)["args"], {}).name == f"{'r' * 55}-webhook"


# -- monitoring --------------------------------------------------------------------------------


def test_service_monitor_is_absent_by_default_without_the_prometheus_operator() -> None:
    """Offline rendering knows no monitoring.coreos.com API: "auto" renders nothing (the
    API-present case is test_cluster.py's)."""
    assert {"ServiceMonitor", "PodMonitor"}.isdisjoint(kinds(objects()))


def test_service_monitor_when_asked() -> None:
    docs = objects({"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"r": "p"}}})
    monitor = find(docs, "ServiceMonitor", RELEASE)
    assert monitor["apiVersion"] == MONITORING
    assert monitor["metadata"]["labels"]["r"] == "p"
    service = find(docs, "Service", RELEASE)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}
    ]
    assert "ServiceMonitor" not in kinds(objects({"serviceMonitor": {"enabled": False}}))


def test_monitor_switches_refuse_other_values() -> None:
    with pytest.raises(helm.HelmRenderError, match="true, false or"):
        render({"serviceMonitor": {"enabled": "yes"}})


def test_agent_pod_monitor_when_asked() -> None:
    assert "PodMonitor" not in kinds(objects({"agent": {"podMonitor": {"enabled": "auto"}}}))
    monitor = find(objects({"agent": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"network.harvesterhci.io/vm-dhcp-controller": "agent"}
    }
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    address = next(r for r in endpoint["relabelings"] if r.get("targetLabel") == "__address__")
    assert address["replacement"] == "${1}:8080"


# -- the Grafana dashboard ---------------------------------------------------------------------


def exported_metrics() -> set[str]:
    """Every sample name the controller and the agent can export (families with labels have
    no samples until a label set is used, so the names come from the family types)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names: set[str] = set()
    for registry in (ControllerMetrics().registry, AgentMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_dashboard_is_off_by_default() -> None:
    assert "ConfigMap" not in kinds(objects())


def test_dashboard_config_map_for_the_grafana_sidecar() -> None:
    docs = objects({"grafanaDashboard": {"enabled": True, "namespace": "cattle-dashboards"}})
    config_map = find(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "cattle-dashboards"
    (text,) = config_map["data"].values()
    assert json.loads(text) == json.loads((CHART / "dashboards" / "vm-dhcp.json").read_text())


def test_dashboard_shows_pools_allocations_and_agent_traffic_from_real_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "vm-dhcp.json").read_text())
    queries = dashboard_queries(dashboard)
    used = {
        name
        for query in queries
        for name in re.findall(r"\b(vmdhcp(?:controller)?_[a-z_]+)\b", query)
    }
    assert used <= exported_metrics(), f"not exported by the code: {used - exported_metrics()}"
    assert {
        "vmdhcpcontroller_ippool_used",
        "vmdhcpcontroller_ippool_available",
        "vmdhcpcontroller_vmnetcfg_status",
        "vmdhcp_agent_packets_received_total",
        "vmdhcp_agent_replies_sent_total",
        "vmdhcp_agent_dropped_total",
    } <= used
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Pool utilisation", "Allocations", "Packets received", "Replies sent"} <= titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


# -- RBAC --------------------------------------------------------------------------------------


def test_rbac_is_exactly_the_derived_table() -> None:
    """The table in chart/README.md. Each grant is used by the code (test_cluster.py runs all
    three under these roles); a change here is a change of what the code calls."""
    docs = objects()
    for account, expected in EXPECTED.items():
        assert grants(docs, account) == expected, account


def test_rbac_without_leader_election_or_crd_management_drops_those_grants() -> None:
    docs = objects(EVERYTHING_OFF)
    kept = {
        g
        for g in EXPECTED[RELEASE]
        if g[0] != "kube-system" and not (g[2] == "customresourcedefinitions" and g[4])
    }
    assert grants(docs, "existing") == kept
    assert "ServiceAccount" not in kinds(docs)


def test_rbac_has_no_wildcards_and_no_secret_reads_outside_the_webhook() -> None:
    docs = objects(EVERYTHING_ON)
    for doc in docs:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (doc["metadata"]["name"], rule)
    for account in (RELEASE, f"{RELEASE}-agent"):
        assert not [g for g in grants(docs, account) if g[2] == "secrets"]


def test_readme_documents_the_rbac_table() -> None:
    readme = (CHART / "README.md").read_text()
    for grant in set().union(*EXPECTED.values()):
        resource = grant[2]
        assert f"`{resource}`" in readme, f"chart/README.md does not mention {resource}"


def test_values_file_is_the_one_rendered() -> None:
    """No template reads a value that values.yaml does not define: a misspelt `.Values.x.y`
    renders as empty, silently."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    used: set[str] = set()
    for template in Path(CHART / "templates").iterdir():
        used.update(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    for path in sorted(used):
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict), f".Values.{path}: {part} is below a leaf"
            assert part in node, f".Values.{path} is not in values.yaml"
            node = node[part]

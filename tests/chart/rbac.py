"""The chart's RBAC as a table of single grants, and the API server's audit log read back as
requests, so that tests can say which grants a run used and which requests were refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.chart.chart import NAMESPACE, RELEASE, WEBHOOK, Manifest, rules_of
from tests.cluster import Cluster

AUDIT_LOG = "audit.log"
"""In the test API server's run directory (tests/chart/conftest.py turns auditing on)."""

Grant = tuple[str, str, str, str, str]
"""(namespace or "*" for cluster-wide, API group, resource[/subresource], verb, name or "")."""


def grants(docs: list[Manifest], service_account: str) -> set[Grant]:
    """Every single grant the rendered roles give `service_account`."""
    found: set[Grant] = set()
    for namespace, rule in rules_of(docs, service_account):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        found.add((namespace, group, resource, verb, name))
    return found


def table(*rows: tuple[str, str, str, str, str]) -> set[Grant]:
    """Rows of (namespace, group, resources, verbs, names), the last three space-separated."""
    return {
        (namespace, group, resource, verb, name)
        for namespace, group, resources, verbs, names in rows
        for resource in resources.split()
        for verb in verbs.split()
        for name in names.split() or [""]
    }


NET = "network.harvesterhci.io"
OWN_CRDS = "ippools.network.harvesterhci.io virtualmachinenetworkconfigs.network.harvesterhci.io"
WEBHOOK_CONFIGS = "validatingwebhookconfigurations mutatingwebhookconfigurations"

#: What each service account needs, from the calls its program makes (chart/README.md).
EXPECTED: dict[str, set[Grant]] = {
    RELEASE: table(
        ("*", "apiextensions.k8s.io", "customresourcedefinitions", "list watch", ""),
        ("*", "apiextensions.k8s.io", "customresourcedefinitions", "create patch", OWN_CRDS),
        ("*", NET, "ippools", "get list watch create patch", ""),
        ("*", NET, "virtualmachinenetworkconfigs", "get list watch create patch delete", ""),
        ("*", NET, "ippools/status virtualmachinenetworkconfigs/status", "patch", ""),
        ("*", "k8s.cni.cncf.io", "network-attachment-definitions", "get list watch patch", ""),
        ("*", "kubevirt.io", "virtualmachines", "get list watch", ""),
        ("*", "", "events", "create", ""),
        (NAMESPACE, "", "pods", "create get delete list watch", ""),
        (NAMESPACE, "policy", "poddisruptionbudgets", "create get delete", ""),
        (NAMESPACE, "coordination.k8s.io", "leases", "get list watch", ""),
        ("kube-system", "coordination.k8s.io", "leases", "create", ""),
        ("kube-system", "coordination.k8s.io", "leases", "get update", "vm-dhcp-controllers"),
    ),
    f"{RELEASE}-agent": table(
        ("*", NET, "ippools", "list watch", ""),
        ("*", "", "events", "create", ""),
        (NAMESPACE, "coordination.k8s.io", "leases", "create get update list watch", ""),
    ),
    f"{RELEASE}-webhook": table(
        ("*", "admissionregistration.k8s.io", WEBHOOK_CONFIGS, "create", ""),
        ("*", "admissionregistration.k8s.io", WEBHOOK_CONFIGS, "patch", WEBHOOK),
        ("*", "apiextensions.k8s.io", "customresourcedefinitions", "list watch", ""),
        ("*", NET, "ippools virtualmachinenetworkconfigs", "get list watch", ""),
        ("*", "k8s.cni.cncf.io", "network-attachment-definitions", "get list watch", ""),
        (NAMESPACE, "", "secrets", "create", ""),
        (NAMESPACE, "", "secrets", "get update", f"{WEBHOOK}-ca {WEBHOOK}-tls"),
    ),
}

#: Grants a scenario on the test API server cannot use, and when the code does use them.
NOT_EXERCISED: dict[str, dict[Grant, str]] = {
    RELEASE: {
        ("*", "apiextensions.k8s.io", "customresourcedefinitions", "create", name): (
            "server-side apply creating a CRD that Helm did not install first"
        )
        for name in OWN_CRDS.split()
    }
    | {
        (NAMESPACE, "", "pods", "get", ""): "adopting an agent pod whose create says 409",
        (NAMESPACE, "policy", "poddisruptionbudgets", "delete", ""): (
            "a pool with agent replicas paused or deleted, or its agents back to one replica"
        ),
    }
    | {
        ("*", group, resource, "get", ""): (
            "a resync whose list disagrees with the watch (it reads the object), or an "
            "IPPool deleted before its NAD was seen"
        )
        for group, resource in (
            (NET, "ippools"),
            (NET, "virtualmachinenetworkconfigs"),
            ("k8s.cni.cncf.io", "network-attachment-definitions"),
            ("kubevirt.io", "virtualmachines"),
        )
    },
    f"{RELEASE}-agent": {
        ("*", "", "events", "create", ""): "a DHCPDECLINE or DHCPRELEASE on the wire",
    }
    | {
        (NAMESPACE, "coordination.k8s.io", "leases", "update", ""): (
            "an agent with --leader-election that renews its Lease, or takes over a released one"
        ),
    },
    f"{RELEASE}-webhook": {
        (NAMESPACE, "", "secrets", "update", f"{WEBHOOK}-ca"): "renewing the CA",
        (NAMESPACE, "", "secrets", "update", f"{WEBHOOK}-tls"): "renewing the certificate",
    }
    | {
        ("*", group, resource, "get", ""): "a refusal that rests on it, judged again live"
        for group, resource in (
            (NET, "ippools"),
            (NET, "virtualmachinenetworkconfigs"),
            ("k8s.cni.cncf.io", "network-attachment-definitions"),
        )
    },
}


@dataclass(frozen=True)
class Request:
    """One API request, as the audit log records it."""

    user: str
    verb: str
    group: str
    resource: str
    """With the subresource: `ippools/status`."""
    namespace: str
    name: str
    code: int
    decision: str
    uri: str

    def __str__(self) -> str:
        return f"{self.user}: {self.verb} {self.uri} -> {self.code} ({self.decision or '-'})"

    @property
    def refused(self) -> bool:
        return self.decision == "forbid" or self.code == 403

    def uses(self, grant: Grant) -> bool:
        namespace, group, resource, verb, name = grant
        return (
            (self.verb, self.group, self.resource) == (verb, group, resource)
            and namespace in ("*", self.namespace)
            and name in ("", self.name)
        )


def audit_log(cluster: Cluster) -> Path:
    assert cluster.rundir is not None, "auditing needs a cluster started by the tests"
    return cluster.rundir / AUDIT_LOG


def audit_requests(audit_log: Path, offset: int = 0) -> list[Request]:
    """The resource requests recorded after byte `offset`, one per audit ID (the latest stage:
    a watch is recorded when it starts, and again when it ends)."""
    latest: dict[str, Request] = {}
    with audit_log.open("rb") as log:
        log.seek(offset)
        for line in log:
            if not line.endswith(b"\n"):
                break  # being written
            event = json.loads(line)
            ref = event.get("objectRef")
            if not ref or not ref.get("resource"):
                continue  # discovery, /version and other non-resource requests
            resource = ref["resource"] + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            latest[event["auditID"]] = Request(
                user=event["user"]["username"],
                verb=event["verb"],
                group=ref.get("apiGroup", ""),
                resource=resource,
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                code=int((event.get("responseStatus") or {}).get("code") or 0),
                decision=(event.get("annotations") or {}).get("authorization.k8s.io/decision", ""),
                uri=event["requestURI"],
            )
    return list(latest.values())

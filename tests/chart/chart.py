"""Render the Helm chart with the Helm 4 SDK (helm-python-sdk: Helm's Go SDK through ctypes, no
`helm` binary) and read what it renders."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import helm_python as helm
import yaml

from tests.cluster import REPO_ROOT

CHART = REPO_ROOT / "chart"
RELEASE = "harvester-vm-dhcp-controller"
NAMESPACE = "harvester-system"
WEBHOOK = f"{RELEASE}-webhook"

Manifest = dict[str, Any]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (offline: no cluster APIs)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(
            copy.deepcopy(dict(values or {})),
            name=release,
            namespace=namespace,
            is_install=True,
        )


def documents(rendered: Mapping[str, str]) -> list[Manifest]:
    """The Kubernetes objects of a render (NOTES.txt and empty documents left out)."""
    docs: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def objects(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Manifest]:
    return documents(render(values, **kwargs))


def crds() -> list[Manifest]:
    """chart/crds/*.yaml, which Helm installs before the templates (and never upgrades)."""
    return [
        doc
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def find(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of `kind` (and `name`); fails when there is none or more than one."""
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}: {found}"
    return found[0]


def kinds(docs: list[Manifest]) -> set[str]:
    return {d["kind"] for d in docs}


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def rules_of(docs: list[Manifest], service_account: str) -> Iterator[tuple[str, Manifest]]:
    """(namespace or "*", rule) for every rule bound to `service_account`."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account
            for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], namespace, ref["name"])]
        for rule in role["rules"]:
            yield (namespace or "*"), rule

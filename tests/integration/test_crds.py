"""The CRDs in crds/ on a real API server: wire compatibility with upstream, validation, columns.

Objects written for upstream vm-dhcp-controller must be accepted unchanged; the immutability rules
must reject changes with upstream's messages (and our corrected one for pool.exclude); the fields
upstream left unchecked (dns and exclude entries, MAC addresses) are now checked.
"""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.cluster import (
    REPO_ROOT,
    Cluster,
    Manifest,
    api_error,
    api_request,
    apply_manifests,
    create_namespace,
    delete_namespace,
    discover,
    load_manifests,
    parse_kubectl_table,
    unique_namespace_name,
)

pytestmark = pytest.mark.cluster

GROUP = "network.harvesterhci.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
IPPOOLS = "ippools"
VMNETCFGS = "virtualmachinenetworkconfigs"

README = REPO_ROOT / "README.md"
#: The reference pages the README links to; their examples are a user's too.
DOCS = REPO_ROOT / "docs"
#: Examples of these API versions, in the README and under docs/, are created on the server.
EXAMPLE_API_VERSIONS = frozenset({API_VERSION, "k8s.cni.cncf.io/v1", "kubevirt.io/v1"})

#: Sentinel for `edit`: remove the key.
DELETE = object()


# --------------------------------------------------------------------------------------------
# Objects as upstream's README and users write them


def ipv4_config() -> dict[str, Any]:
    """Upstream's README example network, default/net-48."""
    return {
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
        "ntp": ["pool.ntp.org"],
        "leaseTime": 300,
    }


def ippool(name: str = "net-48", **spec: Any) -> Manifest:
    body_spec: dict[str, Any] = {"ipv4Config": ipv4_config(), "networkName": "default/net-48"}
    body_spec.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": body_spec,
    }


def vmnetcfg(name: str = "test-vm", **spec: Any) -> Manifest:
    body_spec: dict[str, Any] = {
        "vmName": name,
        "networkConfigs": [{"macAddress": "fa:cf:8e:50:82:fc", "networkName": "default/net-48"}],
    }
    body_spec.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {"name": name},
        "spec": body_spec,
    }


def edit(obj: Manifest, path: str, value: Any) -> Manifest:
    """A copy of `obj` with the dotted `path` set to `value` (or removed, for DELETE)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def plural_of(obj: Manifest) -> str:
    return {"IPPool": IPPOOLS, "VirtualMachineNetworkConfig": VMNETCFGS}[obj["kind"]]


def create(custom_api: CustomObjectsApi, namespace: str, obj: Manifest) -> Manifest:
    """Create `obj`, rejecting unknown fields (so a pruned field cannot pass unnoticed)."""
    created = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural_of(obj), obj, field_validation="Strict"
    )
    return cast(Manifest, created)


def replace(custom_api: CustomObjectsApi, namespace: str, obj: Manifest) -> Manifest:
    replaced = custom_api.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, plural_of(obj), obj["metadata"]["name"], obj
    )
    return cast(Manifest, replaced)


def rejection(call: Callable[[], object]) -> str:
    """Run `call`, expect a 422 Invalid from the server, and return its message."""
    with pytest.raises(ApiException) as info:
        call()
    status, message = api_error(info.value)
    assert status == 422, f"expected 422 Invalid, got {status}: {message}"
    return message


# --------------------------------------------------------------------------------------------
# The CRDs as served


EXPECTED_NAMES = {
    IPPOOLS: ("IPPool", "IPPoolList", "ippool", ["ippl", "ippls"]),
    VMNETCFGS: (
        "VirtualMachineNetworkConfig",
        "VirtualMachineNetworkConfigList",
        "virtualmachinenetworkconfig",
        ["vmnetcfg", "vmnetcfgs"],
    ),
}

EXPECTED_COLUMNS = {
    IPPOOLS: [
        ("NETWORK", "string", ".spec.networkName"),
        ("AVAILABLE", "integer", ".status.ipv4.available"),
        ("USED", "integer", ".status.ipv4.used"),
        ("REGISTERED", "string", ".status.conditions[?(@.type=='Registered')].status"),
        ("CACHEREADY", "string", ".status.conditions[?(@.type=='CacheReady')].status"),
        ("AGENTREADY", "string", ".status.conditions[?(@.type=='AgentReady')].status"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ],
    VMNETCFGS: [
        ("VMNAME", "string", ".spec.vmName"),
        ("ALLOCATED", "string", ".status.conditions[?(@.type=='Allocated')].status"),
        ("DISABLED", "string", ".status.conditions[?(@.type=='Disabled')].status"),
        ("INSYNCED", "string", ".status.conditions[?(@.type=='InSynced')].status"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ],
}

#: Columns of ours, inserted before AGE: (name, type, jsonPath, priority); priority 1 shows
#: with `-o wide` only. Each reads the first NIC (a column holds one value).
ADDED_COLUMNS = {
    IPPOOLS: [],
    VMNETCFGS: [
        ("ADDRESS", "string", ".status.networkConfigs[0].allocatedIPAddress", 0),
        ("STATE", "string", ".status.networkConfigs[0].state", 0),
        ("NETWORK", "string", ".status.networkConfigs[0].networkName", 1),
        ("MAC", "string", ".status.networkConfigs[0].macAddress", 1),
    ],
}


def served_columns(plural: str, wide: bool = False) -> list[str]:
    """The column names `kubectl get` prints (after NAME), `-o wide` when `wide`."""
    *upstream, age = (name for name, _, _ in EXPECTED_COLUMNS[plural])
    ours = [name for name, _, _, priority in ADDED_COLUMNS[plural] if wide or priority == 0]
    return [*upstream, *ours, age]


@pytest.mark.parametrize("plural", [IPPOOLS, VMNETCFGS])
def test_served_crd_matches_upstream_names_and_columns(api_client: ApiClient, plural: str) -> None:
    crd = api_request(
        api_client,
        "GET",
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{GROUP}",
    )
    kind, list_kind, singular, short_names = EXPECTED_NAMES[plural]
    names = crd["status"]["acceptedNames"]
    assert (names["kind"], names["listKind"], names["singular"], names["plural"]) == (
        kind,
        list_kind,
        singular,
        plural,
    )
    assert names["shortNames"] == short_names
    assert crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    served = version["additionalPrinterColumns"]
    upstream = [(c["name"], c["type"], c["jsonPath"]) for c in served if c.get("priority", 0) == 0]
    ours = {(name, kind, path) for name, kind, path, _ in ADDED_COLUMNS[plural]}
    # upstream's columns, in upstream's order, with ours only added
    assert [column for column in upstream if column not in ours] == EXPECTED_COLUMNS[plural]
    assert [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in served
        if (c["name"], c["type"], c["jsonPath"]) in ours
    ] == ADDED_COLUMNS[plural]


def test_crd_files_are_the_two_expected_crds() -> None:
    docs = load_manifests(REPO_ROOT / "crds")
    assert sorted(doc["metadata"]["name"] for doc in docs) == [
        f"{IPPOOLS}.{GROUP}",
        f"{VMNETCFGS}.{GROUP}",
    ]
    assert {doc["kind"] for doc in docs} == {"CustomResourceDefinition"}


def undocumented(schema: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of every property (below the top level) whose schema has no description."""
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        if name == "metadata" and path.count(".") == 0:
            continue  # the apiserver documents ObjectMeta itself
        if not sub.get("description", "").strip():
            yield here
        yield from undocumented(sub, here)
        if "items" in sub:
            yield from undocumented(sub["items"], f"{here}[]")


@pytest.mark.parametrize("kind", ["IPPool", "VirtualMachineNetworkConfig"])
def test_every_field_is_described_in_the_served_openapi(api_client: ApiClient, kind: str) -> None:
    document = api_request(api_client, "GET", f"/openapi/v3/apis/{GROUP}/{VERSION}")
    schemas = document["components"]["schemas"]
    [key] = [k for k in schemas if k.endswith(f".{VERSION}.{kind}")]
    schema = schemas[key]
    assert schema.get("description", "").strip(), f"{kind} has no description"
    assert list(undocumented(schema, kind)) == []


# --------------------------------------------------------------------------------------------
# Examples in README.md and docs/


FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```ya?ml[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def documentation() -> list[Path]:
    """README.md and every page under docs/: where a user copies examples from."""
    return [README, *sorted(DOCS.glob("**/*.md"))]


def yaml_examples(path: Path) -> list[tuple[int, Manifest]]:
    """(line, object) for every document of an example API version in ```yaml blocks."""
    text = path.read_text(encoding="utf-8")
    examples: list[tuple[int, Manifest]] = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        indent = len(match["indent"])
        body = "\n".join(row[indent:] for row in match["body"].splitlines())
        try:
            docs = list(yaml.safe_load_all(body))
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.name} line {line}: the yaml block does not parse: {exc}")
        for doc in docs:
            if isinstance(doc, dict) and doc.get("apiVersion") in EXAMPLE_API_VERSIONS:
                examples.append((line, doc))
    return examples


#: Set by the server; an example copied from `kubectl get -o yaml` may carry them.
SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "finalizers",
    "ownerReferences",
)


class Relocator:
    """Moves documented examples into fresh namespaces, keeping `<ns>/<nad>` references intact."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.namespaces: dict[str, str] = {}

    def namespace(self, original: str) -> str:
        if original not in self.namespaces:
            fresh = unique_namespace_name(f"readme-{original}")
            create_namespace(self.api, fresh)
            self.namespaces[original] = fresh
        return self.namespaces[original]

    def network(self, name: str) -> str:
        if "/" not in name:
            return name
        ns, nad = name.split("/", 1)
        return f"{self.namespace(ns)}/{nad}"

    def __call__(self, doc: Manifest) -> Manifest:
        out = copy.deepcopy(doc)
        meta = out.setdefault("metadata", {})
        for key in SERVER_FIELDS:
            meta.pop(key, None)
        meta["namespace"] = self.namespace(meta.get("namespace", "default"))
        spec = out.get("spec")
        if out["apiVersion"] == API_VERSION and isinstance(spec, dict):
            if isinstance(spec.get("networkName"), str):
                spec["networkName"] = self.network(spec["networkName"])
            for config in spec.get("networkConfigs") or []:
                if isinstance(config, dict) and isinstance(config.get("networkName"), str):
                    config["networkName"] = self.network(config["networkName"])
        return out

    def cleanup(self) -> None:
        for ns in self.namespaces.values():
            delete_namespace(self.api, ns)


def test_every_example_in_the_readme_and_docs_is_accepted(api_client: ApiClient) -> None:
    assert README.is_file(), f"{README} is missing"
    pages = documentation()
    assert len(pages) > 1, f"no pages under {DOCS}"
    examples = [
        (page.relative_to(REPO_ROOT), line, doc)
        for page in pages
        for line, doc in yaml_examples(page)
    ]
    kinds = Counter(doc["kind"] for _, _, doc in examples)
    assert kinds["IPPool"] >= 1, f"no IPPool example in README.md or docs/: {dict(kinds)}"
    assert kinds["VirtualMachineNetworkConfig"] >= 1, (
        f"no VirtualMachineNetworkConfig example in README.md or docs/: {dict(kinds)}"
    )
    relocate = Relocator(api_client)
    created: list[str] = []
    problems: list[str] = []
    try:
        for page, line, doc in examples:
            body = relocate(doc)
            meta = body["metadata"]
            where = f"{page} line {line}: {body['kind']} {meta.get('name')}"
            collection = discover(api_client, body["apiVersion"], body["kind"]).path(
                meta["namespace"]
            )
            stored = create_or_replace(api_client, collection, body, where, problems)
            if stored is None:
                continue
            created.append(f"{collection}/{meta['name']}")
            if "spec" in body and stored.get("spec") != body["spec"]:
                problems.append(f"{where}: stored spec differs: {stored.get('spec')}")
        assert not problems, "\n".join(problems)
    finally:
        for path in created:
            try:
                api_request(api_client, "DELETE", path)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        relocate.cleanup()


def create_or_replace(
    api: ApiClient, collection: str, body: Manifest, where: str, problems: list[str]
) -> Manifest | None:
    """Create (strict: unknown fields are errors), or replace an example shown twice."""
    try:
        created: Manifest = api_request(
            api, "POST", collection, body=body, query={"fieldValidation": "Strict"}
        )
        return created
    except ApiException as exc:
        status, message = api_error(exc)
        if status != 409:
            problems.append(f"{where}: rejected ({status}): {message}")
            return None
    path = f"{collection}/{body['metadata']['name']}"
    current = api_request(api, "GET", path)
    body = copy.deepcopy(body)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    try:
        replaced: Manifest = api_request(
            api, "PUT", path, body=body, query={"fieldValidation": "Strict"}
        )
        return replaced
    except ApiException as exc:
        status, message = api_error(exc)
        problems.append(f"{where}: shown twice, and the second is rejected ({status}): {message}")
        return None


# --------------------------------------------------------------------------------------------
# Upstream-written objects are accepted unchanged


ACCEPTED_IPPOOLS = [
    pytest.param(ippool(), id="readme-net-48"),
    pytest.param(
        ippool(
            ipv4Config={
                "serverIP": "10.0.0.2",
                "cidr": "10.0.0.0/24",
                "pool": {"start": "10.0.0.10", "end": "10.0.0.20"},
            },
            networkName="vlan10/net",
        ),
        id="minimal",
    ),
    pytest.param(ippool(paused=True), id="paused"),
    pytest.param(ippool(paused=False), id="not-paused"),
    pytest.param(
        edit(
            ippool(),
            "spec.ipv4Config.ntp",
            ["10.0.0.123", "ntp.example.com", "time.cloudflare.com", "pool.ntp.org"],
        ),
        id="ntp-four-ips-and-hostnames",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.dns", ["1.1.1.1", "8.8.8.8", "9.9.9.9"]), id="dns-three"
    ),
    pytest.param(edit(ippool(), "spec.ipv4Config.dns", []), id="dns-empty"),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.domainSearch", ["aibao.moe", "lab.aibao.moe", "x"]),
        id="domain-search",
    ),
    pytest.param(edit(ippool(), "spec.ipv4Config.leaseTime", 0), id="lease-time-zero"),
    pytest.param(edit(ippool(), "spec.ipv4Config.leaseTime", -1), id="lease-time-negative"),
    pytest.param(edit(ippool(), "spec.ipv4Config.leaseTime", 31536000), id="lease-time-year"),
    pytest.param(edit(ippool(), "spec.ipv4Config.pool.exclude", []), id="exclude-empty"),
    pytest.param(edit(ippool(), "spec.networkName", "net-48"), id="network-name-without-namespace"),
    pytest.param(
        edit(ippool(), "spec.networkName", f"{'n' * 31}/{'m' * 32}"), id="network-name-64-chars"
    ),
]


@pytest.mark.parametrize("obj", ACCEPTED_IPPOOLS)
def test_upstream_ippool_is_accepted_unchanged(
    custom_api: CustomObjectsApi, namespace: str, obj: Manifest
) -> None:
    stored = create(custom_api, namespace, obj)
    assert stored["spec"] == obj["spec"]


MAC_SPELLINGS = [
    "fa:cf:8e:50:82:fc",
    "FA:CF:8E:50:82:FC",
    "Fa:cF:8e:50:82:Fc",
    "fa-cf-8e-50-82-fc",
    "FA-CF-8E-50-82-FC",
    "facf.8e50.82fc",
]


@pytest.mark.parametrize("mac", MAC_SPELLINGS)
def test_vmnetcfg_mac_spellings_are_accepted_unchanged(
    custom_api: CustomObjectsApi, namespace: str, mac: str
) -> None:
    obj = edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", mac)
    stored = create(custom_api, namespace, obj)
    assert stored["spec"] == obj["spec"]
    assert stored["spec"]["networkConfigs"][0]["macAddress"] == mac  # normalised later, not here


ACCEPTED_VMNETCFGS = [
    pytest.param(vmnetcfg(), id="readme-test-vm"),
    pytest.param(
        vmnetcfg(
            networkConfigs=[
                {
                    "macAddress": "fa:cf:8e:50:82:fc",
                    "networkName": "default/net-48",
                    "ipAddress": "192.168.48.85",
                },
                {"macAddress": "fa:cf:8e:50:82:fd", "networkName": "default/net-49"},
                {"macAddress": "fa:cf:8e:50:82:fe", "networkName": "default/net-50"},
                {"macAddress": "fa:cf:8e:50:82:ff", "networkName": "other/net-51"},
            ]
        ),
        id="four-nics-one-static",
    ),
    pytest.param(vmnetcfg(paused=True), id="paused"),
    pytest.param(vmnetcfg(networkConfigs=[]), id="no-nics"),
    pytest.param(edit(vmnetcfg(), "spec", {"vmName": "test-vm"}), id="no-network-configs"),
    pytest.param(vmnetcfg(vmName="v" * 64), id="vm-name-64-chars"),
]


@pytest.mark.parametrize("obj", ACCEPTED_VMNETCFGS)
def test_upstream_vmnetcfg_is_accepted_unchanged(
    custom_api: CustomObjectsApi, namespace: str, obj: Manifest
) -> None:
    stored = create(custom_api, namespace, obj)
    assert stored["spec"] == obj["spec"]


IPPOOL_STATUS = {
    "lastUpdate": "2024-03-01T10:00:00Z",
    "ipv4": {
        "allocated": {
            "192.168.48.81": "EXCLUDED",
            "192.168.48.82": "fa:cf:8e:50:82:fc",
            "192.168.48.90": "EXCLUDED",
        },
        "available": 7,
        "used": 1,
    },
    "agentPodRef": {
        "namespace": "harvester-system",
        "name": "default-net-48-agent",
        "image": "rancher/harvester-vm-dhcp-agent:v1.9.0",
        "uid": "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
    },
    "conditions": [
        {"type": "Registered", "status": "True", "lastUpdateTime": "2024-03-01T10:00:00Z"},
        {
            "type": "CacheReady",
            "status": "False",
            "reason": "NotInitialized",
            "lastUpdateTime": "2024-03-01T10:00:00Z",
        },
        {
            "type": "AgentReady",
            "status": "False",
            "reason": "Error",
            "message": "agent pod default-net-48-agent not ready",
            "lastUpdateTime": "2024-03-01T10:00:00Z",
            "lastTransitionTime": "2024-03-01T09:59:00Z",
        },
        {"type": "Stopped", "status": "False"},
    ],
}

VMNETCFG_STATUS = {
    "networkConfigs": [
        {
            "allocatedIPAddress": "192.168.48.82",
            "macAddress": "fa:cf:8e:50:82:fc",
            "networkName": "default/net-48",
            "state": "Allocated",
        },
    ],
    "conditions": [
        {"type": "Allocated", "status": "True", "lastUpdateTime": "2024-03-01T10:00:00Z"},
        {"type": "Disabled", "status": "False"},
        {"type": "InSynced", "status": "True"},
    ],
}


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        pytest.param(ippool(), IPPOOL_STATUS, id="ippool"),
        pytest.param(vmnetcfg(), VMNETCFG_STATUS, id="vmnetcfg"),
    ],
)
def test_upstream_status_is_accepted_unchanged_through_the_subresource(
    custom_api: CustomObjectsApi, namespace: str, obj: Manifest, status: dict[str, Any]
) -> None:
    created = create(custom_api, namespace, {**obj, "status": status})
    assert "status" not in created  # status is only written through the subresource
    stored = cast(
        Manifest,
        custom_api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural_of(obj), obj["metadata"]["name"], {"status": status}
        ),
    )
    assert stored["status"] == status
    assert stored["spec"] == obj["spec"]


# --------------------------------------------------------------------------------------------
# Immutability (CEL transition rules)


IPPOOL_IMMUTABLE = [
    pytest.param("spec.ipv4Config.cidr", "192.168.0.0/16", "CIDR is immutable", id="cidr"),
    pytest.param(
        "spec.ipv4Config.serverIP", "192.168.48.78", "ServerIP is immutable", id="server-ip"
    ),
    pytest.param("spec.ipv4Config.router", "192.168.48.254", "Router is immutable", id="router"),
    pytest.param(
        "spec.ipv4Config.pool.start", "192.168.48.80", "Start is immutable", id="pool-start"
    ),
    pytest.param("spec.ipv4Config.pool.end", "192.168.48.91", "End is immutable", id="pool-end"),
    pytest.param(
        "spec.ipv4Config.pool.exclude",
        ["192.168.48.81"],
        "Exclude is immutable",
        id="pool-exclude",
    ),
    pytest.param(
        "spec.ipv4Config.pool.exclude",
        ["192.168.48.90", "192.168.48.81"],
        "Exclude is immutable",
        id="pool-exclude-reordered",
    ),
    pytest.param(
        "spec.networkName", "default/net-49", "NetworkName is immutable", id="network-name"
    ),
    pytest.param("spec.ipv4Config.router", DELETE, "Router is required once set", id="no-router"),
    pytest.param(
        "spec.ipv4Config.pool.exclude", DELETE, "Exclude is required once set", id="no-exclude"
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), IPPOOL_IMMUTABLE)
def test_ippool_immutable_fields_reject_changes(
    custom_api: CustomObjectsApi, namespace: str, path: str, value: Any, message: str
) -> None:
    stored = create(custom_api, namespace, ippool())
    changed = edit(stored, path, value)
    error = rejection(lambda: replace(custom_api, namespace, changed))
    assert message in error
    field = path.rsplit(".", 1)[0] if value is DELETE else path
    assert f"{field}: " in error, f"the error does not name {field}: {error}"


def test_changing_the_cidr_is_rejected_with_upstreams_message(
    custom_api: CustomObjectsApi, namespace: str
) -> None:
    create(custom_api, namespace, ippool())
    error = rejection(
        lambda: custom_api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            IPPOOLS,
            "net-48",
            {"spec": {"ipv4Config": {"cidr": "192.168.49.0/24"}}},
        )
    )
    assert "spec.ipv4Config.cidr" in error
    assert "CIDR is immutable" in error


def test_vmnetcfg_vm_name_is_immutable(custom_api: CustomObjectsApi, namespace: str) -> None:
    stored = create(custom_api, namespace, vmnetcfg())
    error = rejection(lambda: replace(custom_api, namespace, edit(stored, "spec.vmName", "vm-2")))
    assert "spec.vmName: " in error
    assert "VMName is immutable" in error


IPPOOL_MUTABLE = [
    pytest.param("spec.ipv4Config.dns", ["8.8.8.8", "8.8.4.4"], id="dns"),
    pytest.param("spec.ipv4Config.dns", DELETE, id="dns-removed"),
    pytest.param("spec.ipv4Config.domainName", "example.com", id="domain-name"),
    pytest.param("spec.ipv4Config.domainSearch", ["example.com", "aibao.moe"], id="domain-search"),
    pytest.param("spec.ipv4Config.ntp", ["10.0.0.123"], id="ntp"),
    pytest.param("spec.ipv4Config.leaseTime", 86400, id="lease-time"),
    pytest.param("spec.ipv4Config.leaseTime", DELETE, id="lease-time-removed"),
    pytest.param("spec.paused", True, id="paused"),
]


@pytest.mark.parametrize(("path", "value"), IPPOOL_MUTABLE)
def test_ippool_mutable_fields_can_change(
    custom_api: CustomObjectsApi, namespace: str, path: str, value: Any
) -> None:
    stored = create(custom_api, namespace, ippool())
    changed = edit(stored, path, value)
    assert replace(custom_api, namespace, changed)["spec"] == changed["spec"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("spec.ipv4Config.router", "192.168.48.1", id="router"),
        pytest.param("spec.ipv4Config.pool.exclude", ["192.168.48.85"], id="pool-exclude"),
    ],
)
def test_ippool_router_and_exclude_may_be_added_when_absent(
    custom_api: CustomObjectsApi, namespace: str, path: str, value: Any
) -> None:
    stored = create(custom_api, namespace, edit(ippool(), path, DELETE))
    changed = edit(stored, path, value)
    assert replace(custom_api, namespace, changed)["spec"] == changed["spec"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(
            "spec.networkConfigs",
            [
                {"macAddress": "fa:cf:8e:50:82:fd", "networkName": "default/net-49"},
                {"macAddress": "fa:cf:8e:50:82:fc", "networkName": "default/net-48"},
            ],
            id="network-configs",
        ),
        pytest.param("spec.networkConfigs.0.ipAddress", "192.168.48.88", id="ip-address"),
        pytest.param("spec.networkConfigs", DELETE, id="network-configs-removed"),
        pytest.param("spec.paused", True, id="paused"),
    ],
)
def test_vmnetcfg_mutable_fields_can_change(
    custom_api: CustomObjectsApi, namespace: str, path: str, value: Any
) -> None:
    stored = create(custom_api, namespace, vmnetcfg())
    changed = edit(stored, path, value)
    assert replace(custom_api, namespace, changed)["spec"] == changed["spec"]


# --------------------------------------------------------------------------------------------
# Malformed objects are rejected, naming the field


MALFORMED = [
    pytest.param(
        edit(ippool(), "spec.ipv4Config.dns", ["1.1.1.1", "dns.google"]),
        "spec.ipv4Config.dns[1]",
        "must be of type ipv4",
        id="dns-hostname",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.dns", ["1.1.1.1", "2606:4700:4700::1111"]),
        "spec.ipv4Config.dns[1]",
        "must be of type ipv4",
        id="dns-ipv6",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.pool.exclude", ["192.168.48.81", "192.168.48.300"]),
        "spec.ipv4Config.pool.exclude[1]",
        "must be of type ipv4",
        id="exclude-not-ipv4",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.dns", ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]),
        "spec.ipv4Config.dns",
        "must have at most 3 items",
        id="dns-four",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.ntp", ["a", "b", "c", "d", "e"]),
        "spec.ipv4Config.ntp",
        "must have at most 4 items",
        id="ntp-five",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.serverIP", "192.168.48.777"),
        "spec.ipv4Config.serverIP",
        "must be of type ipv4",
        id="server-ip-not-ipv4",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.router", "gateway"),
        "spec.ipv4Config.router",
        "must be of type ipv4",
        id="router-not-ipv4",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.pool.start", "192.168.48"),
        "spec.ipv4Config.pool.start",
        "must be of type ipv4",
        id="start-not-ipv4",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.leaseTime", "300s"),
        "spec.ipv4Config.leaseTime",
        "must be of type integer",
        id="lease-time-string",
    ),
    pytest.param(
        edit(ippool(), "spec.networkName", "default/" + "n" * 57),
        "spec.networkName",
        "may not be more than 64",
        id="network-name-too-long",
    ),
    pytest.param(
        edit(ippool(), "spec.networkName", DELETE),
        "spec.networkName",
        "Required value",
        id="no-network-name",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.cidr", DELETE),
        "spec.ipv4Config.cidr",
        "Required value",
        id="no-cidr",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.serverIP", DELETE),
        "spec.ipv4Config.serverIP",
        "Required value",
        id="no-server-ip",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.pool", DELETE),
        "spec.ipv4Config.pool",
        "Required value",
        id="no-pool",
    ),
    pytest.param(
        edit(ippool(), "spec.ipv4Config.pool.end", DELETE),
        "spec.ipv4Config.pool.end",
        "Required value",
        id="no-pool-end",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", "fa:cf:8e:50:82"),
        "spec.networkConfigs[0].macAddress",
        "should match",
        id="mac-five-octets",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", "fa:cf:8e:50:82:fg"),
        "spec.networkConfigs[0].macAddress",
        "should match",
        id="mac-not-hex",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", "fa:cf-8e:50:82:fc"),
        "spec.networkConfigs[0].macAddress",
        "should match",
        id="mac-mixed-separators",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", "facf8e5082fc"),
        "spec.networkConfigs[0].macAddress",
        "should match",
        id="mac-no-separators",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", "fa:cf:8e:50:82:fc:01"),
        "spec.networkConfigs[0].macAddress",
        "may not be more than 17",
        id="mac-seven-octets",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", " a:cf:8e:50:82:fc"),
        "spec.networkConfigs[0].macAddress",
        "should match",
        id="mac-leading-space",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.ipAddress", "192.168.48.256"),
        "spec.networkConfigs[0].ipAddress",
        "must be of type ipv4",
        id="ip-address-not-ipv4",
    ),
    pytest.param(
        vmnetcfg(
            networkConfigs=[
                {"macAddress": f"fa:cf:8e:50:82:f{i}", "networkName": "default/net-48"}
                for i in range(5)
            ]
        ),
        "spec.networkConfigs",
        "must have at most 4 items",
        id="five-network-configs",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.macAddress", DELETE),
        "spec.networkConfigs[0].macAddress",
        "Required value",
        id="no-mac",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.networkConfigs.0.networkName", DELETE),
        "spec.networkConfigs[0].networkName",
        "Required value",
        id="no-network-name",
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.vmName", DELETE), "spec.vmName", "Required value", id="no-vm-name"
    ),
    pytest.param(
        edit(vmnetcfg(), "spec.vmName", "v" * 65),
        "spec.vmName",
        "may not be more than 64",
        id="vm-name-too-long",
    ),
]


@pytest.mark.parametrize(("obj", "field", "fragment"), MALFORMED)
def test_malformed_object_is_rejected_naming_the_field(
    custom_api: CustomObjectsApi, namespace: str, obj: Manifest, field: str, fragment: str
) -> None:
    error = rejection(lambda: create(custom_api, namespace, obj))
    assert f"{field}: " in error, f"the error does not name {field}: {error}"
    assert fragment in error


# --------------------------------------------------------------------------------------------
# kubectl


@pytest.mark.parametrize("resource", ["ippl", "ippls", "ippool", "ippools"])
def test_kubectl_get_ippool_shows_the_printer_columns(
    custom_api: CustomObjectsApi, namespace: str, kubectl: Callable[..., str], resource: str
) -> None:
    create(custom_api, namespace, ippool())
    [row] = parse_kubectl_table(kubectl("get", resource, "-n", namespace))
    assert list(row) == ["NAME", *served_columns(IPPOOLS)]
    assert row["NAME"] == "net-48"
    assert row["NETWORK"] == "default/net-48"
    assert row["AVAILABLE"] == row["USED"] == row["REGISTERED"] == ""


@pytest.mark.parametrize("resource", ["vmnetcfg", "vmnetcfgs", "virtualmachinenetworkconfig"])
def test_kubectl_get_vmnetcfg_shows_the_printer_columns(
    custom_api: CustomObjectsApi, namespace: str, kubectl: Callable[..., str], resource: str
) -> None:
    create(custom_api, namespace, vmnetcfg())
    [row] = parse_kubectl_table(kubectl("get", resource, "-n", namespace))
    assert list(row) == ["NAME", *served_columns(VMNETCFGS)]
    assert (row["NAME"], row["VMNAME"]) == ("test-vm", "test-vm")


def test_kubectl_get_ippl_shows_the_status(
    custom_api: CustomObjectsApi, namespace: str, kubectl: Callable[..., str]
) -> None:
    create(custom_api, namespace, ippool())
    custom_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, IPPOOLS, "net-48", {"status": IPPOOL_STATUS}
    )
    [row] = parse_kubectl_table(kubectl("get", "ippl", "-n", namespace))
    assert {k: row[k] for k in ("AVAILABLE", "USED", "REGISTERED", "CACHEREADY", "AGENTREADY")} == {
        "AVAILABLE": "7",
        "USED": "1",
        "REGISTERED": "True",
        "CACHEREADY": "False",
        "AGENTREADY": "False",
    }
    assert re.fullmatch(r"\d+s", row["AGE"])


def test_kubectl_get_vmnetcfg_shows_the_status(
    custom_api: CustomObjectsApi, namespace: str, kubectl: Callable[..., str]
) -> None:
    create(custom_api, namespace, vmnetcfg())
    custom_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, VMNETCFGS, "test-vm", {"status": VMNETCFG_STATUS}
    )
    [row] = parse_kubectl_table(kubectl("get", "vmnetcfg", "-n", namespace))
    assert {k: row[k] for k in ("ALLOCATED", "DISABLED", "INSYNCED", "ADDRESS", "STATE")} == {
        "ALLOCATED": "True",
        "DISABLED": "False",
        "INSYNCED": "True",
        "ADDRESS": "192.168.48.82",
        "STATE": "Allocated",
    }


def test_kubectl_get_vmnetcfg_wide_shows_the_network_and_mac(
    custom_api: CustomObjectsApi, namespace: str, kubectl: Callable[..., str]
) -> None:
    """-o wide adds the first NIC's network and MAC. Every column reads that same NIC: a
    first NIC still pending shows no address, not the second NIC's."""
    create(custom_api, namespace, vmnetcfg())
    [row] = parse_kubectl_table(kubectl("get", "vmnetcfg", "-n", namespace, "-o", "wide"))
    assert list(row) == ["NAME", *served_columns(VMNETCFGS, wide=True)]
    assert (row["ADDRESS"], row["STATE"], row["NETWORK"], row["MAC"]) == ("", "", "", "")
    pending_first = {
        "networkConfigs": [
            {
                "macAddress": "fa:cf:8e:50:82:fc",
                "networkName": "default/net-48",
                "state": "Pending",
            },
            {
                "allocatedIPAddress": "192.168.49.82",
                "macAddress": "fa:cf:8e:50:82:fd",
                "networkName": "default/net-49",
                "state": "Allocated",
            },
        ]
    }
    custom_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, VMNETCFGS, "test-vm", {"status": pending_first}
    )
    [row] = parse_kubectl_table(kubectl("get", "vmnetcfg", "-n", namespace, "-o", "wide"))
    assert (row["ADDRESS"], row["STATE"], row["NETWORK"], row["MAC"]) == (
        "",
        "Pending",
        "default/net-48",
        "fa:cf:8e:50:82:fc",
    )


@pytest.mark.parametrize(
    ("field", "phrases"),
    [
        pytest.param(
            "ippool.spec.ipv4Config",
            ["cidr", "serverIP", "router", "pool", "dns", "leaseTime", "DHCP server", "seconds"],
            id="ippool-ipv4config",
        ),
        pytest.param("ippool.spec.networkName", ["<nad-namespace>/<nad-name>"], id="network-name"),
        pytest.param("ippool.status.ipv4.allocated", ["EXCLUDED", "RESERVED"], id="allocated"),
        pytest.param(
            "ippool.status.conditions",
            ["Registered", "CacheReady", "AgentReady", "Stopped"],
            id="ippool-conditions",
        ),
        pytest.param(
            "vmnetcfg.status.networkConfigs.state",
            ["Allocated", "Pending", "Stale"],
            id="vmnetcfg-state",
        ),
        pytest.param(
            "vmnetcfg.spec.networkConfigs.macAddress", ["colons", "hyphens"], id="mac-address"
        ),
    ],
)
def test_kubectl_explain_shows_the_descriptions(
    kubectl: Callable[..., str], field: str, phrases: list[str]
) -> None:
    output = kubectl("explain", field)
    text = " ".join(output.split())  # explain wraps lines
    missing = [phrase for phrase in phrases if phrase not in text]
    assert missing == [], f"`kubectl explain {field}` lacks {missing}:\n{output}"


# --------------------------------------------------------------------------------------------
# RBAC on the custom resources, with a minted identity


def test_minted_identity_needs_rbac_to_read_ippools(
    cluster: Cluster, api_client: ApiClient, custom_api: CustomObjectsApi, namespace: str
) -> None:
    if not cluster.managed:
        pytest.skip("minting identities needs a cluster started from the k8s-test-env toolkit")
    create(custom_api, namespace, ippool())
    user = f"system:serviceaccount:{namespace}:reader"
    with cluster.api_client(cluster.mint(user)) as api:
        reader = CustomObjectsApi(api)
        with pytest.raises(ApiException) as info:
            reader.list_namespaced_custom_object(GROUP, VERSION, namespace, IPPOOLS)
        assert info.value.status == 403
        rules = [{"apiGroups": [GROUP], "resources": [IPPOOLS], "verbs": ["get", "list"]}]
        apply_manifests(
            api_client,
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "ippool-reader"},
                    "rules": rules,
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "ippool-reader"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "ippool-reader",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "reader", "namespace": namespace}
                    ],
                },
            ],
            namespace=namespace,
        )
        deadline = time.monotonic() + 5  # RBAC reaches the authorizer through informers
        while True:
            try:
                listed = cast(
                    Manifest,
                    reader.list_namespaced_custom_object(GROUP, VERSION, namespace, IPPOOLS),
                )
                break
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert [item["metadata"]["name"] for item in listed["items"]] == ["net-48"]

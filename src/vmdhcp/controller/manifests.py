"""Pure builders: the agent pod of an IPPool (exactly upstream's shape), or its replicas and
their PodDisruptionBudget, and the network configuration a VirtualMachine asks for."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from vmdhcp.api import GROUP, split_network_name
from vmdhcp.api.constants import (
    AGENT_LABEL_VALUE,
    ANNOTATION_MAC_ADDRESS,
    ANNOTATION_MULTUS_NETWORKS,
    ANNOTATION_STATIC_IP_PREFIX,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    LABEL_VM_DHCP_CONTROLLER,
)
from vmdhcp.controller.config import Image
from vmdhcp.mac import InvalidMac, normalize_mac

AGENT_HTTP_PORT = 8080
LABEL_AGENT_REPLICA = f"{GROUP}/ippool-agent-replica"
"""On each replica of a pool's agent (`--agent-replicas` > 1): its index, "0" to "9" (REPLICA_SLOTS:
the N replicas and the spares that replace replicas stuck on dead nodes)."""
MAX_NAME = 63
SET_IP_SCRIPT = """#!/usr/bin/env sh
set -ex
ip address flush dev eth1
ip address add {server_ip}/{prefix} dev eth1
"""


def agent_pod_name(namespace: str, name: str) -> str:
    """Upstream's SafeAgentConcatName: `<ns>-<name>-agent`, hashed when too long."""
    full = f"{namespace}-{name}"
    if len(full) < 58:
        return f"{full}-agent"
    digest = hashlib.sha256(full.encode()).hexdigest()
    if full[50].isascii() and (full[50].islower() or full[50].isdigit()):
        return f"{full[:51]}-{digest[:5]}-agent"
    return f"{full[:50]}-{digest[:6]}-agent"


def agent_base_name(namespace: str, name: str) -> str:
    """The pool's replicas are `<base>-<index>` and its PodDisruptionBudget is `<base>`:
    upstream's agent pod name, cut and hashed shorter when the index would not fit in 63."""
    base = agent_pod_name(namespace, name)
    if len(base) + 2 <= MAX_NAME:
        return base
    full = f"{namespace}-{name}"
    digest = hashlib.sha256(full.encode()).hexdigest()
    return f"{full[:49].rstrip('-.')}-{digest[:5]}-agent"


def agent_replica_name(namespace: str, name: str, index: int) -> str:
    return f"{agent_base_name(namespace, name)}-{index}"


def agent_labels(namespace: str, name: str) -> dict[str, str]:
    """What every agent pod of one IPPool carries (and its PodDisruptionBudget selects)."""
    return {
        LABEL_VM_DHCP_CONTROLLER: AGENT_LABEL_VALUE,
        LABEL_IPPOOL_NAMESPACE: namespace,
        LABEL_IPPOOL_NAME: name,
    }


def agent_pdb(
    *, pool_namespace: str, pool_name: str, agent_namespace: str, replicas: int
) -> dict[str, Any]:
    """The PodDisruptionBudget of a pool's agent replicas: a drain evicts one at a time.
    The agents are bare pods (no workload owns them), for which Kubernetes honours only an
    integer minAvailable (a maxUnavailable would allow no eviction at all); a replica that
    is not Ready may always be evicted."""
    labels = agent_labels(pool_namespace, pool_name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": agent_base_name(pool_namespace, pool_name),
            "namespace": agent_namespace,
            "labels": dict(labels),
        },
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "minAvailable": replicas - 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def agent_pod(
    *,
    pool_namespace: str,
    pool_name: str,
    network_name: str,
    server_ip: str,
    cidr: str,
    cluster_network: str,
    agent_namespace: str,
    service_account: str,
    image: Image,
    dry_run: bool,
    replica: int | None = None,
) -> dict[str, Any]:
    """The agent pod of one IPPool, as upstream's prepareAgentPod builds it; or, with
    `replica`, that replica of several: it runs with `--leader-election` (its name and
    namespace from the downward API), puts the server address on its NIC itself when it
    leads (no `ip-setter`), and prefers a node without another replica of the pool."""
    labels = agent_labels(pool_namespace, pool_name)
    nad_namespace, nad_name = split_network_name(network_name)
    prefix = IPv4Network(cidr, strict=False).prefixlen
    args = ["--ippool-ref", f"{pool_namespace}/{pool_name}"]
    if replica is None:
        name = agent_pod_name(pool_namespace, pool_name)
    else:
        name = agent_replica_name(pool_namespace, pool_name, replica)
        args.append("--leader-election")
    if dry_run:
        args.append("--dry-run")
    root = {"runAsUser": 0, "runAsGroup": 0, "capabilities": {"add": ["NET_ADMIN"]}}
    # upstream's agent relies on the runtime's defaults for NET_RAW (the AF_PACKET socket)
    # and NET_BIND_SERVICE (port 67); runtimes that drop them (CRI-O) break it
    agent_caps = {"add": ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]}
    env: list[dict[str, Any]] = [{"name": "VM_DHCP_AGENT_NAME", "value": name}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": agent_namespace,
            "labels": dict(labels),
            "annotations": {
                ANNOTATION_MULTUS_NETWORKS: json.dumps(
                    [{"namespace": nad_namespace, "name": nad_name, "interface": "eth1"}],
                    separators=(",", ":"),
                )
            },
        },
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": f"{GROUP}/{cluster_network}",
                                        "operator": "In",
                                        "values": ["true"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "serviceAccountName": service_account,
            "initContainers": [
                {
                    "name": "ip-setter",
                    "image": str(image),
                    "imagePullPolicy": "IfNotPresent",
                    "command": [
                        "/bin/sh",
                        "-c",
                        SET_IP_SCRIPT.format(server_ip=server_ip, prefix=prefix),
                    ],
                    "securityContext": root,
                }
            ],
            "containers": [
                {
                    "name": "agent",
                    "image": str(image),
                    "args": args,
                    "env": env,
                    "ports": [{"name": "http", "containerPort": AGENT_HTTP_PORT}],
                    "securityContext": {**root, "capabilities": agent_caps},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": AGENT_HTTP_PORT}},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": AGENT_HTTP_PORT}},
                }
            ],
        },
    }
    if replica is None:
        return pod
    pod["metadata"]["labels"][LABEL_AGENT_REPLICA] = str(replica)
    spec = pod["spec"]
    del spec["initContainers"]  # the elected agent sets the address
    env.extend(
        {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": field}}}
        for variable, field in (
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_UID", "metadata.uid"),
        )
    )
    spec["affinity"]["podAntiAffinity"] = {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": dict(labels)},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    }
    return pod


def pod_is_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def pod_image(pod: dict[str, Any]) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    return containers[0].get("image") if containers else None


@dataclass(frozen=True)
class DesiredNic:
    network_name: str
    mac_address: str
    ip_address: str | None = None

    def wire(self) -> dict[str, str]:
        out = {"networkName": self.network_name, "macAddress": self.mac_address}
        if self.ip_address:
            out["ipAddress"] = self.ip_address
        return out


def vm_networks(vm: dict[str, Any]) -> set[str]:
    """Every Multus network of a VirtualMachine (`namespace/name`), whatever its NICs' MACs."""
    metadata = vm.get("metadata") or {}
    template = ((vm.get("spec") or {}).get("template") or {}).get("spec") or {}
    vm_namespace = metadata.get("namespace") or "default"
    names = set()
    for network in template.get("networks") or []:
        name = (network.get("multus") or {}).get("networkName")
        if name:
            names.add(name if "/" in name else f"{vm_namespace}/{name}")
    return names


def nics_from_vm(vm: dict[str, Any]) -> tuple[list[DesiredNic], list[str]]:
    """The Multus NICs of a VirtualMachine that have a MAC, in the VM's interface order.

    MACs come from the `harvesterhci.io/mac-address` annotation, overridden by the spec;
    pod-network NICs are skipped; a network name without a namespace means the VM's own
    (KubeVirt's rule); `static-ip.harvesterhci.io/<nic>` annotations become `ipAddress`.
    Returns the NICs and warnings about annotations that could not be used.
    """
    metadata = vm.get("metadata") or {}
    annotations: dict[str, str] = metadata.get("annotations") or {}
    template = ((vm.get("spec") or {}).get("template") or {}).get("spec") or {}
    warnings: list[str] = []
    macs: dict[str, str] = {}
    raw = annotations.get(ANNOTATION_MAC_ADDRESS)
    if raw:
        try:
            parsed = json.loads(raw)
            if not isinstance(parsed, dict):
                raise ValueError("not a JSON object")
            macs.update({str(k): str(v) for k, v in parsed.items() if v})
        except ValueError as exc:
            warnings.append(f"annotation {ANNOTATION_MAC_ADDRESS} is not valid JSON: {exc}")
    interfaces = ((template.get("domain") or {}).get("devices") or {}).get("interfaces") or []
    order = [i.get("name") for i in interfaces if i.get("name")]
    for interface in interfaces:
        if interface.get("macAddress"):
            macs[interface["name"]] = interface["macAddress"]
    multus = {
        n["name"]: n["multus"]["networkName"]
        for n in template.get("networks") or []
        if n.get("name") and (n.get("multus") or {}).get("networkName")
    }
    names = order + sorted(set(macs) - set(order))
    statics = {
        key[len(ANNOTATION_STATIC_IP_PREFIX) :]: value
        for key, value in annotations.items()
        if key.startswith(ANNOTATION_STATIC_IP_PREFIX)
    }
    for nic in sorted(set(statics) - set(multus)):
        warnings.append(f"static ip annotation references unknown nic {nic}")
    nics: list[DesiredNic] = []
    vm_namespace = metadata.get("namespace") or "default"
    for name in names:
        if name not in multus or name not in macs:
            continue
        try:
            mac = normalize_mac(macs[name])
        except InvalidMac as exc:
            warnings.append(f"nic {name}: {exc}")
            continue
        network = multus[name]
        if "/" not in network:
            network = f"{vm_namespace}/{network}"
        ip = statics.get(name)
        if ip is not None:
            try:
                ip = str(IPv4Address(ip.strip()))
            except ValueError:
                warnings.append(
                    f"static ip annotation value is not a valid IPv4 address: nic {name}: {ip!r}"
                )
                ip = None
        nics.append(DesiredNic(network, mac, ip))
    return nics, warnings

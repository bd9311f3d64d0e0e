"""Test objects for the validators, in the shape of upstream's builders: an IPPool or a
VirtualMachineNetworkConfig from a few fields, and a `Snapshot` of the cluster around it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vmdhcp.api import IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import LABEL_IPPOOL_NAME, LABEL_IPPOOL_NAMESPACE
from vmdhcp.validation import Snapshot

NAD_NAMESPACE = "default"
NAD_NAME = "net-1"
NETWORK = f"{NAD_NAMESPACE}/{NAD_NAME}"
POOL_NAMESPACE = NAD_NAMESPACE
POOL_NAME = NAD_NAME


def ippool_body(
    namespace: str = POOL_NAMESPACE,
    name: str = POOL_NAME,
    *,
    network: str = NETWORK,
    cidr: str = "192.168.0.0/24",
    server: str = "",
    start: str = "",
    end: str = "",
    router: str | None = None,
    exclude: Iterable[str] | None = None,
    dns: Iterable[str] | None = None,
    lease_time: int | None = None,
    allocated: Mapping[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """An IPPool as JSON; empty strings stand for fields the mutator fills in (upstream's
    builder leaves them empty the same way)."""
    config: dict[str, Any] = {
        "cidr": cidr,
        "serverIP": server,
        "pool": {"start": start, "end": end},
    }
    if router is not None:
        config["router"] = router
    if exclude is not None:
        config["pool"]["exclude"] = list(exclude)
    if dns is not None:
        config["dns"] = list(dns)
    if lease_time is not None:
        config["leaseTime"] = lease_time
    body: dict[str, Any] = {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"networkName": network, "ipv4Config": config},
    }
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if allocated is not None:
        body["status"] = {"ipv4": {"allocated": dict(allocated), "used": 0, "available": 0}}
    return body


def ippool(*args: Any, **kwargs: Any) -> IPPool:
    return IPPool.model_validate(ippool_body(*args, **kwargs))


def vmnetcfg(
    namespace: str = "default",
    name: str = "test-vmnetcfg",
    nics: Iterable[tuple[str, str] | tuple[str, str, str]] = (),
    *,
    deleting: bool = False,
) -> VirtualMachineNetworkConfig:
    """`nics`: (network, mac) or (network, mac, ipAddress)."""
    configs = []
    for nic in nics:
        entry = {"networkName": nic[0], "macAddress": nic[1]}
        if len(nic) == 3:
            entry["ipAddress"] = nic[2]
        configs.append(entry)
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return VirtualMachineNetworkConfig.model_validate(
        {"metadata": meta, "spec": {"vmName": name, "networkConfigs": configs}}
    )


def nad(
    namespace: str = NAD_NAMESPACE,
    name: str = NAD_NAME,
    pool: tuple[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[str, str, dict[str, str]]:
    """A NAD for `Snapshot.of`; `pool` adds the labels the controller writes."""
    found = dict(labels or {})
    if pool is not None:
        found[LABEL_IPPOOL_NAMESPACE], found[LABEL_IPPOOL_NAME] = pool
    return namespace, name, found


def cluster(
    nads: Iterable[tuple[str, str, dict[str, str]]] = (nad(),),
    ippools: Iterable[IPPool] = (),
    vmnetcfgs: Iterable[VirtualMachineNetworkConfig] = (),
) -> Snapshot:
    return Snapshot.of(nads, ippools, vmnetcfgs)

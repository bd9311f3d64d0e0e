"""Typed models of the two custom resources, wire-compatible with upstream.

Field names follow the CRDs exactly (through aliases); values stay as the API server
stores them (addresses as strings, MACs as typed), so any object the CRDs accept parses.
Turning them into IPAM and DHCP values happens once, through the helpers here, with
field paths in every error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vmdhcp.api.constants import (
    API_VERSION,
    DEFAULT_LEASE_TIME,
    IPPOOL_KIND,
    VMNETCFG_KIND,
)
from vmdhcp.ipam import Pool
from vmdhcp.mac import normalize_mac


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict, with the CRD's field names and no unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(_Model):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_update_time: str | None = Field(default=None, alias="lastUpdateTime")
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class PoolRange(_Model):
    start: str
    end: str
    exclude: list[str] | None = None


class IPv4Config(_Model):
    server_ip: str = Field(alias="serverIP")
    cidr: str
    pool: PoolRange
    router: str | None = None
    dns: list[str] | None = Field(default=None, max_length=3)
    domain_name: str | None = Field(default=None, alias="domainName")
    domain_search: list[str] | None = Field(default=None, alias="domainSearch")
    ntp: list[str] | None = Field(default=None, max_length=4)
    lease_time: int | None = Field(default=None, alias="leaseTime")

    @property
    def effective_lease_time(self) -> int:
        """Seconds to serve: unset, zero or negative means one year, as upstream."""
        return self.lease_time if self.lease_time and self.lease_time > 0 else DEFAULT_LEASE_TIME

    def to_pool(self, name: str = "") -> Pool:
        """The IPAM pool this config describes; raises InvalidPool with a field path."""
        return Pool.from_spec(
            self.cidr,
            self.pool.start,
            self.pool.end,
            server=self.server_ip,
            router=self.router,
            exclude=self.pool.exclude or (),
            name=name,
        )


class IPPoolSpec(_Model):
    network_name: str = Field(alias="networkName", max_length=64)
    paused: bool | None = None
    ipv4_config: IPv4Config | None = Field(default=None, alias="ipv4Config")


class IPv4Status(_Model):
    allocated: dict[str, str] | None = None
    used: int
    available: int


class PodReference(_Model):
    namespace: str | None = None
    name: str | None = None
    image: str | None = None
    uid: str | None = None


class IPPoolStatus(_Model):
    last_update: datetime | None = Field(default=None, alias="lastUpdate")
    ipv4: IPv4Status | None = None
    agent_pod_ref: PodReference | None = Field(default=None, alias="agentPodRef")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] | None = None


class ObjectMeta(_Model):
    """The part of metadata this project reads; everything else is ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    name: str = ""
    namespace: str = ""
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class IPPool(_Model):
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = IPPOOL_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IPPoolSpec
    status: IPPoolStatus | None = None


class NetworkConfig(_Model):
    network_name: str = Field(alias="networkName", max_length=64)
    mac_address: str = Field(alias="macAddress", max_length=17)
    ip_address: str | None = Field(default=None, alias="ipAddress")

    @property
    def mac(self) -> str:
        """The MAC in its one normal form (lower-case, colons)."""
        return normalize_mac(self.mac_address)


class VirtualMachineNetworkConfigSpec(_Model):
    vm_name: str = Field(alias="vmName", max_length=64)
    network_configs: list[NetworkConfig] | None = Field(
        default=None, alias="networkConfigs", max_length=4
    )
    paused: bool | None = None


class NetworkConfigStatus(_Model):
    allocated_ip_address: str | None = Field(default=None, alias="allocatedIPAddress")
    mac_address: str | None = Field(default=None, alias="macAddress")
    network_name: str | None = Field(default=None, alias="networkName")
    state: str | None = None


class VirtualMachineNetworkConfigStatus(_Model):
    network_configs: list[NetworkConfigStatus] | None = Field(default=None, alias="networkConfigs")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] | None = None


class VirtualMachineNetworkConfig(_Model):
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = VMNETCFG_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: VirtualMachineNetworkConfigSpec
    status: VirtualMachineNetworkConfigStatus | None = None


def split_network_name(network_name: str) -> tuple[str, str]:
    """`<namespace>/<name>` of a NetworkAttachmentDefinition; no namespace means `default`.

    Upstream's webhook defaults to `default` while its controller uses an empty
    namespace; here both sides use this one function.
    """
    namespace, sep, name = network_name.partition("/")
    if not sep:
        return "default", namespace
    return namespace or "default", name

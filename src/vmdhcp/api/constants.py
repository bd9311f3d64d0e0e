"""Names shared with upstream vm-dhcp-controller; changing any of them breaks existing
clusters, scripts and dashboards."""

import hashlib
from enum import StrEnum
from typing import Final

from vmdhcp.ipam import EXCLUDED, RESERVED

GROUP: Final = "network.harvesterhci.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

IPPOOL_KIND: Final = "IPPool"
IPPOOL_PLURAL: Final = "ippools"
VMNETCFG_KIND: Final = "VirtualMachineNetworkConfig"
VMNETCFG_PLURAL: Final = "virtualmachinenetworkconfigs"

NAD_GROUP: Final = "k8s.cni.cncf.io"
NAD_VERSION: Final = "v1"
NAD_PLURAL: Final = "network-attachment-definitions"
KUBEVIRT_GROUP: Final = "kubevirt.io"
KUBEVIRT_VERSION: Final = "v1"
VM_PLURAL: Final = "virtualmachines"

# Labels
LABEL_IPPOOL_NAMESPACE: Final = f"{GROUP}/ippool-namespace"
LABEL_IPPOOL_NAME: Final = f"{GROUP}/ippool-name"
LABEL_CLUSTER_NETWORK: Final = f"{GROUP}/clusternetwork"
LABEL_VM_DHCP_CONTROLLER: Final = f"{GROUP}/vm-dhcp-controller"
AGENT_LABEL_VALUE: Final = "agent"
LABEL_VM_NAME: Final = "harvesterhci.io/vmName"

# Annotations
ANNOTATION_HOLD_AGENT_UPGRADE: Final = f"{GROUP}/hold-ippool-agent-upgrade"
ANNOTATION_MAC_ADDRESS: Final = "harvesterhci.io/mac-address"
ANNOTATION_MULTUS_NETWORKS: Final = "k8s.v1.cni.cncf.io/networks"
ANNOTATION_STATIC_IP_PREFIX: Final = "static-ip.harvesterhci.io/"
ANNOTATION_DHCP_POOL: Final = f"{GROUP}/dhcp-pool"

# Marks in IPPool status.ipv4.allocated
EXCLUDED_MARK: Final = EXCLUDED
RESERVED_MARK: Final = RESERVED
DECLINED_MARK: Final = "DECLINED"
"""An address a client declined (DHCPDECLINE: another host answers for it), set aside by the
controller for its quarantine: given to nobody, counted as used. Ours; upstream's readers
take it for a MAC that matches no VM."""
MARKS: Final = frozenset((EXCLUDED, RESERVED, DECLINED_MARK))

DEFAULT_LEASE_TIME: Final = 31_536_000
"""Seconds; upstream serves one year when the pool sets no (or a non-positive) lease time."""


class IPPoolCondition(StrEnum):
    REGISTERED = "Registered"
    CACHE_READY = "CacheReady"
    AGENT_READY = "AgentReady"
    STOPPED = "Stopped"


class VmNetCfgCondition(StrEnum):
    ALLOCATED = "Allocated"
    DISABLED = "Disabled"
    IN_SYNCED = "InSynced"


class NetworkConfigState(StrEnum):
    ALLOCATED = "Allocated"
    PENDING = "Pending"
    STALE = "Stale"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


MAX_LEASE_NAME = 253
"""A Lease's name is a DNS subdomain."""


def _pool_lease_name(prefix: str, pool_namespace: str, pool_name: str) -> str:
    """`<prefix>.<ns>.<name>`: unambiguous, since a namespace has no dots (with dashes,
    `a-b/c` and `a/b-c` would share a name); hashed when longer than a name may be."""
    full = f"{prefix}.{pool_namespace}.{pool_name}"
    if len(full) <= MAX_LEASE_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:16]
    return f"{full[: MAX_LEASE_NAME - 17].rstrip('-.')}.{digest}"


def agent_lease_name(pool_namespace: str, pool_name: str) -> str:
    """The coordination.k8s.io Lease the agents of one IPPool contend for (in the agent
    namespace): `vm-dhcp-agent.<ns>.<name>`."""
    return _pool_lease_name("vm-dhcp-agent", pool_namespace, pool_name)


def report_lease_name(pool_namespace: str, pool_name: str) -> str:
    """The Lease in which the serving agent of one IPPool reports to the controller:
    `vm-dhcp-agent-report.<ns>.<name>` (never an election Lease's name: the character after
    `vm-dhcp-agent` differs)."""
    return _pool_lease_name("vm-dhcp-agent-report", pool_namespace, pool_name)

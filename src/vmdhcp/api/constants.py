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


def agent_lease_name(pool_namespace: str, pool_name: str) -> str:
    """The coordination.k8s.io Lease the agents of one IPPool contend for (in the agent
    namespace): `vm-dhcp-agent-<ns>-<name>`, cut and hashed to stay a valid name."""
    full = f"vm-dhcp-agent-{pool_namespace}-{pool_name}"
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[:54].rstrip('-.')}-{digest}"

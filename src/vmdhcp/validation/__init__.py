"""Pure validation and defaulting of IPPools and VirtualMachineNetworkConfigs.

Shared by the admission webhook (which refuses bad objects) and the controller (which
reports a `PermanentError` with the same message for objects that reached it without the
webhook). No I/O: what the rules need to know about the cluster comes in as a
`ClusterView`.
"""

from vmdhcp.validation.addresses import AddressError, parse_addr, parse_cidr
from vmdhcp.validation.errors import Operation, ValidationError
from vmdhcp.validation.ippool import (
    DEFAULT_SERVICE_CIDR,
    ippool_problems,
    ippool_users,
    validate_ippool_create,
    validate_ippool_delete,
    validate_ippool_update,
)
from vmdhcp.validation.mutate import JsonPatchOp, ippool_defaults, mutate_ippool_create
from vmdhcp.validation.view import ClusterView, Snapshot, network_key
from vmdhcp.validation.vmnetcfg import (
    resolve_ippool,
    static_ip_problem,
    validate_vmnetcfg_create,
    validate_vmnetcfg_update,
    vmnetcfg_problems,
)

__all__ = [
    "DEFAULT_SERVICE_CIDR",
    "AddressError",
    "ClusterView",
    "JsonPatchOp",
    "Operation",
    "Snapshot",
    "ValidationError",
    "ippool_defaults",
    "ippool_problems",
    "ippool_users",
    "mutate_ippool_create",
    "network_key",
    "parse_addr",
    "parse_cidr",
    "resolve_ippool",
    "static_ip_problem",
    "validate_ippool_create",
    "validate_ippool_delete",
    "validate_ippool_update",
    "validate_vmnetcfg_create",
    "validate_vmnetcfg_update",
    "vmnetcfg_problems",
]

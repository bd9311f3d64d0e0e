"""Pure IPv4 address management: pools, allocations per MAC, restore from status."""

from vmdhcp.ipam.errors import (
    AddressInUse,
    DesignationError,
    InvalidPool,
    IpamError,
    PoolExhausted,
    ReleaseError,
    UnknownNetwork,
)
from vmdhcp.ipam.pool import (
    EXCLUDED,
    RESERVED,
    Conflict,
    ConflictReason,
    Pool,
    PoolSnapshot,
)
from vmdhcp.ipam.registry import Ipam

__all__ = [
    "EXCLUDED",
    "RESERVED",
    "AddressInUse",
    "Conflict",
    "ConflictReason",
    "DesignationError",
    "InvalidPool",
    "Ipam",
    "IpamError",
    "Pool",
    "PoolExhausted",
    "PoolSnapshot",
    "ReleaseError",
    "UnknownNetwork",
]

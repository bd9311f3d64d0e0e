"""IPAM errors.

Messages keep upstream's wording where upstream has one (operators grep for them); the
cases upstream lumps into "no more ip addresses left" get their own type and message.
"""

from ipaddress import IPv4Address

from vmdhcp.errors import VmdhcpError


class IpamError(VmdhcpError):
    """Base of every IPAM error."""


class InvalidPool(IpamError, ValueError):
    """A pool definition that cannot be served; `field` is the custom resource path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def describe(self) -> str:
        return f"{self.field}: {self.message}"


class UnknownNetwork(IpamError, LookupError):
    def __init__(self, network: str) -> None:
        super().__init__(f"network {network} does not exist")
        self.network = network


class PoolExhausted(IpamError):
    def __init__(self, network: str) -> None:
        super().__init__(f"no more ip addresses left in network {network} ipam")
        self.network = network


class DesignationError(IpamError, ValueError):
    """A designated (static) address that cannot be given out; the message says why."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class AddressInUse(DesignationError):
    """The designated address belongs to another MAC."""

    def __init__(self, address: IPv4Address, owner: str) -> None:
        super().__init__(str(address), f"designated ip {address} is already allocated")
        self.owner = owner


class ReleaseError(IpamError, LookupError):
    """Releasing an address that is not in the pool's range or not allocated."""

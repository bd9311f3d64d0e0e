"""Errors of the DHCP core, split by whose fault they are.

Remote errors (`MalformedPacket`, `MalformedOption`) mean a peer sent bytes we cannot use: the
transport drops the packet and counts it. Local errors (`InvalidPacket`, `InvalidOption`,
`InvalidConfig`) mean our own code or configuration asked for something the wire cannot carry:
they must surface, never be swallowed per packet.
"""

from vmdhcp.errors import VmdhcpError

__all__ = [
    "DhcpError",
    "InvalidConfig",
    "InvalidOption",
    "InvalidPacket",
    "MalformedOption",
    "MalformedPacket",
]


class DhcpError(VmdhcpError):
    """Base class of every error raised by `vmdhcp.dhcp`."""


class MalformedPacket(DhcpError, ValueError):
    """Remote: the bytes received are not a DHCPv4 message we can decode."""


class MalformedOption(MalformedPacket):
    """Remote: one option's value does not have the shape its RFC requires."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason if code is None else f"option {code}: {reason}")
        self.code = code
        """The option code, when the decoder was told which option it read."""


class InvalidOption(DhcpError, ValueError):
    """Local: a value cannot be encoded as the option asked for (a bug or bad configuration)."""


class InvalidPacket(DhcpError, ValueError):
    """Local: a `Packet` built in code cannot be serialised (field too long, reserved code, ...)."""


class InvalidConfig(DhcpError, ValueError):
    """Local: a `ServerConfig` or `Lease` holds a value the protocol cannot carry."""

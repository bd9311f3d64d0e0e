"""Where a reply goes (RFC 2131 section 4.1), as data the transport carries out.

The order is the RFC's (and coredhcp's `server/handle.go`):

1. `giaddr` set: to the relay agent, `Relay(giaddr)`, port 67 (perfdhcp talks this way);
2. a DHCPNAK otherwise always goes to 255.255.255.255 ("in all cases, when giaddr is zero, the
   server broadcasts any DHCPNAK messages"), even when `ciaddr` is set;
3. `ciaddr` set: `Unicast(ciaddr)`, port 68 (RENEWING clients, DHCPINFORM);
4. the broadcast flag set: `Broadcast`;
5. otherwise `L2Unicast(mac, yiaddr)`: to the client's hardware address and `yiaddr`, which the
   client does not own yet, so the transport must not go through ARP. With no `yiaddr` (a
   DHCPINFORM without `ciaddr`) the reply is broadcast.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import ClassVar, Final

from vmdhcp.dhcp.constants import BROADCAST_FLAG, CLIENT_PORT, SERVER_PORT, ZERO_ADDRESS

__all__ = [
    "BROADCAST",
    "Broadcast",
    "Destination",
    "L2Unicast",
    "Relay",
    "Unicast",
    "choose_destination",
]

_ZERO: Final = ZERO_ADDRESS
_ALL_ONES: Final = IPv4Address(0xFFFF_FFFF)


@dataclass(frozen=True, slots=True)
class Relay:
    """Unicast to the relay agent at `address` (the request's giaddr), server port 67."""

    address: IPv4Address
    port: ClassVar[int] = SERVER_PORT


@dataclass(frozen=True, slots=True)
class Unicast:
    """Unicast IP to a client that has an address (`ciaddr`), client port 68."""

    address: IPv4Address
    port: ClassVar[int] = CLIENT_PORT


@dataclass(frozen=True, slots=True)
class Broadcast:
    """To 255.255.255.255:68 (and ff:ff:ff:ff:ff:ff) on the interface the request came in on."""

    address: ClassVar[IPv4Address] = _ALL_ONES
    port: ClassVar[int] = CLIENT_PORT


@dataclass(frozen=True, slots=True)
class L2Unicast:
    """To `mac` at layer 2 with IP destination `address` (yiaddr), client port 68, without ARP."""

    mac: str
    address: IPv4Address
    port: ClassVar[int] = CLIENT_PORT


BROADCAST: Final = Broadcast()

Destination = Relay | Unicast | Broadcast | L2Unicast


def choose_destination(
    giaddr: IPv4Address,
    ciaddr: IPv4Address,
    flags: int,
    mac: str,
    yiaddr: IPv4Address,
    nak: bool = False,
) -> Destination:
    """Apply RFC 2131 section 4.1 to a request's fields and the reply's `yiaddr`."""
    # `x is not _ZERO and x != _ZERO`: parse() returns this very object for 0.0.0.0, and
    # IPv4Address.__ne__ is a Python-level call; the identity test skips it on the common path.
    if giaddr is not _ZERO and giaddr != _ZERO:
        return Relay(giaddr)
    if nak:
        return BROADCAST
    if ciaddr is not _ZERO and ciaddr != _ZERO:
        return Unicast(ciaddr)
    if flags & BROADCAST_FLAG or yiaddr is _ZERO or yiaddr == _ZERO:
        return BROADCAST
    return L2Unicast(mac, yiaddr)

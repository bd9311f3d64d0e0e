"""What goes into the responder besides the packet (`Ingress`), and what comes out of it:
a `Reply` to send, or a `Drop` with a bounded reason and, for RELEASE and DECLINE, an event.
"""

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from vmdhcp.dhcp.constants import MessageType, OptionCode
from vmdhcp.dhcp.destination import Destination
from vmdhcp.dhcp.packet import Packet

__all__ = [
    "Decision",
    "Declined",
    "Drop",
    "DropReason",
    "Event",
    "Ingress",
    "Released",
    "Reply",
]

_MESSAGE_TYPE = int(OptionCode.MESSAGE_TYPE)


@dataclass(frozen=True, slots=True)
class Ingress:
    """Where a request came from, as the transport saw it."""

    interface: str
    """Name of the receiving interface (`eth1`); replies leave through it."""
    source_ip: IPv4Address
    """IP source of the datagram: 0.0.0.0 for a client without an address, the relay for
    relayed traffic, the client's address when it renews by unicast."""
    source_port: int
    """UDP source port: 68 from clients, 67 from relay agents."""


class DropReason(StrEnum):
    """Why no reply is sent. A closed set: it is a metrics label."""

    MALFORMED = "malformed"
    """Unparsable bytes, or an option needed for the decision (50, 53, 54) has a bad length."""
    NOT_BOOTREQUEST = "not_bootrequest"
    """op is not BOOTREQUEST (another server's reply, or garbage)."""
    NOT_DHCP = "not_dhcp"
    """No option 53: plain BOOTP, which we do not serve."""
    UNSUPPORTED_TYPE = "unsupported_type"
    """A message type a server does not answer (OFFER, ACK, LEASEQUERY, unknown values...)."""
    UNSUPPORTED_HARDWARE = "unsupported_hardware"
    """htype/hlen other than Ethernet: leases are keyed by MAC."""
    UNKNOWN_MAC = "unknown_mac"
    """No lease for this MAC: RFC 2131 says a server without a record stays silent (a REQUEST
    naming this server gets a NAK instead, and an INFORM an ACK: see the responder)."""
    FOREIGN_SERVER = "foreign_server"
    """Option 54 names another server: the client chose (or releases to) someone else."""
    FOREIGN_SUBNET = "foreign_subnet"
    """Relayed from a giaddr outside the pool's subnet: the client sits on a subnet this
    server does not serve (RFC 2131 4.3.1 picks the client's subnet from giaddr); or from a
    giaddr that cannot be a relay of it (the subnet's network or broadcast address, or this
    server's own address)."""
    BAD_CIADDR = "bad_ciaddr"
    """A DHCPINFORM whose ciaddr is 0.0.0.0 or outside the pool's subnet: the client has an
    address of this subnet (RFC 2131 3.4) and the answer goes to it, so it is not one."""
    RELEASE = "release"
    """DHCPRELEASE: no reply by design; see `Drop.event`."""
    DECLINE = "decline"
    """DHCPDECLINE: no reply by design; the address is in use on the wire, see `Drop.event`."""


@dataclass(frozen=True, slots=True)
class Released:
    """A client with a lease gave its address back (DHCPRELEASE)."""

    mac: str
    address: IPv4Address
    """ciaddr of the RELEASE (the lease address if the client left it empty)."""


@dataclass(frozen=True, slots=True)
class Declined:
    """A client found its address already in use (DHCPDECLINE): an address conflict."""

    mac: str
    address: IPv4Address
    """The declined address (option 50; the lease address if the client sent none)."""


Event = Released | Declined


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `packet` (serialise it with `vmdhcp.dhcp.serialize`) to `destination`."""

    packet: Packet
    destination: Destination

    @property
    def message_type(self) -> MessageType:
        """OFFER, ACK or NAK (the packet's option 53), for metrics and logs."""
        return MessageType(self.packet.options[_MESSAGE_TYPE][0])


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing."""

    reason: DropReason
    event: Event | None = None
    """Set for RELEASE and DECLINE from a known client, for the agent to log and surface."""


Decision = Reply | Drop

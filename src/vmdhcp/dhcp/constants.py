"""Wire constants of BOOTP/DHCPv4 (RFC 951, RFC 2131, RFC 2132 and later option RFCs)."""

from enum import IntEnum
from ipaddress import IPv4Address
from typing import Final

__all__ = [
    "BOOTP_HEADER_SIZE",
    "BOOTP_MIN_SIZE",
    "BROADCAST_FLAG",
    "CLIENT_PORT",
    "DEFAULT_LEASE_TIME",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "INFINITE_LEASE_TIME",
    "IP_UDP_OVERHEAD",
    "MAGIC_COOKIE",
    "SERVER_PORT",
    "ZERO_ADDRESS",
    "MessageType",
    "OpCode",
    "OptionCode",
]

ZERO_ADDRESS: Final = IPv4Address(0)
"""0.0.0.0. `parse` returns this very object for every zero address field, so hot paths can test
`address is ZERO_ADDRESS` before the slower `==` (a Python-level call on IPv4Address)."""

SERVER_PORT: Final = 67
"""UDP port of DHCP servers and relay agents."""
CLIENT_PORT: Final = 68
"""UDP port of DHCP clients."""

MAGIC_COOKIE: Final = b"\x63\x82\x53\x63"
"""The four bytes after the BOOTP header that mark a DHCP options field (RFC 2131 section 3)."""
BOOTP_HEADER_SIZE: Final = 236
"""Fixed BOOTP header, op to file, without the magic cookie."""
BOOTP_MIN_SIZE: Final = 300
"""Replies are padded to this size: some relays and old clients drop shorter messages (RFC 1542)."""
BROADCAST_FLAG: Final = 0x8000
"""The B bit of `flags` (RFC 2131 section 2, figure 2)."""

DEFAULT_MAX_MESSAGE_SIZE: Final = 576
"""What every client must accept, and the floor for option 57 (RFC 2132 section 9.10)."""
IP_UDP_OVERHEAD: Final = 28
"""IPv4 (20) plus UDP (8) header bytes, counted in option 57's value (ISC dhcpd does the same)."""

DEFAULT_LEASE_TIME: Final = 31_536_000
"""One year: upstream's lease time when a pool sets none, kept for compatibility."""
INFINITE_LEASE_TIME: Final = 0xFFFF_FFFF
"""Option 51 value meaning "infinite" (RFC 2131 section 3.3)."""


class OpCode(IntEnum):
    """BOOTP `op` field."""

    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 section 9.6, RFC 3203, RFC 4388, RFC 6926, RFC 7724)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8
    FORCERENEW = 9
    LEASEQUERY = 10
    LEASEUNASSIGNED = 11
    LEASEUNKNOWN = 12
    LEASEACTIVE = 13
    BULKLEASEQUERY = 14
    LEASEQUERYDONE = 15
    ACTIVELEASEQUERY = 16
    LEASEQUERYSTATUS = 17
    TLS = 18


class OptionCode(IntEnum):
    """The option codes this package reads, writes or names in logs."""

    PAD = 0
    SUBNET_MASK = 1
    TIME_OFFSET = 2
    ROUTER = 3
    DOMAIN_NAME_SERVER = 6
    HOST_NAME = 12
    DOMAIN_NAME = 15
    INTERFACE_MTU = 26
    BROADCAST_ADDRESS = 28
    STATIC_ROUTE = 33
    NTP_SERVERS = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    OPTION_OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_IDENTIFIER = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS_IDENTIFIER = 60
    CLIENT_IDENTIFIER = 61
    RAPID_COMMIT = 80
    CLIENT_FQDN = 81
    RELAY_AGENT_INFORMATION = 82
    DOMAIN_SEARCH = 119
    CLASSLESS_STATIC_ROUTE = 121
    FORCERENEW_NONCE_CAPABLE = 145
    END = 255

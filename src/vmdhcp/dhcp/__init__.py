"""The DHCPv4 protocol core: pure and sans-I/O (no sockets, no asyncio, no clock, no Kubernetes).

Bytes and a lease table go in, a decision comes out::

    request = parse(datagram)                       # MalformedPacket on bad input, nothing else
    decision = respond(request, leases, config, ingress, now)
    if isinstance(decision, Reply):
        send(serialize(decision.packet), decision.destination)
    else:
        count(decision.reason); report(decision.event)

Import from here; the submodules are implementation detail.
"""

from vmdhcp.dhcp.classless_routes import (
    StaticRoute,
    decode_classless_routes,
    encode_classless_routes,
)
from vmdhcp.dhcp.constants import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    DEFAULT_LEASE_TIME,
    SERVER_PORT,
    ZERO_ADDRESS,
    MessageType,
    OpCode,
    OptionCode,
)
from vmdhcp.dhcp.decisions import (
    Decision,
    Declined,
    Drop,
    DropReason,
    Event,
    Ingress,
    Released,
    Reply,
)
from vmdhcp.dhcp.destination import (
    BROADCAST,
    Broadcast,
    Destination,
    L2Unicast,
    Relay,
    Unicast,
    choose_destination,
)
from vmdhcp.dhcp.domain_search import (
    decode_domain_search,
    encode_domain_name,
    encode_domain_search,
)
from vmdhcp.dhcp.errors import (
    DhcpError,
    InvalidConfig,
    InvalidOption,
    InvalidPacket,
    MalformedOption,
    MalformedPacket,
)
from vmdhcp.dhcp.leases import Lease, ServerConfig
from vmdhcp.dhcp.options import (
    ClientIdentifier,
    DuidClientId,
    HardwareClientId,
    OpaqueClientId,
    decode_client_identifier,
    decode_ip,
    decode_ips,
    decode_message_type,
    decode_option,
    decode_parameter_request_list,
    decode_relay_agent_information,
    decode_text,
    decode_u8,
    decode_u16,
    decode_u32,
    encode_client_identifier,
    encode_ip,
    encode_ips,
    encode_message_type,
    encode_parameter_request_list,
    encode_relay_agent_information,
    encode_text,
    encode_u8,
    encode_u16,
    encode_u32,
)
from vmdhcp.dhcp.packet import Packet, parse, serialize
from vmdhcp.dhcp.responder import respond

__all__ = [
    "BROADCAST",
    "BROADCAST_FLAG",
    "CLIENT_PORT",
    "DEFAULT_LEASE_TIME",
    "SERVER_PORT",
    "ZERO_ADDRESS",
    "Broadcast",
    "ClientIdentifier",
    "Decision",
    "Declined",
    "Destination",
    "DhcpError",
    "Drop",
    "DropReason",
    "DuidClientId",
    "Event",
    "HardwareClientId",
    "Ingress",
    "InvalidConfig",
    "InvalidOption",
    "InvalidPacket",
    "L2Unicast",
    "Lease",
    "MalformedOption",
    "MalformedPacket",
    "MessageType",
    "OpCode",
    "OpaqueClientId",
    "OptionCode",
    "Packet",
    "Relay",
    "Released",
    "Reply",
    "ServerConfig",
    "StaticRoute",
    "Unicast",
    "choose_destination",
    "decode_classless_routes",
    "decode_client_identifier",
    "decode_domain_search",
    "decode_ip",
    "decode_ips",
    "decode_message_type",
    "decode_option",
    "decode_parameter_request_list",
    "decode_relay_agent_information",
    "decode_text",
    "decode_u8",
    "decode_u16",
    "decode_u32",
    "encode_classless_routes",
    "encode_client_identifier",
    "encode_domain_name",
    "encode_domain_search",
    "encode_ip",
    "encode_ips",
    "encode_message_type",
    "encode_parameter_request_list",
    "encode_relay_agent_information",
    "encode_text",
    "encode_u8",
    "encode_u16",
    "encode_u32",
    "parse",
    "respond",
    "serialize",
]

"""scapy as an independent decoder and encoder: it reads our replies to the same fields, and
packets it builds parse to what it meant. scapy is a test-only dependency."""

import dataclasses
import warnings
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from tests.unit.dhcp.helpers import (
    FROM_CLIENT,
    LAB,
    LEASE_IP,
    LEASES,
    MAC,
    OTHER_IP,
    RELAY_IP,
    SERVER_IP,
    chaddr,
    request,
)
from vmdhcp.dhcp import (
    MessageType,
    Packet,
    Reply,
    StaticRoute,
    decode_classless_routes,
    decode_ips,
    decode_text,
    decode_u16,
    decode_u32,
    parse,
    respond,
    serialize,
)

with warnings.catch_warnings():
    # scapy may warn at import time about optional system pieces (no route, no libpcap).
    warnings.simplefilter("ignore")
    from scapy.layers.dhcp import BOOTP, DHCP

M = MessageType
CONFIG = dataclasses.replace(
    LAB,
    mtu=1450,
    classless_routes=(StaticRoute(IPv4Network("10.96.0.0/12"), IPv4Address("192.168.48.2")),),
)
ECHO = {61: b"\x01" + chaddr()[:6], 82: b"\x01\x06vlan10"}


def scapy_options(data: bytes) -> dict[Any, Any]:
    """scapy's decoding of the options of a serialised packet: {name: value(s)}."""
    out: dict[Any, Any] = {}
    for item in BOOTP(data)[DHCP].options:
        if isinstance(item, tuple):
            out[item[0]] = item[1] if len(item) == 2 else item[1:]
    return out


REPLIES = [
    ("offer", request(M.DISCOVER, extra=ECHO)),
    ("ack", request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP, extra=ECHO)),
    ("relayed ack", request(M.REQUEST, requested=LEASE_IP, giaddr=RELAY_IP, broadcast=True)),
    ("renewal ack", request(M.REQUEST, ciaddr=LEASE_IP)),
    ("nak", request(M.REQUEST, requested=OTHER_IP, extra=ECHO)),
    ("inform ack", request(M.INFORM, ciaddr=LEASE_IP)),
]


@pytest.mark.parametrize(("case", "packet"), REPLIES, ids=[r[0] for r in REPLIES])
def test_scapy_reads_our_replies_to_the_same_fields(case: str, packet: Packet) -> None:
    decision = respond(packet, LEASES, CONFIG, FROM_CLIENT, 0.0)
    assert isinstance(decision, Reply)
    ours = decision.packet
    wire = serialize(ours)
    theirs = BOOTP(wire)
    assert theirs.op == 2
    assert theirs.xid == ours.xid == packet.xid
    assert int(theirs.flags) == ours.flags
    assert (theirs.htype, theirs.hlen, theirs.hops) == (1, 6, 0)
    assert theirs.ciaddr == str(ours.ciaddr)
    assert theirs.yiaddr == str(ours.yiaddr)
    assert theirs.siaddr == str(ours.siaddr)
    assert theirs.giaddr == str(ours.giaddr)
    assert theirs.chaddr == ours.chaddr
    assert bytes(theirs) == wire  # scapy re-encodes it byte for byte

    options = scapy_options(wire)
    mine = ours.options
    assert options["message-type"] == mine[53][0]
    assert options["server_id"] == str(SERVER_IP)
    checks = {
        1: ("subnet_mask", lambda v: str(IPv4Address(v))),
        3: ("router", lambda v: str(IPv4Address(v))),
        6: ("name_server", lambda v: tuple(str(a) for a in decode_ips(v))),
        12: ("hostname", lambda v: v),
        15: ("domain", lambda v: v),
        26: ("interface-mtu", decode_u16),
        28: ("broadcast_address", lambda v: str(IPv4Address(v))),
        42: ("NTP_server", lambda v: str(IPv4Address(v))),
        51: ("lease_time", decode_u32),
        58: ("renewal_time", decode_u32),
        59: ("rebinding_time", decode_u32),
        56: ("error_message", lambda v: v),
        61: ("client_id", lambda v: v),
        82: ("relay_agent_information", lambda v: v),
        119: (119, lambda v: v),  # scapy keeps 119 raw
        121: (
            "classless_static_routes",
            lambda v: [f"{r.destination}:{r.router}" for r in decode_classless_routes(v)],
        ),
    }
    for code, (name, convert) in checks.items():
        if code in mine:
            assert options[name] == convert(mine[code]), (code, name)
    assert len(options) == len(mine)  # nothing more, nothing less


def test_scapy_built_request_parses_and_is_acknowledged() -> None:
    built = BOOTP(
        op=1, xid=0x01020304, flags=0x8000, chaddr=chaddr(MAC), giaddr=str(RELAY_IP)
    ) / DHCP(
        options=[
            ("message-type", "request"),
            ("server_id", str(SERVER_IP)),
            ("requested_addr", str(LEASE_IP)),
            ("hostname", b"guest"),
            ("param_req_list", [1, 3, 6, 15, 119, 121]),
            ("client_id", b"\xff\x00\x00\x00\x07\x00\x02\x00\x00\xab\x11"),
            ("max_dhcp_size", 1400),
            "end",
        ]
    )
    packet = parse(bytes(built))
    assert packet.op == 1
    assert packet.xid == 0x01020304
    assert packet.broadcast
    assert packet.mac == MAC
    assert packet.giaddr == RELAY_IP
    assert packet.message_type == M.REQUEST
    assert packet.server_identifier == SERVER_IP
    assert packet.requested_address == LEASE_IP
    assert packet.host_name == "guest"
    assert packet.parameter_request_list == (1, 3, 6, 15, 119, 121)
    assert packet.max_message_size == 1400
    client_id = packet.client_identifier
    assert getattr(client_id, "iaid", None) == 7
    decision = respond(packet, LEASES, CONFIG, FROM_CLIENT, 0.0)
    assert isinstance(decision, Reply)
    assert decision.message_type == M.ACK
    assert decode_text(decision.packet.options[15]) == "lab.example"
    assert 121 in decision.packet.options


def test_scapy_and_we_agree_on_a_packet_with_every_header_field_set() -> None:
    built = BOOTP(
        op=1,
        htype=1,
        hlen=6,
        hops=3,
        xid=0xFFFFFFFE,
        secs=65535,
        flags=0x8000,
        ciaddr="10.1.2.3",
        yiaddr="10.1.2.4",
        siaddr="10.1.2.5",
        giaddr="10.1.2.6",
        chaddr=bytes(range(16)),
        sname=b"sname",
        file=b"file",
    ) / DHCP(options=[("message-type", "inform"), "end"])
    packet = parse(bytes(built))
    assert (packet.hops, packet.xid, packet.secs, packet.flags) == (3, 0xFFFFFFFE, 65535, 0x8000)
    assert [str(a) for a in (packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr)] == [
        "10.1.2.3",
        "10.1.2.4",
        "10.1.2.5",
        "10.1.2.6",
    ]
    assert packet.chaddr == bytes(range(16))
    assert packet.sname.rstrip(b"\x00") == b"sname"
    assert packet.file.rstrip(b"\x00") == b"file"
    assert packet.message_type == M.INFORM
    # ... and scapy reads our serialisation of it back to the same packet.
    again = BOOTP(serialize(packet))
    assert (again.hops, again.xid, again.secs, again.ciaddr) == (3, 0xFFFFFFFE, 65535, "10.1.2.3")

"""respond(): every message path of RFC 2131 section 4.3, the reply fields and options."""

import dataclasses
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

import pytest

from tests.unit.dhcp.helpers import (
    FROM_CLIENT,
    FROM_RELAY,
    LAB,
    LEASE_IP,
    LEASES,
    MAC,
    NOW,
    OTHER_IP,
    OTHER_SERVER_IP,
    RELAY_IP,
    SERVER_IP,
    chaddr,
    ip,
    request,
)
from vmdhcp.dhcp import (
    BROADCAST,
    BROADCAST_FLAG,
    DEFAULT_LEASE_TIME,
    ZERO_ADDRESS,
    Declined,
    Destination,
    Drop,
    DropReason,
    Event,
    Ingress,
    L2Unicast,
    Lease,
    MessageType,
    Packet,
    Relay,
    Released,
    Reply,
    ServerConfig,
    StaticRoute,
    Unicast,
    decode_classless_routes,
    decode_domain_search,
    decode_u32,
    encode_classless_routes,
    parse,
    respond,
    serialize,
)
from vmdhcp.mac import normalize_mac

M = MessageType
R = DropReason
CIADDR = LEASE_IP  # a renewing client's own address


class Sends(NamedTuple):
    """Expected reply."""

    kind: MessageType
    destination: Destination
    yiaddr: IPv4Address = ZERO_ADDRESS
    ciaddr: IPv4Address = ZERO_ADDRESS


class Drops(NamedTuple):
    """Expected drop."""

    reason: DropReason
    event: Event | None = None


PATHS: list[tuple[str, Packet, Ingress, Sends | Drops]] = [
    # DISCOVER -> OFFER (RFC 2131 4.3.1)
    (
        "discover",
        request(M.DISCOVER),
        FROM_CLIENT,
        Sends(M.OFFER, L2Unicast(MAC, LEASE_IP), yiaddr=LEASE_IP),
    ),
    (
        "discover with broadcast flag",
        request(M.DISCOVER, broadcast=True),
        FROM_CLIENT,
        Sends(M.OFFER, BROADCAST, yiaddr=LEASE_IP),
    ),
    (
        "discover through a relay",
        request(M.DISCOVER, giaddr=RELAY_IP, broadcast=True),
        FROM_RELAY,
        Sends(M.OFFER, Relay(RELAY_IP), yiaddr=LEASE_IP),
    ),
    (
        "discover asking for another address gets its lease",
        request(M.DISCOVER, requested=OTHER_IP),
        FROM_CLIENT,
        Sends(M.OFFER, L2Unicast(MAC, LEASE_IP), yiaddr=LEASE_IP),
    ),
    (
        "discover with a stale ciaddr still gets ciaddr 0 in the offer",
        request(M.DISCOVER, ciaddr=OTHER_IP),
        FROM_CLIENT,
        Sends(M.OFFER, Unicast(OTHER_IP), yiaddr=LEASE_IP),
    ),
    # REQUEST, SELECTING (server identifier present)
    (
        "selecting our offer",
        request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Sends(M.ACK, L2Unicast(MAC, LEASE_IP), yiaddr=LEASE_IP),
    ),
    (
        "selecting our offer with broadcast flag",
        request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP, broadcast=True),
        FROM_CLIENT,
        Sends(M.ACK, BROADCAST, yiaddr=LEASE_IP),
    ),
    (
        "selecting our server but another address",
        request(M.REQUEST, server_id=SERVER_IP, requested=OTHER_IP),
        FROM_CLIENT,
        Sends(M.NAK, BROADCAST),
    ),
    (
        "selecting another server",
        request(M.REQUEST, server_id=OTHER_SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Drops(R.FOREIGN_SERVER),
    ),
    (
        "selecting another server for another address",
        request(M.REQUEST, server_id=OTHER_SERVER_IP, requested=OTHER_IP),
        FROM_CLIENT,
        Drops(R.FOREIGN_SERVER),
    ),
    (
        "selecting through a relay",
        request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP, giaddr=RELAY_IP),
        FROM_RELAY,
        Sends(M.ACK, Relay(RELAY_IP), yiaddr=LEASE_IP),
    ),
    (
        "selecting a wrong address through a relay",
        request(M.REQUEST, server_id=SERVER_IP, requested=OTHER_IP, giaddr=RELAY_IP),
        FROM_RELAY,
        Sends(M.NAK, Relay(RELAY_IP)),
    ),
    (
        "selecting without option 50",
        request(M.REQUEST, server_id=SERVER_IP),
        FROM_CLIENT,
        Sends(M.NAK, BROADCAST),
    ),
    # REQUEST, INIT-REBOOT (no server identifier, option 50, ciaddr 0)
    (
        "init-reboot with its lease",
        request(M.REQUEST, requested=LEASE_IP),
        FROM_CLIENT,
        Sends(M.ACK, L2Unicast(MAC, LEASE_IP), yiaddr=LEASE_IP),
    ),
    (
        "init-reboot with its lease, broadcast flag",
        request(M.REQUEST, requested=LEASE_IP, broadcast=True),
        FROM_CLIENT,
        Sends(M.ACK, BROADCAST, yiaddr=LEASE_IP),
    ),
    (
        "init-reboot with another address",
        request(M.REQUEST, requested=OTHER_IP),
        FROM_CLIENT,
        Sends(M.NAK, BROADCAST),
    ),
    # REQUEST, RENEWING (unicast) and REBINDING (broadcast): ciaddr set, no option 50
    (
        "renewing its lease",
        request(M.REQUEST, ciaddr=CIADDR),
        Ingress("eth1", CIADDR, 68),
        Sends(M.ACK, Unicast(CIADDR), yiaddr=LEASE_IP, ciaddr=CIADDR),
    ),
    (
        "rebinding its lease (broadcast flag still unicasts to ciaddr)",
        request(M.REQUEST, ciaddr=CIADDR, broadcast=True),
        FROM_CLIENT,
        Sends(M.ACK, Unicast(CIADDR), yiaddr=LEASE_IP, ciaddr=CIADDR),
    ),
    (
        "renewing an address that is not its lease: NAK is broadcast",
        request(M.REQUEST, ciaddr=OTHER_IP),
        Ingress("eth1", OTHER_IP, 68),
        Sends(M.NAK, BROADCAST),
    ),
    (
        "renewing with an agreeing option 50",
        request(M.REQUEST, ciaddr=CIADDR, requested=LEASE_IP),
        FROM_CLIENT,
        Sends(M.ACK, Unicast(CIADDR), yiaddr=LEASE_IP, ciaddr=CIADDR),
    ),
    (
        "renewing with a contradicting option 50",
        request(M.REQUEST, ciaddr=CIADDR, requested=OTHER_IP),
        FROM_CLIENT,
        Sends(M.NAK, BROADCAST),
    ),
    (
        "request naming no address at all",
        request(M.REQUEST),
        FROM_CLIENT,
        Sends(M.NAK, BROADCAST),
    ),
    # DECLINE and RELEASE: no reply, an event
    (
        "decline",
        request(M.DECLINE, server_id=SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Drops(R.DECLINE, Declined(MAC, LEASE_IP)),
    ),
    (
        "decline without option 50 is malformed (RFC 2131 table 5: 50 MUST be present)",
        request(M.DECLINE, server_id=SERVER_IP),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
    (
        "decline of another address names what was declined",
        request(M.DECLINE, requested=OTHER_IP),
        FROM_CLIENT,
        Drops(R.DECLINE, Declined(MAC, OTHER_IP)),
    ),
    (
        "decline sent to another server",
        request(M.DECLINE, server_id=OTHER_SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Drops(R.FOREIGN_SERVER),
    ),
    (
        "release",
        request(M.RELEASE, server_id=SERVER_IP, ciaddr=CIADDR),
        Ingress("eth1", CIADDR, 68),
        Drops(R.RELEASE, Released(MAC, CIADDR)),
    ),
    (
        "release without ciaddr names the lease",
        request(M.RELEASE, server_id=SERVER_IP),
        FROM_CLIENT,
        Drops(R.RELEASE, Released(MAC, LEASE_IP)),
    ),
    (
        "release sent to another server",
        request(M.RELEASE, server_id=OTHER_SERVER_IP, ciaddr=CIADDR),
        FROM_CLIENT,
        Drops(R.FOREIGN_SERVER),
    ),
    # INFORM: configuration only
    (
        "inform",
        request(M.INFORM, ciaddr=CIADDR),
        Ingress("eth1", CIADDR, 68),
        Sends(M.ACK, Unicast(CIADDR), ciaddr=CIADDR),
    ),
    (
        "inform through a relay",
        request(M.INFORM, ciaddr=CIADDR, giaddr=RELAY_IP),
        FROM_RELAY,
        Sends(M.ACK, Relay(RELAY_IP), ciaddr=CIADDR),
    ),
    (
        "inform without ciaddr is dropped (3.4: the client has an address; 0.0.0.0 is none)",
        request(M.INFORM),
        Ingress("eth1", ip("192.168.49.1"), 68),
        Drops(R.BAD_CIADDR),
    ),
    (
        "inform without any address is dropped",
        request(M.INFORM),
        FROM_CLIENT,
        Drops(R.BAD_CIADDR),
    ),
    (
        "inform from an address outside the subnet is dropped",
        request(M.INFORM, ciaddr=ip("10.1.2.3")),
        Ingress("eth1", ip("10.1.2.3"), 68),
        Drops(R.BAD_CIADDR),
    ),
    # Unknown MACs: silent, but for a REQUEST naming us (NAK) and an INFORM (ACK): those and
    # the other RFC 2131 edges are in test_rfc2131_edges.py
    *[
        (
            f"unknown mac, {kind.name.lower()}",
            request(kind, mac="02:00:00:00:00:99", server_id=SERVER_IP, requested=LEASE_IP),
            FROM_CLIENT,
            Drops(R.UNKNOWN_MAC),
        )
        for kind in (M.DISCOVER, M.DECLINE, M.RELEASE)
    ],
    (
        "unknown mac, renewing",
        request(M.REQUEST, mac="02:00:00:00:00:99", ciaddr=CIADDR),
        FROM_CLIENT,
        Drops(R.UNKNOWN_MAC),
    ),
    # A relay outside the pool's subnet: its clients are on a subnet we do not serve
    (
        "discover relayed from another subnet",
        request(M.DISCOVER, giaddr=ip("10.0.0.1")),
        Ingress("eth1", ip("10.0.0.1"), 67),
        Drops(R.FOREIGN_SUBNET),
    ),
    # What a server does not answer
    ("a reply (op 2)", request(M.DISCOVER, op=2), FROM_CLIENT, Drops(R.NOT_BOOTREQUEST)),
    ("op 0", request(M.DISCOVER, op=0), FROM_CLIENT, Drops(R.NOT_BOOTREQUEST)),
    ("plain BOOTP (no option 53)", request(None), FROM_CLIENT, Drops(R.NOT_DHCP)),
    (
        "option 53 of two bytes",
        request(None, extra={53: b"\x01\x01"}),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
    *[
        (
            f"{kind.name.lower()} sent to a server",
            request(kind),
            FROM_CLIENT,
            Drops(R.UNSUPPORTED_TYPE),
        )
        for kind in (M.OFFER, M.ACK, M.NAK, M.FORCERENEW, M.LEASEQUERY, M.TLS)
    ],
    ("message type 99", request(99), FROM_CLIENT, Drops(R.UNSUPPORTED_TYPE)),
    ("message type 0", request(0), FROM_CLIENT, Drops(R.UNSUPPORTED_TYPE)),
    (
        "token ring hardware type",
        request(M.DISCOVER, htype=6),
        FROM_CLIENT,
        Drops(R.UNSUPPORTED_HARDWARE),
    ),
    (
        "ethernet type with 8-byte hlen",
        request(M.DISCOVER, hlen=8),
        FROM_CLIENT,
        Drops(R.UNSUPPORTED_HARDWARE),
    ),
    # Options a decision needs, with bad lengths
    (
        "request with a 3-byte option 50",
        request(M.REQUEST, server_id=SERVER_IP, extra={50: b"\xc0\xa8\x31"}),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
    (
        "request with a 5-byte option 54",
        request(M.REQUEST, requested=LEASE_IP, extra={54: SERVER_IP.packed + b"\x00"}),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
    (
        "decline with a 2-byte option 50",
        request(M.DECLINE, extra={50: b"\x00\x01"}),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
    (
        "release with an empty option 54",
        request(M.RELEASE, extra={54: b""}),
        FROM_CLIENT,
        Drops(R.MALFORMED),
    ),
]


@pytest.mark.parametrize(
    ("case", "packet", "ingress", "expected"), PATHS, ids=[row[0] for row in PATHS]
)
def test_message_paths(
    case: str, packet: Packet, ingress: Ingress, expected: Sends | Drops
) -> None:
    decision = respond(packet, LEASES, LAB, ingress, NOW)
    match expected:
        case Sends(kind, destination, yiaddr, ciaddr):
            assert isinstance(decision, Reply), decision
            assert decision.message_type == kind
            assert decision.packet.message_type == kind
            assert decision.destination == destination
            assert decision.packet.yiaddr == yiaddr
            assert decision.packet.ciaddr == ciaddr
        case Drops(reason, event):
            assert decision == Drop(reason, event)


def test_the_path_table_covers_every_drop_reason() -> None:
    reasons = {row[3].reason for row in PATHS if isinstance(row[3], Drops)}
    assert reasons == set(DropReason)


# --- fields copied into replies (RFC 2131 table 3) ---------------------------------------------


def reply_to(
    packet: Packet,
    *,
    leases: Mapping[str, Lease] = LEASES,
    config: ServerConfig = LAB,
    ingress: Ingress = FROM_CLIENT,
) -> Reply:
    decision = respond(packet, leases, config, ingress, NOW)
    assert isinstance(decision, Reply), decision
    return decision


def test_reply_copies_xid_flags_giaddr_chaddr_and_hardware_fields() -> None:
    packet = request(M.DISCOVER, giaddr=RELAY_IP, broadcast=True, xid=0xCAFEF00D)
    packet = packet._replace(hops=2, secs=9, chaddr=chaddr(MAC)[:6] + b"\xaa" * 10)
    reply = reply_to(packet).packet
    assert reply.op == 2
    assert reply.xid == 0xCAFEF00D
    assert reply.flags == BROADCAST_FLAG
    assert reply.giaddr == RELAY_IP
    assert reply.chaddr == packet.chaddr  # all 16 bytes, as received
    assert (reply.htype, reply.hlen) == (1, 6)
    assert (reply.hops, reply.secs) == (0, 0)
    assert reply.siaddr == ZERO_ADDRESS  # we are nobody's boot server
    assert reply.sname == bytes(64)
    assert reply.file == bytes(128)


def test_next_server_sets_siaddr() -> None:
    config = dataclasses.replace(LAB, next_server=ip("192.168.48.10"))
    assert reply_to(request(M.DISCOVER), config=config).packet.siaddr == ip("192.168.48.10")


def test_nak_fields_and_options() -> None:
    packet = request(
        M.REQUEST,
        ciaddr=OTHER_IP,
        extra={61: b"\x01" + chaddr()[:6], 82: b"\x01\x03abc", 55: bytes(range(1, 100))},
    )
    reply = reply_to(packet)
    nak = reply.packet
    assert reply.message_type == M.NAK
    assert (nak.ciaddr, nak.yiaddr, nak.siaddr) == (ZERO_ADDRESS,) * 3
    assert set(nak.options) == {53, 54, 56, 61, 82}
    assert nak.options[54] == SERVER_IP.packed
    assert nak.options[61] == packet.options[61]
    assert nak.options[82] == packet.options[82]
    assert nak.flags == 0  # not relayed: broadcast anyway, flags as the client sent them


def test_nak_through_a_relay_sets_the_broadcast_bit() -> None:
    reply = reply_to(
        request(M.REQUEST, server_id=SERVER_IP, requested=OTHER_IP, giaddr=RELAY_IP),
        ingress=FROM_RELAY,
    )
    assert reply.message_type == M.NAK
    assert reply.packet.flags & BROADCAST_FLAG
    assert reply.destination == Relay(RELAY_IP)


# --- options in OFFER and ACK -------------------------------------------------------------------

LAB_OPTIONS = {
    53: b"\x02",
    54: SERVER_IP.packed,
    51: (300).to_bytes(4, "big"),
    58: (150).to_bytes(4, "big"),
    59: (262).to_bytes(4, "big"),
    1: b"\xff\xff\xf8\x00",
    3: ip("192.168.48.1").packed,
    6: ip("192.168.48.53").packed + ip("192.168.48.54").packed,
    15: b"lab.example",
    12: b"vm1",
    28: ip("192.168.55.255").packed,
    119: b"\x03lab\x07example\x00\x03svc\xc0\x00",
    42: ip("192.168.48.123").packed,
}


def test_offer_without_parameter_request_list_carries_every_configured_option() -> None:
    assert dict(reply_to(request(M.DISCOVER)).packet.options) == LAB_OPTIONS


def test_ack_carries_the_same_options_with_its_own_type() -> None:
    reply = reply_to(request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP))
    assert dict(reply.packet.options) == LAB_OPTIONS | {53: b"\x05"}


def test_parameter_request_list_filters_optional_options_only() -> None:
    options = reply_to(request(M.DISCOVER, prl=bytes([1]))).packet.options
    assert set(options) == {53, 54, 51, 58, 59, 1, 3, 6, 15}
    options = reply_to(request(M.DISCOVER, prl=bytes([42, 12]))).packet.options
    assert set(options) == {53, 54, 51, 58, 59, 1, 3, 6, 15, 42, 12}
    options = reply_to(request(M.DISCOVER, prl=b"")).packet.options
    assert set(options) == {53, 54, 51, 58, 59, 1, 3, 6, 15}


def test_no_router_means_no_option_3_even_when_requested() -> None:
    config = dataclasses.replace(LAB, router=None)
    options = reply_to(request(M.DISCOVER, prl=bytes([1, 3, 6])), config=config).packet.options
    assert 3 not in options
    assert 1 in options


def test_unconfigured_options_are_absent_even_when_requested() -> None:
    bare = ServerConfig(server_ip=SERVER_IP, subnet=IPv4Network("192.168.48.0/21"))
    options = reply_to(
        request(M.DISCOVER, prl=bytes(range(1, 130))),
        config=bare,
        leases={MAC: Lease(LEASE_IP)},
    ).packet.options
    assert set(options) == {53, 54, 51, 58, 59, 1, 28}


def test_default_lease_time_is_one_year_with_t1_and_t2() -> None:
    config = dataclasses.replace(LAB, lease_time=None)
    options = reply_to(request(M.DISCOVER), config=config).packet.options
    assert decode_u32(options[51]) == DEFAULT_LEASE_TIME == 31_536_000
    assert decode_u32(options[58]) == 15_768_000  # 0.5
    assert decode_u32(options[59]) == 27_594_000  # 0.875


def test_infinite_lease_has_no_t1_t2() -> None:
    config = dataclasses.replace(LAB, lease_time=0xFFFFFFFF)
    options = reply_to(request(M.DISCOVER), config=config).packet.options
    assert options[51] == b"\xff\xff\xff\xff"
    assert 58 not in options
    assert 59 not in options


def test_host_name_only_when_the_lease_has_one() -> None:
    leases = {MAC: Lease(LEASE_IP)}
    assert 12 not in reply_to(request(M.DISCOVER), leases=leases).packet.options
    leases = {MAC: Lease(LEASE_IP, hostname="web-01")}
    assert reply_to(request(M.DISCOVER), leases=leases).packet.options[12] == b"web-01"


def test_mtu_and_explicit_broadcast_address() -> None:
    config = dataclasses.replace(LAB, mtu=9000, broadcast_address=ip("192.168.48.255"))
    options = reply_to(request(M.DISCOVER, prl=bytes([26, 28])), config=config).packet.options
    assert options[26] == (9000).to_bytes(2, "big")
    assert options[28] == ip("192.168.48.255").packed


def test_no_derived_broadcast_address_on_point_to_point_subnets() -> None:
    config = ServerConfig(server_ip=ip("10.0.0.0"), subnet=IPv4Network("10.0.0.0/31"))
    leases = {MAC: Lease(ip("10.0.0.1"))}
    assert 28 not in reply_to(request(M.DISCOVER), config=config, leases=leases).packet.options


def test_classless_routes_get_the_default_route_appended() -> None:
    routes = (StaticRoute(IPv4Network("10.96.0.0/12"), ip("192.168.48.2")),)
    config = dataclasses.replace(LAB, classless_routes=routes)
    options = reply_to(request(M.DISCOVER, prl=bytes([121, 3])), config=config).packet.options
    assert decode_classless_routes(options[121]) == (
        routes[0],
        StaticRoute(IPv4Network("0.0.0.0/0"), ip("192.168.48.1")),
    )
    assert options[3] == ip("192.168.48.1").packed


def test_classless_routes_keep_a_configured_default_route() -> None:
    routes = (StaticRoute(IPv4Network("0.0.0.0/0"), ip("192.168.48.3")),)
    config = dataclasses.replace(LAB, classless_routes=routes)
    options = reply_to(request(M.DISCOVER, prl=bytes([121])), config=config).packet.options
    assert options[121] == encode_classless_routes(routes)


def test_classless_routes_without_router_are_sent_as_configured() -> None:
    routes = (StaticRoute(IPv4Network("10.96.0.0/12"), ip("192.168.48.2")),)
    config = dataclasses.replace(LAB, router=None, classless_routes=routes)
    options = reply_to(request(M.DISCOVER, prl=bytes([121])), config=config).packet.options
    assert decode_classless_routes(options[121]) == routes


def wire_codes(wire: bytes) -> list[int]:
    """Option codes in wire order (no pad inside our replies)."""
    codes = []
    pos = 240
    while wire[pos] != 255:
        codes.append(wire[pos])
        pos += 2 + wire[pos + 1]
    return codes


def test_option_order_on_the_wire_is_fixed() -> None:
    packet = request(M.DISCOVER, extra={82: b"\x01\x02id", 61: b"\x01" + chaddr()[:6]})
    wire = serialize(reply_to(packet).packet)
    assert wire_codes(wire) == [53, 1, 3, 6, 12, 15, 28, 42, 51, 54, 58, 59, 61, 119, 82]


# --- echoes and size limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        request(M.DISCOVER),
        request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP),
        request(M.REQUEST, requested=OTHER_IP),
        request(M.INFORM, ciaddr=CIADDR),
    ],
    ids=["offer", "ack", "nak", "inform ack"],
)
def test_client_identifier_and_relay_information_are_echoed(packet: Packet) -> None:
    client_id = b"\xff\x00\x00\x00\x01\x00\x04" + bytes(16)  # an RFC 4361 DUID
    relay_info = b"\x01\x06vlan10\x02\x04swp1"
    extra = {61: client_id, 82: relay_info}
    reply = reply_to(packet._replace(options={**packet.options, **extra}))
    assert reply.packet.options[61] == client_id
    assert reply.packet.options[82] == relay_info
    assert wire_codes(serialize(reply.packet))[-1] == 82  # RFC 3046: last before End


def test_replies_without_61_and_82_do_not_invent_them() -> None:
    options = reply_to(request(M.DISCOVER)).packet.options
    assert 61 not in options
    assert 82 not in options


# No shared suffixes, so compression cannot shrink it: 12 names of 41 bytes.
LONG_SEARCH = tuple(f"zone{i:02d}.tenant{i:02d}.example{i:02d}.internal{i:02d}" for i in range(12))
BIG = dataclasses.replace(LAB, domain_search=LONG_SEARCH, mtu=1500)


def test_big_reply_fits_the_default_576_byte_limit_by_leaving_out_low_priority_options() -> None:
    reply = reply_to(request(M.DISCOVER), config=BIG)
    options = reply.packet.options
    assert len(BIG.encoded[119]) > 300  # would not fit with everything else
    assert 119 not in options  # left out ...
    assert 42 in options  # ... but a lower-priority option that still fits is kept
    assert {26, 12, 28} <= set(options)
    assert len(serialize(reply.packet)) <= 576 - 28


@pytest.mark.parametrize(("mms", "fits"), [(576, False), (300, False), (1500, True), (65535, True)])
def test_maximum_message_size_option_57(mms: int, fits: bool) -> None:
    packet = request(M.DISCOVER, extra={57: mms.to_bytes(2, "big")})
    reply = reply_to(packet, config=BIG)
    assert (119 in reply.packet.options) is fits
    assert len(serialize(reply.packet)) <= max(mms, 576) - 28
    if fits:
        assert decode_domain_search(reply.packet.options[119]) == LONG_SEARCH


def test_a_malformed_option_57_is_ignored() -> None:
    reply = reply_to(request(M.DISCOVER, extra={57: b"\x05"}), config=BIG)
    assert 119 not in reply.packet.options
    assert 42 in reply.packet.options


def test_always_sent_options_are_never_left_out() -> None:
    huge_dns = tuple(IPv4Address(0x0A000000 + i) for i in range(100))  # 400 bytes
    config = dataclasses.replace(LAB, dns_servers=huge_dns)
    options = reply_to(request(M.DISCOVER, extra={57: b"\x02\x40"}), config=config).packet.options
    assert len(options[6]) == 400
    assert {53, 54, 51, 1, 3, 15} <= set(options)
    assert 119 not in options


# --- INFORM specifics ---------------------------------------------------------------------------


def test_inform_ack_has_configuration_but_no_address_or_lease_time() -> None:
    reply = reply_to(request(M.INFORM, ciaddr=CIADDR), ingress=Ingress("eth1", CIADDR, 68))
    options = reply.packet.options
    assert reply.packet.yiaddr == ZERO_ADDRESS
    assert not {51, 58, 59} & set(options)
    assert {53, 54, 1, 3, 6, 15} <= set(options)
    assert options[53] == b"\x05"


# --- the lease table and the pool configuration -------------------------------------------------


def test_lookup_uses_the_normalised_mac() -> None:
    typed_by_a_user = "02-00-00-00-00-AB"
    leases = {normalize_mac(typed_by_a_user): Lease(LEASE_IP)}
    reply = reply_to(request(M.DISCOVER, mac="02:00:00:00:00:ab"), leases=leases)
    assert reply.packet.yiaddr == LEASE_IP
    # A table keyed by the raw text finds nothing: normalising is the caller's job.
    raw_keys = {typed_by_a_user: Lease(LEASE_IP)}
    decision = respond(request(M.DISCOVER, mac="02:00:00:00:00:ab"), raw_keys, LAB, FROM_CLIENT, 0)
    assert decision == Drop(DropReason.UNKNOWN_MAC)


def test_a_pool_change_applies_to_every_lease_at_once() -> None:
    leases = {
        normalize_mac(f"02:00:00:00:01:{i:02x}"): Lease(IPv4Address(0xC0A83100 + i))
        for i in range(1, 50)
    }
    changed = dataclasses.replace(LAB, dns_servers=(ip("1.1.1.1"),), lease_time=600)
    for mac in leases:
        options = reply_to(
            request(M.DISCOVER, mac=mac), leases=leases, config=changed
        ).packet.options
        assert options[6] == ip("1.1.1.1").packed
        assert decode_u32(options[51]) == 600


def test_respond_is_deterministic_and_ignores_now() -> None:
    packet = parse(serialize(request(M.DISCOVER, prl=bytes([1, 3, 6, 119]))))
    first = respond(packet, LEASES, LAB, FROM_CLIENT, 0.0)
    second = respond(packet, LEASES, LAB, FROM_CLIENT, 1e12)
    assert first == second
    assert isinstance(first, Reply)
    assert isinstance(second, Reply)
    assert serialize(first.packet) == serialize(second.packet)


def test_the_lease_table_can_be_any_mapping() -> None:
    class Table(Mapping[str, Lease]):
        def __init__(self) -> None:
            self.looked_up: list[str] = []

        def __getitem__(self, key: str) -> Lease:
            self.looked_up.append(key)
            return LEASES[key]

        def __iter__(self) -> Iterator[str]:
            return iter(LEASES)

        def __len__(self) -> int:
            return len(LEASES)

    table = Table()
    assert isinstance(respond(request(M.DISCOVER), table, LAB, FROM_CLIENT, NOW), Reply)
    assert table.looked_up == [MAC]

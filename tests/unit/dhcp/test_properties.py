"""Property-based tests of the codecs and the responder (hypothesis, default budgets)."""

import contextlib
import dataclasses
import random
import string
from ipaddress import IPv4Address, IPv4Network

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.unit.dhcp.helpers import FROM_CLIENT, LAB, LEASE_IP, MAC, SERVER_IP, request
from tests.unit.dhcp.strategies import option_values, packets, u8, u32
from vmdhcp.dhcp import (
    Drop,
    Lease,
    MalformedOption,
    MalformedPacket,
    MessageType,
    Packet,
    Reply,
    StaticRoute,
    decode_classless_routes,
    decode_client_identifier,
    decode_domain_search,
    decode_relay_agent_information,
    decode_text,
    encode_classless_routes,
    encode_client_identifier,
    encode_domain_search,
    encode_relay_agent_information,
    encode_text,
    parse,
    respond,
    serialize,
)
from vmdhcp.dhcp.constants import MAGIC_COOKIE
from vmdhcp.mac import mac_from_bytes

# --- packets ------------------------------------------------------------------------------------


@given(packets)
def test_serialize_then_parse_gives_the_packet_back(packet: Packet) -> None:
    wire = serialize(packet)
    assert parse(wire) == packet
    assert len(wire) >= 300
    assert wire[236:240] == MAGIC_COOKIE


@given(packets, st.randoms(use_true_random=False))
def test_serialize_does_not_depend_on_dict_order(packet: Packet, rnd: random.Random) -> None:
    items = list(packet.options.items())
    rnd.shuffle(items)
    assert serialize(packet._replace(options=dict(items))) == serialize(packet)


@given(st.binary(max_size=1500))
def test_parse_of_arbitrary_bytes_raises_only_malformed_packet(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        parse(data)


@given(st.binary(min_size=6, max_size=6))
def test_the_responders_mac_text_is_mac_from_bytes(raw: bytes) -> None:
    assert raw.hex(":") == mac_from_bytes(raw)


# --- option codecs ------------------------------------------------------------------------------

labels = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
domain_names = st.lists(labels, min_size=1, max_size=5).map(".".join)


@given(st.lists(domain_names, min_size=1, max_size=10), st.booleans())
def test_domain_search_round_trip(names: list[str], compress: bool) -> None:
    wire = encode_domain_search(names, compress=compress)
    assert decode_domain_search(wire) == tuple(names)
    assert len(wire) <= len(encode_domain_search(names, compress=False))


@given(st.binary(max_size=300))
def test_domain_search_decoding_of_arbitrary_bytes_ends_and_raises_only_malformed_option(
    data: bytes,
) -> None:
    try:
        names = decode_domain_search(data)
    except MalformedOption:
        return
    assert all(len(name) <= 255 for name in names)


routes = st.builds(
    lambda address, width, router: StaticRoute(
        IPv4Network((IPv4Address(address), width), strict=False), IPv4Address(router)
    ),
    u32,
    st.integers(0, 32),
    u32,
)


@given(st.lists(routes, min_size=1, max_size=10))
def test_classless_routes_round_trip(values: list[StaticRoute]) -> None:
    assert decode_classless_routes(encode_classless_routes(values)) == tuple(values)


@given(st.binary(max_size=100))
def test_classless_route_decoding_raises_only_malformed_option(data: bytes) -> None:
    with contextlib.suppress(MalformedOption):
        decode_classless_routes(data)


@given(st.binary(min_size=1, max_size=64))
def test_any_client_identifier_decodes_and_encodes_back(data: bytes) -> None:
    assert encode_client_identifier(decode_client_identifier(data)) == data


@given(st.lists(st.tuples(u8, st.binary(max_size=30)), max_size=6))
def test_relay_agent_information_round_trip(suboptions: list[tuple[int, bytes]]) -> None:
    wire = encode_relay_agent_information(suboptions)
    assert decode_relay_agent_information(wire) == tuple(suboptions)


@given(st.binary(max_size=100))
def test_relay_agent_information_decoding_raises_only_malformed_option(data: bytes) -> None:
    with contextlib.suppress(MalformedOption):
        decode_relay_agent_information(data)


@given(st.binary(min_size=1, max_size=100))
def test_any_text_bytes_survive_decode_then_encode(data: bytes) -> None:
    assume(data.rstrip(b"\x00"))
    assert encode_text(decode_text(data)) == data.rstrip(b"\x00")


# --- the responder ------------------------------------------------------------------------------

LEASE = Lease(LEASE_IP, hostname="vm-with-a-rather-long-host-name")
BIG = dataclasses.replace(
    LAB,
    domain_search=tuple(f"z{i:02d}.t{i:02d}.example{i:02d}.internal{i:02d}" for i in range(12)),
    mtu=9000,
)


@given(
    st.sampled_from([MessageType.DISCOVER, MessageType.REQUEST, MessageType.INFORM]),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.dictionaries(st.sampled_from([12, 60, 61, 77, 82, 145]), option_values, max_size=4),
)
def test_replies_always_fit_the_clients_size_limit_and_say_who_we_are(
    kind: MessageType, mms: int | None, prl: bytes | None, extra: dict[int, bytes]
) -> None:
    if mms is not None:
        extra[57] = mms.to_bytes(2, "big")
    ciaddr = LEASE_IP if kind == MessageType.INFORM else None  # an INFORM has an address
    packet = request(
        kind, requested=LEASE_IP, server_id=SERVER_IP, prl=prl, extra=extra, ciaddr=ciaddr
    )
    decision = respond(packet, {MAC: LEASE}, BIG, FROM_CLIENT, 0.0)
    assert isinstance(decision, Reply)
    reply = decision.packet
    wire = serialize(reply)
    echoed = sum(len(v) + 2 * max(1, -(-len(v) // 255)) for c, v in extra.items() if c in (61, 82))
    if echoed <= 100:  # what must be sent can always be sent; the rest must fit
        assert len(wire) <= max(mms or 0, 576) - 28
    assert reply.options[54] == SERVER_IP.packed
    assert reply.xid == packet.xid
    assert reply.chaddr == packet.chaddr
    for code in (61, 82):
        assert reply.options.get(code) == extra.get(code)


@given(st.dictionaries(st.integers(1, 254), option_values, max_size=10), u8, u8)
def test_respond_never_raises_on_any_options(
    options: dict[int, bytes], htype: int, hlen: int
) -> None:
    packet = request(None, htype=htype, hlen=hlen, extra=options)
    for leases in ({}, {MAC: LEASE}):
        decision = respond(packet, leases, BIG, FROM_CLIENT, 0.0)
        assert isinstance(decision, Reply | Drop)
        if isinstance(decision, Reply):
            serialize(decision.packet)

"""Option value codecs: round trips, RFC vectors, malformed input."""

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import pytest

from vmdhcp.dhcp import (
    DuidClientId,
    HardwareClientId,
    InvalidOption,
    MalformedOption,
    MalformedPacket,
    OpaqueClientId,
    OptionCode,
    StaticRoute,
    decode_classless_routes,
    decode_client_identifier,
    decode_domain_search,
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
    encode_classless_routes,
    encode_client_identifier,
    encode_domain_name,
    encode_domain_search,
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
from vmdhcp.dhcp.options import encoded_size


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def route(destination: str, router: str) -> StaticRoute:
    return StaticRoute(IPv4Network(destination), ip(router))


# --- scalar codecs: value <-> exact bytes, both directions ------------------------------------

ROUND_TRIPS: list[tuple[str, Callable[..., bytes], Callable[[bytes], object], object, bytes]] = [
    ("ip", encode_ip, decode_ip, ip("255.255.248.0"), b"\xff\xff\xf8\x00"),
    ("ips one", encode_ips, decode_ips, (ip("10.0.0.1"),), b"\x0a\x00\x00\x01"),
    (
        "ips two",
        encode_ips,
        decode_ips,
        (ip("192.168.48.53"), ip("192.168.48.54")),
        b"\xc0\xa8\x30\x35\xc0\xa8\x30\x36",
    ),
    ("u8", encode_u8, decode_u8, 3, b"\x03"),
    ("u16 mtu", encode_u16, decode_u16, 1500, b"\x05\xdc"),
    ("u32 one year", encode_u32, decode_u32, 31_536_000, b"\x01\xe1\x33\x80"),
    ("u32 infinite", encode_u32, decode_u32, 0xFFFFFFFF, b"\xff\xff\xff\xff"),
    ("message type", encode_message_type, decode_message_type, 5, b"\x05"),
    ("text", encode_text, decode_text, "lab.example", b"lab.example"),
    ("utf-8 text", encode_text, decode_text, "vm-é", b"vm-\xc3\xa9"),
    (
        "prl",
        encode_parameter_request_list,
        decode_parameter_request_list,
        (1, 3, 121),
        b"\x01\x03y",
    ),
]


@pytest.mark.parametrize(
    ("case", "encode", "decode", "value", "wire"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS]
)
def test_scalar_codecs_round_trip(
    case: str,
    encode: Callable[..., bytes],
    decode: Callable[[bytes], object],
    value: object,
    wire: bytes,
) -> None:
    assert encode(value) == wire
    assert decode(wire) == value


MALFORMED_SCALARS: list[tuple[str, Callable[[bytes], object], bytes]] = [
    ("ip short", decode_ip, b"\x01\x02\x03"),
    ("ip long", decode_ip, b"\x01\x02\x03\x04\x05"),
    ("ips empty", decode_ips, b""),
    ("ips ragged", decode_ips, b"\x01\x02\x03\x04\x05"),
    ("u8 empty", decode_u8, b""),
    ("u16 short", decode_u16, b"\x05"),
    ("u32 long", decode_u32, b"\x00\x00\x00\x00\x00"),
    ("message type empty", decode_message_type, b""),
    ("message type long", decode_message_type, b"\x01\x01"),
    ("client id empty", decode_client_identifier, b""),
    ("relay info truncated", decode_relay_agent_information, b"\x01\x05abc"),
    ("relay info no length", decode_relay_agent_information, b"\x01"),
]


@pytest.mark.parametrize(
    ("case", "decode", "wire"), MALFORMED_SCALARS, ids=[r[0] for r in MALFORMED_SCALARS]
)
def test_decoders_reject_bad_lengths_with_malformed_option(
    case: str, decode: Callable[[bytes], object], wire: bytes
) -> None:
    with pytest.raises(MalformedOption) as info:
        decode(wire)
    assert isinstance(info.value, MalformedPacket)


def test_malformed_option_names_its_code_when_known() -> None:
    with pytest.raises(MalformedOption, match="option 50") as info:
        decode_ip(b"\x01", code=OptionCode.REQUESTED_ADDRESS)
    assert info.value.code == 50


INVALID_VALUES: list[tuple[str, Callable[[], object]]] = [
    ("empty address list", lambda: encode_ips(())),
    ("u8 overflow", lambda: encode_u8(256)),
    ("u16 negative", lambda: encode_u16(-1)),
    ("u32 overflow", lambda: encode_u32(1 << 32)),
    ("empty text", lambda: encode_text("")),
    ("lone surrogate text", lambda: encode_text("\ud800")),
    ("prl code out of range", lambda: encode_parameter_request_list([1, 300])),
    ("empty route list", lambda: encode_classless_routes(())),
    ("empty search list", lambda: encode_domain_search(())),
    ("relay sub-option too long", lambda: encode_relay_agent_information([(1, bytes(256))])),
]


@pytest.mark.parametrize(("case", "call"), INVALID_VALUES, ids=[r[0] for r in INVALID_VALUES])
def test_encoders_reject_unencodable_values_with_invalid_option(
    case: str, call: Callable[[], object]
) -> None:
    with pytest.raises(InvalidOption):
        call()


def test_decode_text_never_fails_and_round_trips_any_bytes() -> None:
    raw = b"host\xff\xfe-\xc3"
    text = decode_text(raw)
    assert encode_text(text) == raw
    assert decode_text(b"windows-host\x00") == "windows-host"


@pytest.mark.parametrize(("length", "size"), [(0, 2), (1, 3), (255, 257), (256, 260), (510, 514)])
def test_encoded_size_counts_rfc3396_split_headers(length: int, size: int) -> None:
    assert encoded_size(bytes(length)) == size


# --- client identifier (61), any form ---------------------------------------------------------

CLIENT_IDS = [
    (
        "ethernet",
        b"\x01\x02\x00\x00\x00\x00\x02",
        HardwareClientId(1, b"\x02\x00\x00\x00\x00\x02"),
    ),
    ("infiniband hardware", b"\x20" + bytes(20), HardwareClientId(32, bytes(20))),
    (
        "rfc4361 duid (systemd-networkd)",
        b"\xff\x12\x34\x56\x78\x00\x04" + bytes(range(16)),
        DuidClientId(0x12345678, b"\x00\x04" + bytes(range(16))),
    ),
    ("type 0 name", b"\x00my-client", OpaqueClientId(0, b"my-client")),
    ("truncated duid", b"\xff\x01\x02", OpaqueClientId(255, b"\x01\x02")),
    ("single byte", b"\x01", OpaqueClientId(1, b"")),
]


@pytest.mark.parametrize(("case", "wire", "value"), CLIENT_IDS, ids=[r[0] for r in CLIENT_IDS])
def test_client_identifier_forms(case: str, wire: bytes, value: object) -> None:
    decoded = decode_client_identifier(wire)
    assert decoded == value
    assert encode_client_identifier(decoded) == wire


def test_hardware_client_id_gives_a_mac_only_for_ethernet() -> None:
    assert HardwareClientId(1, bytes.fromhex("0200000000aa")).mac == "02:00:00:00:00:aa"
    assert HardwareClientId(1, bytes(8)).mac is None
    assert HardwareClientId(6, bytes(6)).mac is None


def test_relay_agent_information_round_trip() -> None:
    suboptions = ((1, b"eth0:vlan10"), (2, b"\x02\x00\x00\x00\x00\x01"), (5, b""))
    wire = encode_relay_agent_information(suboptions)
    assert wire == b"\x01\x0beth0:vlan10\x02\x06\x02\x00\x00\x00\x00\x01\x05\x00"
    assert decode_relay_agent_information(wire) == suboptions


# --- option 121, RFC 3442 ---------------------------------------------------------------------

# The destination descriptors of RFC 3442 section 2 (each followed here by router 10.0.0.1).
RFC3442_DESCRIPTORS = [
    ("0.0.0.0/0", b"\x00"),
    ("10.0.0.0/8", b"\x08\x0a"),
    ("10.0.0.0/24", b"\x18\x0a\x00\x00"),
    ("10.17.0.0/16", b"\x10\x0a\x11"),
    ("10.27.129.0/24", b"\x18\x0a\x1b\x81"),
    ("10.229.0.128/25", b"\x19\x0a\xe5\x00\x80"),
    ("10.198.122.47/32", b"\x20\x0a\xc6\x7a\x2f"),
]
ROUTER = b"\x0a\x00\x00\x01"


@pytest.mark.parametrize(("destination", "descriptor"), RFC3442_DESCRIPTORS)
def test_classless_route_descriptors_of_rfc3442(destination: str, descriptor: bytes) -> None:
    routes = (route(destination, "10.0.0.1"),)
    assert encode_classless_routes(routes) == descriptor + ROUTER
    assert decode_classless_routes(descriptor + ROUTER) == routes


def test_classless_routes_several_in_order() -> None:
    routes = tuple(route(destination, "10.0.0.1") for destination, _ in RFC3442_DESCRIPTORS)
    wire = b"".join(descriptor + ROUTER for _, descriptor in RFC3442_DESCRIPTORS)
    assert encode_classless_routes(routes) == wire
    assert decode_classless_routes(wire) == routes


def test_classless_route_decoding_clears_bits_beyond_the_prefix() -> None:
    # 10.17.255.0/16 carries only 10.17: nothing beyond the width can be sent; but /9 with
    # 10.255 carries a stray bit in the second octet.
    assert decode_classless_routes(b"\x09\x0a\xff" + ROUTER) == (route("10.128.0.0/9", "10.0.0.1"),)


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x21" + bytes(8), b"\x18\x0a\x00", b"\x08\x0a\x00\x00\x00", b"\x00" + ROUTER + b"\x08"],
)
def test_malformed_classless_routes(wire: bytes) -> None:
    with pytest.raises(MalformedOption):
        decode_classless_routes(wire)


# --- option 119, RFC 1035 names with RFC 3397 compression ------------------------------------

RFC3397_EXAMPLE = (
    b"\x03eng\x05apple\x03com\x00"  # eng.apple.com
    b"\x09marketing\xc0\x04"  # marketing + pointer to "apple.com" at offset 4
)


def test_domain_search_example_of_rfc3397() -> None:
    names = ("eng.apple.com", "marketing.apple.com")
    assert len(RFC3397_EXAMPLE) == 27
    assert encode_domain_search(names) == RFC3397_EXAMPLE
    assert decode_domain_search(RFC3397_EXAMPLE) == names


def test_domain_search_uncompressed() -> None:
    names = ("eng.apple.com", "marketing.apple.com.")
    wire = encode_domain_search(names, compress=False)
    assert wire == encode_domain_name(names[0]) + encode_domain_name(names[1])
    assert decode_domain_search(wire) == ("eng.apple.com", "marketing.apple.com")


def test_domain_search_as_dnsmasq_sends_it() -> None:
    # From captures/dhclient-dnsmasq.pcap: the lab pool's search list.
    wire = b"\x03lab\x07example\x00\x03svc\xc0\x00"
    assert decode_domain_search(wire) == ("lab.example", "svc.lab.example")
    assert encode_domain_search(("lab.example", "svc.lab.example")) == wire


def test_domain_search_whole_name_pointer_and_chains() -> None:
    # name 2 is a bare pointer to name 1; name 3 points into name 2's pointer chain.
    wire = b"\x01a\x01b\x00" + b"\xc0\x00" + b"\x01c\xc0\x05"
    assert decode_domain_search(wire) == ("a.b", "a.b", "c.a.b")
    assert encode_domain_search(("a.b", "a.b", "c.a.b")) == b"\x01a\x01b\x00\xc0\x00\x01c\xc0\x00"


def test_domain_search_root_name() -> None:
    assert decode_domain_search(b"\x00") == ("",)


MALICIOUS_NAMES = [
    ("empty value", b""),
    ("pointer to itself", b"\xc0\x00"),
    ("pointer loop through a label", b"\x01a\xc0\x00"),
    ("two pointers pointing at each other", b"\x00\xc0\x04\xc0\x02"),
    ("forward pointer", b"\xc0\x02\x00"),
    ("pointer past the end", b"\x01a\x00\xc0\x40"),
    ("truncated pointer", b"\x01a\x00\xc0"),
    ("truncated label", b"\x05ab"),
    ("missing terminator", b"\x01a"),
    ("reserved label type 01", b"\x41abc\x00"),
    ("reserved label type 10", b"\x81abc\x00"),
    ("name over 255 bytes", (b"\x3f" + b"a" * 63) * 4 + b"\x00"),
]


@pytest.mark.parametrize(("case", "wire"), MALICIOUS_NAMES, ids=[r[0] for r in MALICIOUS_NAMES])
def test_domain_search_decoding_rejects_malformed_and_looping_input(case: str, wire: bytes) -> None:
    with pytest.raises(MalformedOption):
        decode_domain_search(wire)


def test_domain_search_pointer_into_a_long_chain_terminates() -> None:
    # 200 names, each a label plus a pointer to the previous name: valid, deep, finite.
    wire = bytearray(b"\x01z\x00")
    starts = [0]
    for _ in range(199):
        starts.append(len(wire))
        wire += b"\x01z" + (0xC000 | starts[-2]).to_bytes(2, "big")
    with pytest.raises(MalformedOption, match="longer than 255"):
        decode_domain_search(bytes(wire))  # the last names exceed 255 bytes: refused, not hung
    assert decode_domain_search(bytes(wire[: starts[3]]))[-1] == "z.z.z"


@pytest.mark.parametrize(
    "name",
    ["", ".", "a..b", "a" * 64 + ".com", "é.example", ".".join(["abcdefghi"] * 26)],
)
def test_unencodable_domain_names(name: str) -> None:
    with pytest.raises(InvalidOption):
        encode_domain_search((name,))


def test_longest_legal_name_is_accepted() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 4 labels: 64*3 + 62 + 1 = 255 bytes
    wire = encode_domain_name(name)
    assert len(wire) == 255
    assert decode_domain_search(wire) == (name,)


# --- the decoder table --------------------------------------------------------------------------


def test_decode_option_uses_the_table_and_falls_back_to_raw() -> None:
    assert decode_option(OptionCode.SUBNET_MASK, b"\xff\xff\xff\x00") == ip("255.255.255.0")
    assert decode_option(OptionCode.ROUTER, b"\x0a\x00\x00\x01") == (ip("10.0.0.1"),)
    assert decode_option(OptionCode.LEASE_TIME, b"\x00\x00\x01\x2c") == 300
    assert decode_option(OptionCode.DOMAIN_SEARCH, RFC3397_EXAMPLE) == (
        "eng.apple.com",
        "marketing.apple.com",
    )
    assert decode_option(224, b"\x01\x02") == b"\x01\x02"
    with pytest.raises(MalformedOption, match="option 54"):
        decode_option(OptionCode.SERVER_IDENTIFIER, b"\x01")

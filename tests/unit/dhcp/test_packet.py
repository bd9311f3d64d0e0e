"""parse() and serialize(): header fields, options, RFC 3396, overload, errors."""

import struct
from ipaddress import IPv4Address

import pytest

from tests.unit.dhcp.helpers import SAMPLE_NAMES, chaddr, load
from vmdhcp.dhcp import (
    BROADCAST_FLAG,
    ZERO_ADDRESS,
    InvalidPacket,
    MalformedPacket,
    MessageType,
    OptionCode,
    Packet,
    parse,
    serialize,
)
from vmdhcp.dhcp.constants import MAGIC_COOKIE

COOKIE_END = 240


def header(
    *,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = 1,
    flags: int = 0,
    ciaddr: int = 0,
    giaddr: int = 0,
    hw: bytes | None = None,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = MAGIC_COOKIE,
) -> bytes:
    """The 240 bytes before the options, written independently of the code under test."""
    return struct.pack(
        "!BBBBIHHIIII16s64s128s4s",
        op,
        htype,
        hlen,
        hops,
        xid,
        0,
        flags,
        ciaddr,
        0,
        0,
        giaddr,
        hw if hw is not None else chaddr(),
        sname,
        file,
        cookie,
    )


def tlv(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# --- the captured samples ---------------------------------------------------------------------

SAMPLE_HEADERS = [
    # name, type, mac, xid, giaddr, hops
    ("dhclient-discover", MessageType.DISCOVER, "02:00:00:00:00:01", 0x69F9E176, "0.0.0.0", 0),
    ("dhclient-request", MessageType.REQUEST, "02:00:00:00:00:01", 0x69F9E176, "0.0.0.0", 0),
    ("dhcpcd-discover", MessageType.DISCOVER, "02:00:00:00:00:02", 0x859206BA, "0.0.0.0", 0),
    ("dhcpcd-request", MessageType.REQUEST, "02:00:00:00:00:02", 0x859206BA, "0.0.0.0", 0),
    ("perfdhcp-discover", MessageType.DISCOVER, "02:00:00:00:00:00", 0, "192.168.48.250", 1),
    ("perfdhcp-request", MessageType.REQUEST, "02:00:00:00:00:00", 0, "192.168.48.250", 1),
    ("udhcpc-discover", MessageType.DISCOVER, "02:00:00:00:00:02", 0xEB8BE367, "0.0.0.0", 0),
    ("udhcpc-request", MessageType.REQUEST, "02:00:00:00:00:02", 0xEB8BE367, "0.0.0.0", 0),
]


def test_the_sample_table_covers_every_sample_file() -> None:
    assert sorted(row[0] for row in SAMPLE_HEADERS) == list(SAMPLE_NAMES)
    assert len(SAMPLE_NAMES) == 8


@pytest.mark.parametrize(("name", "kind", "mac", "xid", "giaddr", "hops"), SAMPLE_HEADERS)
def test_samples_parse_to_their_header_fields(
    name: str, kind: MessageType, mac: str, xid: int, giaddr: str, hops: int
) -> None:
    packet = parse(load(name))
    assert packet.op == 1
    assert packet.message_type == kind
    assert packet.mac == mac
    assert packet.xid == xid
    assert packet.giaddr == IPv4Address(giaddr)
    assert packet.hops == hops
    assert packet.ciaddr == ZERO_ADDRESS
    assert packet.flags == 0
    assert len(packet.chaddr) == 16
    assert not packet.overloaded


SAMPLE_OPTIONS = [
    (
        "dhclient-discover",
        {12: b"vm", 55: bytes([1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42])},
    ),
    (
        "dhclient-request",
        {50: bytes([192, 168, 49, 1]), 54: bytes([192, 168, 48, 77]), 12: b"vm"},
    ),
    (
        "udhcpc-discover",
        {57: b"\x02\x40", 61: b"\x01\x02\x00\x00\x00\x00\x02", 60: b"udhcp 1.35.0"},
    ),
    ("udhcpc-request", {50: bytes([192, 168, 49, 2]), 54: bytes([192, 168, 48, 77])}),
    ("dhcpcd-discover", {57: b"\x05\xc0", 145: b"\x01"}),
    ("dhcpcd-request", {50: bytes([192, 168, 49, 2]), 54: bytes([192, 168, 48, 77])}),
    (
        "perfdhcp-discover",
        {61: b"\x01\x02\x00\x00\x00\x00\x00", 55: bytes([1, 28, 2, 3, 15, 6, 12])},
    ),
    ("perfdhcp-request", {50: bytes([192, 168, 49, 0]), 54: bytes([192, 168, 48, 77])}),
]


@pytest.mark.parametrize(("name", "expected"), SAMPLE_OPTIONS)
def test_samples_carry_the_options_their_clients_send(
    name: str, expected: dict[int, bytes]
) -> None:
    options = parse(load(name)).options
    for code, value in expected.items():
        assert options[code] == value


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_survive_serialize_then_parse(name: str) -> None:
    packet = parse(load(name))
    wire = serialize(packet)
    assert parse(wire) == packet
    assert serialize(parse(wire)) == wire
    assert len(wire) >= 300


@pytest.mark.parametrize("name", ["dhclient-discover", "udhcpc-request", "dhclient-request"])
def test_serialize_keeps_header_and_size_of_300_byte_samples(name: str) -> None:
    # These clients pad to 300 bytes as we do; only the order of their options may differ
    # from ours, so compare the header and cookie byte for byte, and the total length.
    raw = load(name)
    wire = serialize(parse(raw))
    assert wire[:COOKIE_END] == raw[:COOKIE_END]
    assert len(wire) == len(raw) == 300


def test_typed_accessors_of_a_sample() -> None:
    packet = parse(load("udhcpc-request"))
    assert packet.requested_address == IPv4Address("192.168.49.2")
    assert packet.server_identifier == IPv4Address("192.168.48.77")
    assert packet.max_message_size == 576
    assert packet.parameter_request_list == (1, 3, 6, 12, 15, 28, 42, 119)
    client_id = packet.client_identifier
    assert client_id is not None
    assert getattr(client_id, "mac", None) == "02:00:00:00:00:02"
    assert packet.host_name is None
    assert packet.lease_time is None
    assert parse(load("dhclient-request")).host_name == "vm"


def test_summary_names_the_fields_that_matter() -> None:
    line = parse(load("perfdhcp-request")).summary()
    assert line.startswith("REQUEST xid=0x00000000 hw=02:00:00:00:00:00")
    assert "giaddr=192.168.48.250" in line
    assert "req=192.168.49.0" in line
    assert "sid=192.168.48.77" in line


# --- options: pad, end, concatenation, order --------------------------------------------------


def test_pad_is_skipped_and_end_stops_parsing() -> None:
    data = header() + b"\x00\x00" + tlv(53, b"\x01") + b"\x00" + tlv(12, b"a") + b"\xff"
    data += tlv(13, b"after end") + b"garbage"
    assert dict(parse(data).options) == {53: b"\x01", 12: b"a"}


def test_missing_end_option_is_tolerated() -> None:
    assert dict(parse(header() + tlv(53, b"\x03")).options) == {53: b"\x03"}
    assert dict(parse(header()).options) == {}


def test_repeated_options_are_concatenated_in_order_rfc3396() -> None:
    data = header() + tlv(119, b"\x03abc") + tlv(53, b"\x01") + tlv(119, b"\x00") + b"\xff"
    assert parse(data).options[119] == b"\x03abc\x00"


def test_zero_length_options_are_kept() -> None:
    assert parse(header() + tlv(80, b"") + b"\xff").options[80] == b""


def test_unknown_message_types_and_options_are_kept_raw() -> None:
    packet = parse(header() + tlv(53, b"\x63") + tlv(224, b"\xde\xad") + b"\xff")
    assert packet.message_type == 0x63
    assert packet.options[224] == b"\xde\xad"


def test_malformed_message_type_reads_as_none() -> None:
    packet = parse(header() + tlv(53, b"\x01\x02") + b"\xff")
    assert packet.message_type is None
    assert packet.options[53] == b"\x01\x02"
    assert packet.summary().startswith("MALFORMED")
    assert parse(header()).summary().startswith("BOOTP")


def test_any_htype_and_hlen_is_accepted() -> None:
    infiniband = parse(header(htype=32, hlen=0, hw=bytes(range(16))) + b"\xff")
    assert infiniband.htype == 32
    assert infiniband.mac is None
    assert infiniband.chaddr == bytes(range(16))
    assert infiniband.hardware_address == b""
    long_hw = parse(header(htype=6, hlen=200, hw=bytes(range(16))) + b"\xff")
    assert long_hw.hlen == 200
    assert long_hw.hardware_address == bytes(range(16))
    assert parse(header(htype=1, hlen=8) + b"\xff").mac is None


def test_broadcast_flag() -> None:
    assert parse(header(flags=BROADCAST_FLAG) + b"\xff").broadcast
    assert not parse(header(flags=0x7FFF) + b"\xff").broadcast


def test_bytearray_and_memoryview_input() -> None:
    raw = load("dhclient-request")
    expected = parse(raw)
    assert parse(bytearray(raw)) == expected
    assert parse(memoryview(raw)) == expected
    assert all(type(value) is bytes for value in parse(bytearray(raw)).options.values())


# --- option overload (52) -----------------------------------------------------------------------


def test_overload_reads_options_from_file_then_sname() -> None:
    file = tlv(12, b"from-file") + tlv(119, b"\x01a") + b"\xff"
    sname = tlv(15, b"from-sname") + tlv(119, b"\x00") + b"\xff"
    data = header(sname=sname, file=file) + tlv(53, b"\x01") + tlv(52, b"\x03") + b"\xff"
    packet = parse(data)
    assert packet.overloaded
    assert packet.options[12] == b"from-file"
    assert packet.options[15] == b"from-sname"
    assert packet.options[119] == b"\x01a\x00"  # options, then file, then sname (RFC 3396 7)
    assert packet.sname[: len(sname)] == sname  # the raw fields are kept as well


@pytest.mark.parametrize(("value", "from_file", "from_sname"), [(1, True, False), (2, False, True)])
def test_overload_of_one_field_only(value: int, from_file: bool, from_sname: bool) -> None:
    data = header(sname=tlv(15, b"s"), file=tlv(12, b"f")) + tlv(52, bytes((value,))) + b"\xff"
    options = parse(data).options
    assert (12 in options) is from_file
    assert (15 in options) is from_sname


def test_without_overload_sname_and_file_are_not_read_as_options() -> None:
    packet = parse(header(sname=tlv(15, b"s"), file=tlv(12, b"f")) + b"\xff")
    assert 12 not in packet.options
    assert 15 not in packet.options
    assert packet.file.startswith(tlv(12, b"f"))


def test_serialize_never_writes_overload() -> None:
    packet = parse(header(file=tlv(12, b"f")) + tlv(52, b"\x01") + b"\xff")
    reparsed = parse(serialize(packet))
    assert 52 not in reparsed.options
    assert reparsed.options[12] == b"f"  # moved to the options field
    assert reparsed.file == packet.file


# --- malformed input ----------------------------------------------------------------------------

MALFORMED = [
    ("empty", b""),
    ("truncated header", header()[:100]),
    ("header without cookie", header()[:236]),
    ("cookie cut short", header()[:239]),
    ("bad cookie", header(cookie=b"\x63\x82\x53\x64") + b"\xff"),
    ("plain BOOTP vendor area", header(cookie=b"\x00\x00\x00\x00") + bytes(60)),
    ("option without length byte", header() + b"\x35"),
    ("option value truncated", header() + b"\x35\x01"),
    ("long option truncated", header() + b"\x0c\x10abc"),
    ("truncation after valid options", header() + tlv(53, b"\x01") + b"\x0c\x05ab"),
    ("overload value 0", header() + tlv(52, b"\x00") + b"\xff"),
    ("overload value 4", header() + tlv(52, b"\x04") + b"\xff"),
    ("overload of two bytes", header() + tlv(52, b"\x01\x01") + b"\xff"),
    ("overload into truncated file option", header(file=b"\x0c\x7f") + tlv(52, b"\x01")),
    ("overload into sname without length", header(sname=b"\x00" * 63 + b"\x0c") + tlv(52, b"\x02")),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_malformed_input_raises_malformed_packet(case: str, data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse(data)


def test_malformed_packet_is_a_value_error_and_a_vmdhcp_error() -> None:
    from vmdhcp.errors import VmdhcpError

    with pytest.raises(ValueError, match="magic cookie"):
        parse(header(cookie=b"abcd"))
    assert issubclass(MalformedPacket, VmdhcpError)


# --- serialize ----------------------------------------------------------------------------------


def test_serialize_orders_options_53_first_then_by_code_82_last() -> None:
    packet = Packet(op=2, options={82: b"\x01\x01x", 6: b"\x01\x02\x03\x04", 53: b"\x05", 1: b"m"})
    wire = serialize(packet)
    body = wire[COOKIE_END:]
    assert body.startswith(tlv(53, b"\x05") + tlv(1, b"m") + tlv(6, b"\x01\x02\x03\x04"))
    assert body.rstrip(b"\x00").endswith(tlv(82, b"\x01\x01x") + b"\xff")


def test_serialize_is_deterministic_whatever_the_dict_order() -> None:
    a = Packet(op=2, options={1: b"a", 3: b"b", 53: b"\x02"})
    b = Packet(op=2, options={53: b"\x02", 3: b"b", 1: b"a"})
    assert serialize(a) == serialize(b)


def test_serialize_pads_to_300_bytes_and_not_beyond() -> None:
    small = serialize(Packet(op=2, options={53: b"\x02"}))
    assert len(small) == 300
    assert small[COOKIE_END : COOKIE_END + 4] == b"\x35\x01\x02\xff"
    assert small[COOKIE_END + 4 :] == bytes(300 - COOKIE_END - 4)
    big = serialize(Packet(op=2, options={12: b"x" * 100}))
    assert len(big) == COOKIE_END + 2 + 100 + 1


@pytest.mark.parametrize(
    ("length", "chunks"), [(255, [255]), (256, [255, 1]), (600, [255, 255, 90])]
)
def test_serialize_splits_long_options_rfc3396(length: int, chunks: list[int]) -> None:
    value = bytes(i % 251 for i in range(length))
    wire = serialize(Packet(op=2, options={119: value}))
    pos = COOKIE_END
    for size in chunks:
        assert wire[pos] == 119
        assert wire[pos + 1] == size
        pos += 2 + size
    assert wire[pos] == 255
    assert parse(wire).options[119] == value


def test_serialize_writes_the_header_fields() -> None:
    packet = Packet(
        op=2,
        htype=1,
        hlen=6,
        hops=3,
        xid=0xDEADBEEF,
        secs=7,
        flags=BROADCAST_FLAG,
        ciaddr=IPv4Address("10.0.0.1"),
        yiaddr=IPv4Address("10.0.0.2"),
        siaddr=IPv4Address("10.0.0.3"),
        giaddr=IPv4Address("10.0.0.4"),
        chaddr=chaddr("02:00:00:00:00:09"),
        sname=b"server",
        file=b"boot.img",
    )
    wire = serialize(packet)
    assert wire[:12] == bytes([2, 1, 6, 3, 0xDE, 0xAD, 0xBE, 0xEF, 0, 7, 0x80, 0])
    assert wire[12:28] == bytes([10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3, 10, 0, 0, 4])
    assert wire[28:34] == bytes.fromhex("020000000009")
    assert wire[44:50] == b"server"
    assert wire[108:116] == b"boot.img"
    assert wire[236:240] == MAGIC_COOKIE
    assert parse(wire) == packet._replace(
        sname=b"server".ljust(64, b"\x00"), file=b"boot.img".ljust(128, b"\x00")
    )


def test_short_chaddr_is_zero_filled() -> None:
    wire = serialize(Packet(op=2, chaddr=b"\x02\x00\x00\x00\x00\x07"))
    assert parse(wire).chaddr == b"\x02\x00\x00\x00\x00\x07" + bytes(10)


INVALID = [
    ("chaddr too long", Packet(op=2, chaddr=bytes(17))),
    ("sname too long", Packet(op=2, sname=bytes(65))),
    ("file too long", Packet(op=2, file=bytes(129))),
    ("op out of range", Packet(op=256)),
    ("xid out of range", Packet(op=2, xid=1 << 32)),
    ("negative flags", Packet(op=2, flags=-1)),
    ("pad code", Packet(op=2, options={0: b""})),
    ("end code", Packet(op=2, options={255: b""})),
    ("code above 255", Packet(op=2, options={300: b"x"})),
]


@pytest.mark.parametrize(("case", "packet"), INVALID, ids=[case for case, _ in INVALID])
def test_serialize_rejects_what_the_wire_cannot_hold(case: str, packet: Packet) -> None:
    with pytest.raises(InvalidPacket):
        serialize(packet)


def test_zero_addresses_parse_to_the_shared_zero_object() -> None:
    packet = parse(load("dhclient-discover"))
    assert packet.ciaddr is ZERO_ADDRESS
    assert packet.giaddr is ZERO_ADDRESS
    # ... and a distinct IPv4Address("0.0.0.0") built elsewhere serialises the same way.
    other = Packet(op=2, ciaddr=IPv4Address("0.0.0.0"), options={53: b"\x02"})
    assert serialize(other) == serialize(Packet(op=2, options={53: b"\x02"}))


def test_option_code_enum_values_match_the_rfcs() -> None:
    assert OptionCode.DOMAIN_SEARCH == 119
    assert OptionCode.CLASSLESS_STATIC_ROUTE == 121
    assert OptionCode.RELAY_AGENT_INFORMATION == 82
    assert MessageType.INFORM == 8

"""Hypothesis strategies for DHCP packets, well-formed and not."""

from ipaddress import IPv4Address

from hypothesis import strategies as st

from tests.unit.dhcp.helpers import SAMPLE_NAMES, load
from vmdhcp.dhcp import Packet
from vmdhcp.dhcp.constants import MAGIC_COOKIE

SAMPLE_BYTES = tuple(load(name) for name in SAMPLE_NAMES)

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
addresses = st.one_of(st.just(IPv4Address(0)), st.builds(IPv4Address, u32))

option_codes = st.integers(1, 254).filter(lambda code: code != 52)
option_values = st.one_of(st.binary(max_size=16), st.binary(max_size=700))

packets = st.builds(
    Packet,
    op=u8,
    htype=u8,
    hlen=u8,
    hops=u8,
    xid=u32,
    secs=u16,
    flags=u16,
    ciaddr=addresses,
    yiaddr=addresses,
    siaddr=addresses,
    giaddr=addresses,
    chaddr=st.binary(min_size=16, max_size=16),
    sname=st.binary(min_size=64, max_size=64),
    file=st.binary(min_size=128, max_size=128),
    options=st.dictionaries(option_codes, option_values, max_size=12),
)
"""Any packet `serialize` accepts and `parse` gives back unchanged (no option 52)."""


@st.composite
def option_soup(draw: st.DrawFn, max_options: int = 12) -> bytes:
    """Options whose announced lengths may or may not match the bytes that follow."""
    out = bytearray()
    for _ in range(draw(st.integers(0, max_options))):
        code = draw(st.one_of(u8, st.sampled_from([0, 52, 53, 55, 61, 119, 121, 255])))
        value = draw(st.binary(max_size=40))
        length = draw(st.one_of(st.just(len(value)), u8))
        out.append(code)
        if draw(st.integers(0, 9)):  # sometimes no length byte at all
            out.append(length)
            out += value
    return bytes(out)


@st.composite
def dhcp_shaped(draw: st.DrawFn) -> bytes:
    """A real header and cookie, random or overloaded fields, then an option soup."""
    header = bytearray(draw(st.sampled_from(SAMPLE_BYTES))[:236])
    if draw(st.booleans()):
        header[:44] = draw(st.binary(min_size=44, max_size=44))
    if draw(st.booleans()):
        header[44:108] = draw(option_soup(4)).ljust(64, b"\x00")[:64]
        header[108:236] = draw(option_soup(6)).ljust(128, b"\x00")[:128]
    soup = draw(option_soup())
    if draw(st.booleans()):
        soup = bytes((52, 1, draw(st.integers(0, 4)))) + soup
    return bytes(header) + MAGIC_COOKIE + soup


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A captured packet with a few bytes flipped, set, inserted, deleted, or cut off."""
    data = bytearray(draw(st.sampled_from(SAMPLE_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate"]))
        # Mostly mutate the options (from byte 236), where the parser has decisions to make.
        high = max(len(data) - 1, 0)
        low = min(draw(st.sampled_from([0, 236, 240])), high)
        pos = draw(st.integers(low, high))
        if kind == "set" and data:
            data[pos] = draw(u8)
        elif kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


any_input = st.one_of(st.binary(max_size=1500), dhcp_shaped(), mutated_samples())
"""What the fuzz tests feed to parse()."""

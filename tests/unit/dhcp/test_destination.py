"""choose_destination(): RFC 2131 section 4.1, in its order."""

from ipaddress import IPv4Address

import pytest

from vmdhcp.dhcp import (
    BROADCAST,
    BROADCAST_FLAG,
    CLIENT_PORT,
    SERVER_PORT,
    ZERO_ADDRESS,
    Destination,
    L2Unicast,
    Relay,
    Unicast,
    choose_destination,
)

Z = ZERO_ADDRESS
GI = IPv4Address("10.0.0.1")
CI = IPv4Address("10.0.0.50")
YI = IPv4Address("10.0.0.60")
MAC = "02:00:00:00:00:01"
B = BROADCAST_FLAG

CASES = [
    # case, giaddr, ciaddr, flags, yiaddr, nak, expected
    ("relay wins over everything", GI, CI, B, YI, False, Relay(GI)),
    ("relay for a nak too", GI, Z, 0, Z, True, Relay(GI)),
    ("nak is broadcast even with ciaddr", Z, CI, 0, Z, True, BROADCAST),
    ("nak is broadcast without broadcast flag", Z, Z, 0, Z, True, BROADCAST),
    ("ciaddr: unicast", Z, CI, 0, YI, False, Unicast(CI)),
    ("ciaddr beats the broadcast flag", Z, CI, B, YI, False, Unicast(CI)),
    ("broadcast flag", Z, Z, B, YI, False, BROADCAST),
    ("otherwise layer 2 unicast to chaddr and yiaddr", Z, Z, 0, YI, False, L2Unicast(MAC, YI)),
    ("no yiaddr to unicast to: broadcast", Z, Z, 0, Z, False, BROADCAST),
    ("a distinct 0.0.0.0 object is still zero", IPv4Address(0), IPv4Address(0), 0, YI, False,
     L2Unicast(MAC, YI)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "giaddr", "ciaddr", "flags", "yiaddr", "nak", "expected"),
    CASES,
    ids=[row[0] for row in CASES],
)
def test_destination_order_of_rfc2131_section_4_1(
    case: str,
    giaddr: IPv4Address,
    ciaddr: IPv4Address,
    flags: int,
    yiaddr: IPv4Address,
    nak: bool,
    expected: Destination,
) -> None:
    assert choose_destination(giaddr, ciaddr, flags, MAC, yiaddr, nak=nak) == expected


def test_ports_and_addresses() -> None:
    assert Relay(GI).port == SERVER_PORT == 67
    assert (Relay(GI).address, Unicast(CI).address) == (GI, CI)
    assert Unicast(CI).port == L2Unicast(MAC, YI).port == BROADCAST.port == CLIENT_PORT == 68
    assert BROADCAST.address == IPv4Address("255.255.255.255")
    assert Relay(GI) != Unicast(GI)

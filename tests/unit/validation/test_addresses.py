"""Address parsing speaks Go's `netip.ParseAddr` and `net.ParseCIDR` messages, which
upstream's webhook passes to users verbatim."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from vmdhcp.validation import AddressError, parse_addr, parse_cidr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.168.0.1000", 'ParseAddr("192.168.0.1000"): IPv4 field has value >255'),
        ("1..2.3", 'ParseAddr("1..2.3"): IPv4 field must have at least one digit (at ".2.3")'),
        (".1.2.3", 'ParseAddr(".1.2.3"): IPv4 field must have at least one digit (at ".1.2.3")'),
        ("1.2.3.", 'ParseAddr("1.2.3."): IPv4 field must have at least one digit (at ".")'),
        ("1.2.3", 'ParseAddr("1.2.3"): IPv4 address too short'),
        ("1.2.3.4.5", 'ParseAddr("1.2.3.4.5"): IPv4 address too long'),
        ("01.2.3.4", 'ParseAddr("01.2.3.4"): IPv4 field has octet with leading zero'),
        ("1.2.3.x", 'ParseAddr("1.2.3.x"): unexpected character (at "x")'),
        ("1.2.3.4 ", 'ParseAddr("1.2.3.4 "): unexpected character (at " ")'),
        ("abc", 'ParseAddr("abc"): unable to parse IP'),
        ("", 'ParseAddr(""): unable to parse IP'),
        ("%eth0", 'ParseAddr("%eth0"): missing IPv6 address'),
        ("fe80::1", "ip address fe80::1 is not an IPv4 address"),
    ],
)
def test_parse_addr_refuses_with_gos_message(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_addr(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["0.0.0.0", "192.168.0.1", "255.255.255.255", "10.0.0.0"])
def test_parse_addr_accepts_dotted_quads(text: str) -> None:
    assert parse_addr(text) == IPv4Address(text)


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("192.168.0.0/24", "192.168.0.0/24"),
        ("192.168.0.254/24", "192.168.0.0/24"),  # host bits cleared, as Go does
        ("10.0.0.0/08", "10.0.0.0/8"),  # Go's dtoi takes leading zeros
        ("1.2.3.4/32", "1.2.3.4/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_parse_cidr(text: str, network: str) -> None:
    assert parse_cidr(text) == IPv4Network(network)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid CIDR address: "),
        ("192.168.0.1", "invalid CIDR address: 192.168.0.1"),
        ("192.168.0.0/33", "invalid CIDR address: 192.168.0.0/33"),
        ("192.168.0.0/", "invalid CIDR address: 192.168.0.0/"),
        ("192.168.0.0/-1", "invalid CIDR address: 192.168.0.0/-1"),
        ("192.168.0.0/255.255.255.0", "invalid CIDR address: 192.168.0.0/255.255.255.0"),
        ("192.168.0.300/24", "invalid CIDR address: 192.168.0.300/24"),
        ("2001:db8::/64", "cidr 2001:db8::/64 is not an IPv4 network"),
        ("2001:db8::/129", "invalid CIDR address: 2001:db8::/129"),
    ],
)
def test_parse_cidr_refuses(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_cidr(text)
    assert str(caught.value) == message

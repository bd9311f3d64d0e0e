"""Upstream's IPAM test table (pkg/ipam/ipam_test.go), ported row by row.

Upstream allocates by address only; here every row allocates for its own MAC, which is
what the controller does. Row 8 ("any free address") is where we differ on purpose:
upstream picks at random, we pick the lowest free address.
"""

from ipaddress import IPv4Address

import pytest

from vmdhcp.ipam import Ipam, IpamError, Pool

SUBNETS = [
    ("default/network-class-c-ok", "192.168.0.0/24", "192.168.0.10", "192.168.0.254", None),
    (
        "default/network-class-c-start-error",
        "192.168.0.0/24",
        "192.168.1.10",
        "192.168.0.254",
        "start ip address 192.168.1.10 is not within subnet 192.168.0.0/24 range",
    ),
    (
        "default/network-class-c-end-error",
        "192.168.0.0/24",
        "192.168.0.10",
        "192.168.1.125",
        "end ip address 192.168.1.125 is not within subnet 192.168.0.0/24 range",
    ),
    (
        "default/network-class-c-smaller-error",
        "192.168.0.0/24",
        "192.168.0.200",
        "192.168.0.100",
        "end ip address 192.168.0.100 is less than start ip address 192.168.0.200",
    ),
    (
        "default/network-class-c-broadcast-error",
        "192.168.0.0/24",
        "192.168.0.10",
        "192.168.0.255",
        "end ip address 192.168.0.255 equals broadcast ip address 192.168.0.255",
    ),
    ("default/network-class-b-ok", "172.16.0.0/16", "172.16.0.10", "172.16.255.254", None),
    (
        "default/network-class-b-start-error",
        "172.16.0.0/16",
        "172.10.0.10",
        "172.16.254.254",
        "start ip address 172.10.0.10 is not within subnet 172.16.0.0/16 range",
    ),
    (
        "default/network-class-b-end-error",
        "172.16.0.0/16",
        "172.16.0.10",
        "172.200.1.125",
        "end ip address 172.200.1.125 is not within subnet 172.16.0.0/16 range",
    ),
    (
        "default/network-class-b-smaller-error",
        "172.16.0.0/16",
        "172.16.180.10",
        "172.16.0.100",
        "end ip address 172.16.0.100 is less than start ip address 172.16.180.10",
    ),
    (
        "default/network-class-b-broadcast-error",
        "172.16.0.0/16",
        "172.16.0.10",
        "172.16.255.255",
        "end ip address 172.16.255.255 equals broadcast ip address 172.16.255.255",
    ),
    ("default/network-class-a-ok", "10.0.0.0/8", "10.0.0.10", "10.255.255.254", None),
    (
        "default/network-class-a-start-error",
        "10.0.0.0/8",
        "11.0.0.10",
        "10.255.255.254",
        "start ip address 11.0.0.10 is not within subnet 10.0.0.0/8 range",
    ),
    (
        "default/network-class-a-end-error",
        "10.0.0.0/8",
        "10.0.0.10",
        "250.255.255.254",
        "end ip address 250.255.255.254 is not within subnet 10.0.0.0/8 range",
    ),
    (
        "default/network-class-a-smaller-error",
        "10.0.0.0/8",
        "10.255.255.253",
        "10.10.227.10",
        "end ip address 10.10.227.10 is less than start ip address 10.255.255.253",
    ),
    (
        "default/network-class-a-broadcast-error",
        "10.0.0.0/8",
        "10.0.0.10",
        "10.255.255.255",
        "end ip address 10.255.255.255 equals broadcast ip address 10.255.255.255",
    ),
    ("default/network-class-c-small", "192.168.10.64/31", "192.168.10.64", "192.168.10.64", None),
]

ALLOCATIONS = [
    (
        "default/not-existing-network-class",
        "",
        "network default/not-existing-network-class does not exist",
    ),
    ("default/network-class-c-ok", "192.168.0.58", None),
    (
        "default/network-class-c-ok",
        "192.168.1.190",
        "designated ip 192.168.1.190 is not in subnet 192.168.0.0/24",
    ),
    ("default/network-class-b-ok", "172.16.0.11", None),
    (
        "default/network-class-b-ok",
        "172.16.255.255",
        "designated ip 172.16.255.255 equals broadcast ip address 172.16.255.255",
    ),
    ("default/network-class-b-ok", "172.16.0.11", "designated ip 172.16.0.11 is already allocated"),
    ("default/network-class-b-ok", "172.16.0.10", None),
    ("default/network-class-b-ok", "", None),
    ("default/network-class-c-small", "", None),
    (
        "default/network-class-c-small",
        "",
        "no more ip addresses left in network default/network-class-c-small ipam",
    ),
]

DEALLOCATIONS = [
    (
        "default/not-existing-network-class",
        "",
        "network default/not-existing-network-class does not exist",
    ),
    ("default/network-class-b-ok", "172.16.0.11", None),
    ("default/network-class-b-ok", "", "designated ip is empty"),
    (
        "default/network-class-b-ok",
        "172.18.128.129",
        "to-be-deallocated ip 172.18.128.129 was not found in network "
        "default/network-class-b-ok ipam",
    ),
    (
        "default/network-class-b-ok",
        "172.16.0.11",
        "to-be-deallocated ip 172.16.0.11 was not allocated",
    ),
    (
        "default/network-class-b-ok",
        "172.16.0.5",
        "to-be-deallocated ip 172.16.0.5 was not found in network default/network-class-b-ok ipam",
    ),
]


def _mac(n: int) -> str:
    return f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}"


def _build() -> Ipam:
    ipam = Ipam()
    for name, cidr, start, end, expected in SUBNETS:
        if expected is None:
            ipam.add(name, Pool.from_spec(cidr, start, end))
    return ipam


@pytest.mark.parametrize(("name", "cidr", "start", "end", "expected"), SUBNETS, ids=lambda v: v)
def test_new_subnet(name: str, cidr: str, start: str, end: str, expected: str | None) -> None:
    if expected is None:
        Ipam().add(name, Pool.from_spec(cidr, start, end))
    else:
        with pytest.raises(IpamError) as info:
            Pool.from_spec(cidr, start, end)
        assert str(info.value) == expected


def test_allocate_deallocate_sequence_and_counts() -> None:
    ipam = _build()
    results: list[str | None] = []
    for row, (network, designated, _expected) in enumerate(ALLOCATIONS):
        try:
            ipam.allocate(network, _mac(row), designated)
            results.append(None)
        except IpamError as exc:
            results.append(str(exc))
    assert results == [expected for _, _, expected in ALLOCATIONS]
    # deterministic where upstream is random: the lowest free address of .10-...
    assert ipam.pool("default/network-class-b-ok").lookup(_mac(7)) == IPv4Address("172.16.0.12")
    assert ipam.pool("default/network-class-c-small").lookup(_mac(8)) == IPv4Address(
        "192.168.10.64"
    )

    outcomes: list[str | None] = []
    for network, address, _expected in DEALLOCATIONS:
        try:
            ipam.release_address(network, address)
            outcomes.append(None)
        except IpamError as exc:
            outcomes.append(str(exc))
    assert outcomes == [expected for _, _, expected in DEALLOCATIONS]

    # 172.16.0.10-172.16.255.254 is 65525 addresses; .10 and .12 remain allocated
    assert ipam.used("default/network-class-b-ok") == 2
    assert ipam.available("default/network-class-b-ok") == 65523


def test_deleted_subnet_no_longer_exists() -> None:
    ipam = _build()
    ipam.remove("default/network-class-c-ok")
    with pytest.raises(IpamError, match=r"^network default/network-class-c-ok does not exist$"):
        ipam.allocate("default/network-class-c-ok", _mac(1))

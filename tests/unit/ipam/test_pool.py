from ipaddress import IPv4Address, IPv4Network

import pytest

from vmdhcp.ipam import (
    EXCLUDED,
    RESERVED,
    AddressInUse,
    ConflictReason,
    DesignationError,
    InvalidPool,
    Ipam,
    Pool,
    PoolExhausted,
)

MAC_A = "aa:bb:cc:dd:ee:01"
MAC_B = "aa:bb:cc:dd:ee:02"
MAC_C = "aa:bb:cc:dd:ee:03"


def net48() -> Pool:
    """The seed README's pool: .81-.90, server .77 (outside), router .1, .81/.90 excluded."""
    return Pool.from_spec(
        "192.168.48.0/24",
        "192.168.48.81",
        "192.168.48.90",
        server="192.168.48.77",
        router="192.168.48.1",
        exclude=["192.168.48.81", "192.168.48.90"],
        name="default/net-48",
    )


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def test_lowest_free_first_and_idempotent_per_mac() -> None:
    pool = net48()
    assert pool.allocate(MAC_A) == ip("192.168.48.82")
    assert pool.allocate(MAC_B) == ip("192.168.48.83")
    assert pool.allocate(MAC_A) == ip("192.168.48.82")
    assert pool.used == 2
    assert pool.available == 6  # .82-.89 is 8 addresses


def test_mac_is_normalised_on_entry() -> None:
    pool = net48()
    address = pool.allocate("AA-BB-CC-DD-EE-01")
    assert pool.allocate(MAC_A) == address
    assert pool.lookup("AA:BB:CC:DD:EE:01") == address
    assert pool.owner(address) == MAC_A


def test_released_low_address_is_reused_before_higher_ones() -> None:
    pool = net48()
    for n in range(5):
        pool.allocate(f"02:00:00:00:00:{n:02x}")
    assert pool.release("02:00:00:00:00:01") == ip("192.168.48.83")
    assert pool.release("02:00:00:00:00:01") is None  # idempotent
    assert pool.allocate(MAC_C) == ip("192.168.48.83")
    assert pool.allocate("02:00:00:00:00:ff") == ip("192.168.48.87")


def test_exhaustion_and_recovery() -> None:
    pool = net48()
    for n in range(8):
        pool.allocate(f"02:00:00:00:00:{n:02x}")
    with pytest.raises(PoolExhausted, match="no more ip addresses left in network default/net-48"):
        pool.allocate(MAC_A)
    pool.release("02:00:00:00:00:05")
    assert pool.allocate(MAC_A) == ip("192.168.48.87")


@pytest.mark.parametrize(
    ("designated", "message"),
    [
        ("192.168.49.5", "designated ip 192.168.49.5 is not in subnet 192.168.48.0/24"),
        ("192.168.48.255", "designated ip 192.168.48.255 equals broadcast ip address"),
        ("192.168.48.0", "designated ip 192.168.48.0 equals network ip address"),
        ("192.168.48.100", "designated ip 192.168.48.100 is outside the pool range"),
        ("192.168.48.81", "designated ip 192.168.48.81 is excluded from the pool"),
        ("not-an-ip", "designated ip not-an-ip is not a valid IPv4 address"),
    ],
)
def test_designated_refusals_say_why(designated: str, message: str) -> None:
    pool = net48()
    with pytest.raises(DesignationError, match=message):
        pool.allocate(MAC_A, designated)
    assert pool.used == 0


def test_designated_server_and_router_inside_range_are_reserved() -> None:
    pool = Pool.from_spec(
        "10.0.0.0/24", "10.0.0.1", "10.0.0.20", server="10.0.0.2", router="10.0.0.1"
    )
    assert pool.reserved == {ip("10.0.0.1"), ip("10.0.0.2")}
    with pytest.raises(DesignationError, match="reserved for the DHCP server"):
        pool.allocate(MAC_A, "10.0.0.2")
    with pytest.raises(DesignationError, match="reserved for the router"):
        pool.allocate(MAC_A, "10.0.0.1")
    assert pool.allocate(MAC_A) == ip("10.0.0.3")
    assert pool.capacity == 18


def test_designated_taken_names_the_owner() -> None:
    pool = net48()
    pool.allocate(MAC_A, "192.168.48.85")
    with pytest.raises(AddressInUse) as info:
        pool.allocate(MAC_B, "192.168.48.85")
    assert str(info.value) == "designated ip 192.168.48.85 is already allocated"
    assert info.value.owner == MAC_A


def test_designated_moves_a_mac_only_when_the_target_is_free() -> None:
    pool = net48()
    pool.allocate(MAC_A)  # .82
    pool.allocate(MAC_B, "192.168.48.86")
    with pytest.raises(AddressInUse):
        pool.allocate(MAC_A, "192.168.48.86")
    assert pool.lookup(MAC_A) == ip("192.168.48.82")  # unchanged after the refusal
    assert pool.allocate(MAC_A, "192.168.48.88") == ip("192.168.48.88")
    assert pool.owner("192.168.48.82") is None
    assert pool.allocate(MAC_C) == ip("192.168.48.82")


def test_designated_zero_means_any() -> None:
    pool = net48()
    assert pool.allocate(MAC_A, "0.0.0.0") == ip("192.168.48.82")
    assert pool.allocate(MAC_B, "") == ip("192.168.48.83")


def test_restore_reports_every_conflict_and_keeps_first_claim() -> None:
    pool = net48()
    conflicts = pool.restore(
        [
            ("192.168.48.81", EXCLUDED),
            ("192.168.48.77", RESERVED),
            ("192.168.48.84", MAC_A),
            ("192.168.48.84", MAC_B),  # one address, two MACs
            ("192.168.48.85", MAC_A),  # one MAC, two addresses
            ("192.168.48.200", MAC_C),  # outside the range
            ("192.168.48.90", MAC_C),  # excluded
            ("banana", MAC_C),
            ("192.168.48.86", "not-a-mac"),
            ("192.168.48.84", MAC_A.upper()),  # same claim again: not a conflict
        ]
    )
    assert [c.reason for c in conflicts] == [
        ConflictReason.ADDRESS_CLAIMED,
        ConflictReason.MAC_CLAIMED,
        ConflictReason.OUTSIDE_RANGE,
        ConflictReason.NOT_ALLOCATABLE,
        ConflictReason.INVALID_ADDRESS,
        ConflictReason.INVALID_MAC,
    ]
    assert "already allocated to mac aa:bb:cc:dd:ee:01" in conflicts[0].message
    assert pool.allocations() == {ip("192.168.48.84"): MAC_A}
    assert pool.allocate(MAC_B) == ip("192.168.48.82")


def test_snapshot_is_immutable_and_renders_status_marks() -> None:
    pool = net48()
    pool.allocate(MAC_A)
    snap = pool.snapshot()
    pool.allocate(MAC_B)
    assert snap.used == 1
    assert dict(snap.allocations) == {ip("192.168.48.82"): MAC_A}
    with pytest.raises(TypeError):
        snap.allocations[ip("192.168.48.83")] = MAC_B  # type: ignore[index]
    assert snap.status_allocated() == {
        "192.168.48.82": MAC_A,
        "192.168.48.81": EXCLUDED,
        "192.168.48.90": EXCLUDED,
    }


def test_server_inside_range_is_marked_reserved() -> None:
    pool = Pool.from_spec("192.168.0.0/24", "192.168.0.1", "192.168.0.254", server="192.168.0.1")
    assert pool.snapshot().status_allocated() == {"192.168.0.1": RESERVED}
    assert pool.available == 253


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"cidr": "192.168.0.0/33"}, "spec.ipv4Config.cidr", "invalid CIDR address"),
        ({"cidr": "nonsense"}, "spec.ipv4Config.cidr", "invalid CIDR address: nonsense"),
        ({"start": "192.168.0.300"}, "spec.ipv4Config.pool.start", "not a valid IPv4 address"),
        ({"end": ""}, "spec.ipv4Config.pool.end", "not a valid IPv4 address"),
        ({"server": "x"}, "spec.ipv4Config.serverIP", "not a valid IPv4 address"),
        ({"router": "1.2.3"}, "spec.ipv4Config.router", "not a valid IPv4 address"),
        ({"exclude": ["192.168.0.9", "no"]}, "spec.ipv4Config.pool.exclude[1]", "not a valid"),
        ({"start": "192.168.0.0"}, "spec.ipv4Config.pool.start", "equals network ip address"),
        ({"start": "192.168.0.255"}, "spec.ipv4Config.pool.end", "less than start"),
        ({"end": "192.168.1.1"}, "spec.ipv4Config.pool.end", "not within subnet"),
    ],
)
def test_bad_pools_raise_typed_errors_with_field_paths(
    kwargs: dict[str, object], field: str, message: str
) -> None:
    spec: dict[str, object] = {
        "cidr": "192.168.0.0/24",
        "start": "192.168.0.10",
        "end": "192.168.0.20",
    }
    spec.update(kwargs)
    with pytest.raises(InvalidPool, match=message) as info:
        Pool.from_spec(**spec)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.describe().startswith(field + ": ")
    assert isinstance(info.value, ValueError)


def test_slash_31_and_32_use_every_address() -> None:
    p31 = Pool.from_spec("10.1.1.0/31", "10.1.1.0", "10.1.1.1")
    assert [p31.allocate(MAC_A), p31.allocate(MAC_B)] == [ip("10.1.1.0"), ip("10.1.1.1")]
    p32 = Pool.from_spec("10.1.1.7/32", "10.1.1.7", "10.1.1.7")
    assert p32.allocate(MAC_A) == ip("10.1.1.7")


def test_a_slash_8_costs_nothing_until_used() -> None:
    pool = Pool(IPv4Network("10.0.0.0/8"), ip("10.0.0.1"), ip("10.255.255.254"))
    assert pool.capacity == 2**24 - 2
    assert pool.allocate(MAC_A) == ip("10.0.0.1")
    assert pool.allocate(MAC_B, "10.200.0.1") == ip("10.200.0.1")
    assert pool.available == 2**24 - 4


def test_registry_keeps_first_pool_unless_replaced() -> None:
    ipam = Ipam()
    first = ipam.add("default/net", net48())
    assert ipam.add("default/net", net48()) is first
    ipam.replace("default/net", net48())
    assert ipam.pool("default/net") is not first
    assert list(ipam) == ["default/net"]
    assert "default/net" in ipam

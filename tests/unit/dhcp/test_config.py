"""ServerConfig and Lease: validated once, encoded once, immutable."""

import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest

from tests.unit.dhcp.helpers import LAB, SERVER_IP, ip
from vmdhcp.dhcp import (
    DEFAULT_LEASE_TIME,
    InvalidConfig,
    Lease,
    ServerConfig,
    StaticRoute,
    encode_domain_search,
)
from vmdhcp.dhcp.policy import ALWAYS_SENT, OPTIONAL_BY_PRIORITY, REPLY_FIXED_SIZE
from vmdhcp.errors import VmdhcpError

SUBNET = IPv4Network("192.168.48.0/21")


def test_lab_config_is_encoded_once_with_every_option() -> None:
    assert LAB.encoded == {
        54: SERVER_IP.packed,
        51: (300).to_bytes(4, "big"),
        58: (150).to_bytes(4, "big"),
        59: (262).to_bytes(4, "big"),
        1: b"\xff\xff\xf8\x00",
        3: ip("192.168.48.1").packed,
        6: ip("192.168.48.53").packed + ip("192.168.48.54").packed,
        15: b"lab.example",
        119: encode_domain_search(("lab.example", "svc.lab.example")),
        42: ip("192.168.48.123").packed,
        28: ip("192.168.55.255").packed,
    }
    assert LAB.server_id == SERVER_IP.packed
    assert LAB.effective_lease_time == 300


def test_plan_splits_always_sent_from_optional_options() -> None:
    plan = LAB.plan
    assert list(plan.lease) == [code for code in ALWAYS_SENT if code in LAB.encoded]
    assert list(plan.inform) == [54, 1, 3, 6, 15]
    assert plan.lease_size == REPLY_FIXED_SIZE + sum(len(v) + 2 for v in plan.lease.values())
    assert [code for code, _, _ in plan.optional] == [
        code for code in OPTIONAL_BY_PRIORITY if code in LAB.encoded or code == 12
    ]


def test_default_lease_time_is_upstreams_one_year() -> None:
    config = ServerConfig(server_ip=SERVER_IP, subnet=SUBNET)
    assert config.lease_time is None
    assert config.effective_lease_time == DEFAULT_LEASE_TIME == 365 * 24 * 3600
    assert config.encoded[51] == DEFAULT_LEASE_TIME.to_bytes(4, "big")


INVALID = [
    ("zero lease time", {"lease_time": 0}),
    ("negative lease time", {"lease_time": -5}),
    ("lease time over 32 bits", {"lease_time": 1 << 32}),
    ("mtu below 68", {"mtu": 67}),
    ("mtu over 16 bits", {"mtu": 65536}),
    ("search domain with a 64-byte label", {"domain_search": ("a" * 64 + ".example",)}),
    ("search domain not ASCII", {"domain_search": ("bücher.example",)}),
    ("empty search domain", {"domain_search": ("",)}),
]


@pytest.mark.parametrize(("case", "changes"), INVALID, ids=[r[0] for r in INVALID])
def test_invalid_pool_settings_fail_at_construction(case: str, changes: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig) as info:
        dataclasses.replace(LAB, **changes)
    assert isinstance(info.value, VmdhcpError)
    assert isinstance(info.value, ValueError)


def test_empty_domain_name_means_none() -> None:
    assert 15 not in dataclasses.replace(LAB, domain_name="").encoded


def test_lease_host_name_must_be_encodable() -> None:
    assert Lease(ip("10.0.0.1"), hostname="vm-1").hostname == "vm-1"
    with pytest.raises(InvalidConfig):
        Lease(ip("10.0.0.1"), hostname="")
    with pytest.raises(InvalidConfig):
        Lease(ip("10.0.0.1"), hostname="\ud800x")


def test_configs_and_leases_are_frozen_values() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LAB.router = None  # type: ignore[misc]
    lease = Lease(ip("10.0.0.1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.address = ip("10.0.0.2")  # type: ignore[misc]
    same = dataclasses.replace(LAB)
    assert same == LAB
    assert hash(same) == hash(LAB)
    assert dataclasses.replace(LAB, mtu=1400) != LAB
    assert Lease(ip("10.0.0.1"), "a") == Lease(ip("10.0.0.1"), "a")


def test_replace_recomputes_the_encoding() -> None:
    changed = dataclasses.replace(LAB, router=ip("192.168.48.254"))
    assert changed.encoded[3] == ip("192.168.48.254").packed
    assert LAB.encoded[3] == ip("192.168.48.1").packed


def test_routes_without_default_and_router_get_one() -> None:
    routes = (StaticRoute(IPv4Network("172.16.0.0/12"), IPv4Address("192.168.48.9")),)
    with_router = dataclasses.replace(LAB, classless_routes=routes)
    assert with_router.encoded[121].endswith(b"\x00" + ip("192.168.48.1").packed)
    without = dataclasses.replace(LAB, router=None, classless_routes=routes)
    assert without.encoded[121] == b"\x0c\xac\x10" + ip("192.168.48.9").packed

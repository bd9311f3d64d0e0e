import json
from ipaddress import IPv4Address
from typing import Any

import pytest

from vmdhcp.agent.state import PoolStateError, build_state, ntp_hostnames
from vmdhcp.api import IPPool

NTP = {"pool.ntp.org": (IPv4Address("10.9.9.1"), IPv4Address("10.9.9.2"))}


def test_leases_come_from_status_with_macs_normalised_and_marks_skipped(
    seed: dict[str, Any],
) -> None:
    state = build_state(IPPool.model_validate(seed), NTP)
    assert {mac: str(lease.address) for mac, lease in state.leases.items()} == {
        "c6:d6:82:39:d3:c3": "192.168.48.86",
        "fa:e7:60:2e:37:dd": "192.168.48.87",
    }
    assert state.problems == ()


def test_pool_options_become_one_server_config(seed: dict[str, Any]) -> None:
    c = build_state(IPPool.model_validate(seed), NTP).config
    assert c.server_ip == IPv4Address("192.168.48.77")
    assert c.router == IPv4Address("192.168.48.1")
    assert c.dns_servers == (IPv4Address("1.1.1.1"),)
    assert c.domain_name == "aibao.moe"
    assert c.domain_search == ("aibao.moe",)
    assert c.ntp_servers == (*NTP["pool.ntp.org"], IPv4Address("192.168.48.5"))
    assert c.effective_lease_time == 300


def test_unresolved_ntp_name_is_dropped_and_reported(seed: dict[str, Any]) -> None:
    state = build_state(IPPool.model_validate(seed), {})
    assert state.config.ntp_servers == (IPv4Address("192.168.48.5"),)
    assert state.problems == ("ntp server 'pool.ntp.org' did not resolve to an IPv4 address",)
    assert ntp_hostnames(IPPool.model_validate(seed)) == ("pool.ntp.org",)


@pytest.mark.parametrize("lease", [None, 0, -1])
def test_missing_or_non_positive_lease_time_serves_one_year(
    seed: dict[str, Any], lease: int | None
) -> None:
    seed["spec"]["ipv4Config"]["leaseTime"] = lease
    assert build_state(IPPool.model_validate(seed), NTP).config.effective_lease_time == 31536000


def test_no_router_means_no_router(seed: dict[str, Any]) -> None:
    del seed["spec"]["ipv4Config"]["router"]
    assert build_state(IPPool.model_validate(seed), NTP).config.router is None


def test_bad_allocations_are_skipped_with_reasons_and_duplicates_resolved_by_address(
    seed: dict[str, Any],
) -> None:
    seed["status"]["ipv4"]["allocated"] = {
        "192.168.48.83": "aa:bb:cc:dd:ee:01",
        "192.168.48.82": "AA:BB:CC:DD:EE:01",  # same MAC twice: the lower address wins
        "192.168.48.84": "nope",
        "300.1.1.1": "aa:bb:cc:dd:ee:02",
    }
    state = build_state(IPPool.model_validate(seed), NTP)
    assert {m: str(x.address) for m, x in state.leases.items()} == {
        "aa:bb:cc:dd:ee:01": "192.168.48.82"
    }
    assert len(state.problems) == 3
    assert any("allocated both 192.168.48.82 and 192.168.48.83" in p for p in state.problems)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("serverIP",), "192.168.48.777", "serverIP"),
        (("cidr",), "banana", "cidr"),
        (("dns",), ["1.1.1.1", "dns.example"], "dns"),
        (("router",), "x", "router"),
    ],
)
def test_unservable_pools_raise_with_the_field(
    seed: dict[str, Any], path: tuple[str, ...], value: object, message: str
) -> None:
    seed["spec"]["ipv4Config"][path[0]] = value
    with pytest.raises(PoolStateError, match=message):
        build_state(IPPool.model_validate(seed), NTP)


def test_missing_ipv4_config_is_refused(seed: dict[str, Any]) -> None:
    del seed["spec"]["ipv4Config"]
    with pytest.raises(PoolStateError, match="ipv4Config is missing"):
        build_state(IPPool.model_validate(seed), NTP)


def test_lease_dump_has_upstreams_shape(seed: dict[str, Any]) -> None:
    dump = build_state(IPPool.model_validate(seed), NTP).lease_dump()
    assert list(dump) == ["c6:d6:82:39:d3:c3", "fa:e7:60:2e:37:dd"]
    record = json.loads(dump["c6:d6:82:39:d3:c3"])
    assert record == {
        "ServerIP": "192.168.48.77",
        "ClientIP": "192.168.48.86",
        "SubnetMask": "////AA==",
        "Router": "192.168.48.1",
        "DNS": ["1.1.1.1"],
        "DomainName": "aibao.moe",
        "DomainSearch": ["aibao.moe"],
        "NTP": ["10.9.9.1", "10.9.9.2", "192.168.48.5"],
        "LeaseTime": 300,
    }
    assert list(record) == [
        "ServerIP",
        "ClientIP",
        "SubnetMask",
        "Router",
        "DNS",
        "DomainName",
        "DomainSearch",
        "NTP",
        "LeaseTime",
    ]

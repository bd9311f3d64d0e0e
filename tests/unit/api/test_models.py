from ipaddress import IPv4Address

import pytest
from pydantic import ValidationError

from vmdhcp.api import DEFAULT_LEASE_TIME, IPPool, VirtualMachineNetworkConfig, split_network_name
from vmdhcp.ipam import InvalidPool

SEED_POOL = {
    "apiVersion": "network.harvesterhci.io/v1alpha1",
    "kind": "IPPool",
    "metadata": {"name": "net-48", "namespace": "default"},
    "spec": {
        "ipv4Config": {
            "serverIP": "192.168.48.77",
            "cidr": "192.168.48.0/24",
            "pool": {
                "start": "192.168.48.81",
                "end": "192.168.48.90",
                "exclude": ["192.168.48.81", "192.168.48.90"],
            },
            "router": "192.168.48.1",
            "dns": ["1.1.1.1"],
            "domainName": "aibao.moe",
            "domainSearch": ["aibao.moe"],
            "ntp": ["pool.ntp.org"],
            "leaseTime": 300,
        },
        "networkName": "default/net-48",
    },
    "status": {
        "ipv4": {"allocated": {"192.168.48.81": "EXCLUDED"}, "used": 0, "available": 8},
        "lastUpdate": "2026-01-02T03:04:05Z",
        "conditions": [{"type": "CacheReady", "status": "True", "lastUpdateTime": "x"}],
    },
}


def test_ippool_round_trips_through_the_wire_form() -> None:
    pool = IPPool.model_validate(SEED_POOL)
    assert pool.spec.ipv4_config is not None
    assert pool.spec.ipv4_config.server_ip == "192.168.48.77"
    assert pool.spec.ipv4_config.effective_lease_time == 300
    wire = pool.to_wire()
    assert wire["spec"] == SEED_POOL["spec"]
    assert wire["status"]["ipv4"] == SEED_POOL["status"]["ipv4"]
    assert wire["status"]["lastUpdate"] == "2026-01-02T03:04:05Z"


def test_ippool_config_builds_its_ipam_pool() -> None:
    config = IPPool.model_validate(SEED_POOL).spec.ipv4_config
    assert config is not None
    pool = config.to_pool("default/net-48")
    assert pool.capacity == 8
    assert pool.allocate("FA:CF:8E:50:82:FC") == IPv4Address("192.168.48.82")


@pytest.mark.parametrize("lease", [None, 0, -5])
def test_unset_or_non_positive_lease_time_means_one_year(lease: int | None) -> None:
    body = {"serverIP": "10.0.0.1", "cidr": "10.0.0.0/24", "pool": {"start": "a", "end": "b"}}
    pool = IPPool.model_validate(
        {"spec": {"networkName": "n", "ipv4Config": {**body, "leaseTime": lease}}}
    )
    assert pool.spec.ipv4_config is not None
    assert pool.spec.ipv4_config.effective_lease_time == DEFAULT_LEASE_TIME == 31536000


def test_bad_addresses_surface_as_invalid_pool_with_the_field_path() -> None:
    body = {
        "serverIP": "10.0.0.1",
        "cidr": "10.0.0.0/24",
        "pool": {"start": "10.0.0.10", "end": "10.0.0.20", "exclude": ["10.0.0.300"]},
    }
    config = IPPool.model_validate({"spec": {"networkName": "n", "ipv4Config": body}})
    assert config.spec.ipv4_config is not None
    with pytest.raises(InvalidPool) as info:
        config.spec.ipv4_config.to_pool()
    assert info.value.field == "spec.ipv4Config.pool.exclude[0]"


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(ValidationError) as info:
        IPPool.model_validate({"spec": {"ipv4Config": {"cidr": "10.0.0.0/24"}}})
    missing = {".".join(map(str, e["loc"])) for e in info.value.errors()}
    assert missing == {
        "spec.networkName",
        "spec.ipv4Config.serverIP",
        "spec.ipv4Config.pool",
    }


def test_vmnetcfg_upper_case_mac_is_normalised() -> None:
    cfg = VirtualMachineNetworkConfig.model_validate(
        {
            "metadata": {"name": "test-vm", "namespace": "default"},
            "spec": {
                "vmName": "test-vm",
                "networkConfigs": [{"macAddress": "FA:CF:8E:50:82:FC", "networkName": "default/n"}],
            },
        }
    )
    assert cfg.spec.network_configs is not None
    assert cfg.spec.network_configs[0].mac == "fa:cf:8e:50:82:fc"
    assert cfg.to_wire()["spec"]["networkConfigs"][0]["macAddress"] == "FA:CF:8E:50:82:FC"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("default/net-48", ("default", "net-48")),
        ("net-48", ("default", "net-48")),
        ("/net-48", ("default", "net-48")),
        ("team-a/vlan10", ("team-a", "vlan10")),
    ],
)
def test_network_names_default_to_the_default_namespace(
    name: str, expected: tuple[str, str]
) -> None:
    assert split_network_name(name) == expected

"""IPPool rules beyond upstream's tables: its fixes, the additions, reporting and ratcheting."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.validation.builders import cluster, ippool, nad, vmnetcfg
from vmdhcp.validation import (
    ValidationError,
    ippool_problems,
    validate_ippool_create,
    validate_ippool_delete,
    validate_ippool_update,
)

GOOD: dict[str, Any] = {
    "cidr": "192.168.0.0/24",
    "server": "192.168.0.2",
    "router": "192.168.0.1",
    "start": "192.168.0.10",
    "end": "192.168.0.200",
}


def problems(**fields: Any) -> list[str]:
    return ippool_problems(ippool(**{**GOOD, **fields}), cluster())


def test_a_complete_pool_passes() -> None:
    assert problems(exclude=["192.168.0.50"], dns=["1.1.1.1"], lease_time=300) == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"start": "192.168.0.20", "end": "192.168.0.10"},
            "end ip address 192.168.0.10 is less than start ip address 192.168.0.20",
        ),
        ({"exclude": ["192.168.0.300"]}, 'ParseAddr("192.168.0.300"): IPv4 field has value >255'),
        ({"exclude": ["fe80::1"]}, "ip address fe80::1 is not an IPv4 address"),
        ({"exclude": ["10.0.0.1"]}, "exclude ip 10.0.0.1 is not within subnet"),
        ({"dns": ["1.1.1.1", "8.8.8"]}, "dns server 8.8.8 is not an IPv4 address"),
        ({"dns": ["2606:4700::1111"]}, "dns server 2606:4700::1111 is not an IPv4 address"),
        ({"dns": ["dns.example.com"]}, "dns server dns.example.com is not an IPv4 address"),
        ({"lease_time": 2**32}, "lease time 4294967296 is more than 4294967295 seconds"),
        ({"exclude": ["192.168.0.2"]}, "server ip 192.168.0.2 is already occupied"),
        ({"cidr": "2001:db8::/64"}, "cidr 2001:db8::/64 is not an IPv4 network"),
        ({"server": "fe80::1"}, "ip address fe80::1 is not an IPv4 address"),
    ],
)
def test_additions(fields: dict[str, Any], reason: str) -> None:
    assert problems(**fields) == [reason]


@pytest.mark.parametrize("lease_time", [None, 0, -5, 1, 4294967295])
def test_lease_times_the_crd_documents_are_accepted(lease_time: int | None) -> None:
    """Unset, 0 or negative means one year (the CRD's description, upstream's agent and
    upstream's webhook, which has no lease time rule); 4294967295 means infinite."""
    assert problems(lease_time=lease_time) == []


def test_a_single_address_range_is_fine() -> None:
    assert problems(start="192.168.0.10", end="192.168.0.10") == []


def test_start_after_end_is_refused_on_update_too() -> None:
    bad = ippool(**{**GOOD, "start": "192.168.0.20", "end": "192.168.0.10"})
    with pytest.raises(ValidationError, match="is less than start ip address"):
        validate_ippool_update(None, bad, cluster())


def test_every_reason_is_reported_in_upstreams_order() -> None:
    pool = ippool(
        **{**GOOD, "cidr": "10.53.1.0/24", "router": "192.168.1.1", "server": "10.53.1.2"},
        network="default/missing",
        lease_time=2**32,
    )
    with pytest.raises(ValidationError) as caught:
        validate_ippool_create(pool, cluster())
    assert caught.value.reasons == (
        'network-attachment-definitions.k8s.cni.cncf.io "missing" not found',
        "cidr 10.53.1.0/24 overlaps cluster service cidr 10.53.0.0/16",
        "start ip 192.168.0.10 is not within subnet",
        "end ip 192.168.0.200 is not within subnet",
        "router ip 192.168.1.1 is not within subnet",
        "lease time 4294967296 is more than 4294967295 seconds",
    )
    assert str(caught.value) == "cannot create IPPool default/net-1 because " + "; ".join(
        caught.value.reasons
    )


def test_a_missing_ipv4_config_is_an_invalid_cidr() -> None:
    pool = ippool()
    bare = pool.model_copy(update={"spec": pool.spec.model_copy(update={"ipv4_config": None})})
    assert ippool_problems(bare, cluster()) == ["invalid CIDR address: "]


# -- one IPPool per network ---------------------------------------------------------------


def test_a_second_pool_on_a_network_is_refused() -> None:
    first = ippool("other", "first", network="net-1")  # `net-1` means default/net-1
    view = cluster(ippools=[first])
    with pytest.raises(ValidationError) as caught:
        validate_ippool_create(ippool(**GOOD), view)
    assert caught.value.reasons == (
        "network default/net-1 is already served by IPPool other/first",
    )


def test_the_pool_itself_does_not_count_as_another() -> None:
    pool = ippool(**GOOD)
    validate_ippool_create(pool, cluster(ippools=[pool]))
    validate_ippool_update(pool, pool, cluster(ippools=[pool]))


def test_pools_on_other_networks_do_not_count() -> None:
    view = cluster(
        nads=[nad(), nad(name="net-2")],
        ippools=[ippool("default", "net-2", network="default/net-2", cidr="10.0.0.0/24")],
    )
    validate_ippool_create(ippool(**GOOD), view)


# -- updates: upstream's skip for objects being deleted, and ratcheting --------------------


def test_a_pool_being_deleted_is_not_checked_on_update() -> None:
    bad = ippool(**{**GOOD, "server": "10.0.0.1"}, deleting=True)
    validate_ippool_update(bad, bad, cluster(nads=[]))


def test_update_refuses_only_what_it_introduces() -> None:
    """A pool that was already broken (here: its NAD is gone, and its lease time predates
    the rule) can still get labels, finalizers and a fixed DNS list."""
    old = ippool(**GOOD, lease_time=2**32, dns=["8.8.8"])
    fixed = ippool(**GOOD, lease_time=2**32, dns=["8.8.8.8"])
    validate_ippool_update(old, fixed, cluster(nads=[]))
    worse = ippool(**GOOD, lease_time=2**32, dns=["8.8.8"], exclude=["10.0.0.1"])
    with pytest.raises(ValidationError) as caught:
        validate_ippool_update(old, worse, cluster(nads=[]))
    assert caught.value.reasons == ("exclude ip 10.0.0.1 is not within subnet",)
    assert str(caught.value).startswith("cannot update IPPool default/net-1 because ")


def test_without_the_old_object_every_problem_counts() -> None:
    pool = ippool(**GOOD, lease_time=2**32)
    with pytest.raises(ValidationError):
        validate_ippool_update(None, pool, cluster())


# -- deletion -----------------------------------------------------------------------------


def test_delete_is_refused_while_vmnetcfgs_use_the_network() -> None:
    pool = ippool(**GOOD)
    users = [
        vmnetcfg("ns-b", "vm-2", [("default/net-1", "52:54:00:00:00:02")]),
        vmnetcfg("ns-a", "vm-1", [("net-1", "52:54:00:00:00:01")]),
        vmnetcfg("ns-a", "other", [("default/net-2", "52:54:00:00:00:03")]),
    ]
    with pytest.raises(ValidationError) as caught:
        validate_ippool_delete(pool, cluster(ippools=[pool], vmnetcfgs=users))
    assert str(caught.value) == (
        "cannot delete IPPool default/net-1 because it's still used by "
        "VirtualMachineNetworkConfig(s) ns-a/vm-1, ns-b/vm-2, which must be removed at first"
    )


def test_delete_protection_follows_the_network_not_the_pool_name() -> None:
    """harvester#10380: upstream looks for users of `<pool ns>/<pool name>`, so a pool named
    differently from its NAD could be deleted from under its VMs."""
    pool = ippool("tenant", "pool-a", network="default/net-1", **GOOD)
    user = vmnetcfg("default", "vm-1", [("default/net-1", "52:54:00:00:00:01")])
    with pytest.raises(ValidationError, match="cannot delete IPPool tenant/pool-a because"):
        validate_ippool_delete(pool, cluster(ippools=[pool], vmnetcfgs=[user]))
    unrelated = vmnetcfg("tenant", "vm-2", [("tenant/pool-a", "52:54:00:00:00:02")])
    validate_ippool_delete(pool, cluster(ippools=[pool], vmnetcfgs=[unrelated]))


def test_an_unused_pool_can_be_deleted() -> None:
    validate_ippool_delete(ippool(**GOOD), cluster())


def test_one_of_two_pools_on_a_network_can_be_deleted() -> None:
    """Two pools on one network predate the rule against it; removing one must work."""
    pool, twin = ippool(**GOOD), ippool("default", "twin", **GOOD)
    user = vmnetcfg("default", "vm-1", [("default/net-1", "52:54:00:00:00:01")])
    validate_ippool_delete(pool, cluster(ippools=[pool, twin], vmnetcfgs=[user]))
    with pytest.raises(ValidationError):
        validate_ippool_delete(twin, cluster(ippools=[twin], vmnetcfgs=[user]))

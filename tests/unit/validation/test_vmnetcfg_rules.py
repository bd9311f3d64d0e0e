"""VirtualMachineNetworkConfig rules beyond upstream: MACs, static addresses (upstream PR
157's messages), updates."""

from __future__ import annotations

import pytest

from tests.unit.validation.builders import cluster, ippool, nad, vmnetcfg
from vmdhcp.api import VirtualMachineNetworkConfig
from vmdhcp.validation import (
    Snapshot,
    ValidationError,
    static_ip_problem,
    validate_vmnetcfg_create,
    validate_vmnetcfg_update,
    vmnetcfg_problems,
)

NET = "default/net-1"
NET2 = "default/net-2"
MAC = "52:54:00:00:00:01"
OTHER_MAC = "52:54:00:00:00:99"

POOL = ippool(
    cidr="192.168.0.0/24",
    server="192.168.0.2",
    router="192.168.0.1",
    start="192.168.0.10",
    end="192.168.0.200",
    exclude=["192.168.0.50"],
    allocated={
        "192.168.0.20": OTHER_MAC.upper(),
        "192.168.0.21": MAC,
        "192.168.0.60": "EXCLUDED",
        "192.168.0.61": "DECLINED",
        "192.168.0.2": "RESERVED",
    },
)
POOL2 = ippool(
    "default",
    "net-2",
    network=NET2,
    cidr="10.0.0.0/24",
    server="10.0.0.2",
    start="10.0.0.10",
    end="10.0.0.20",
)


def view(*others: VirtualMachineNetworkConfig) -> Snapshot:
    return cluster(
        nads=[nad(pool=("default", "net-1")), nad(name="net-2", pool=("default", "net-2"))],
        ippools=[POOL, POOL2],
        vmnetcfgs=others,
    )


def problems(
    *nics: tuple[str, str] | tuple[str, str, str],
    others: tuple[VirtualMachineNetworkConfig, ...] = (),
) -> list[str]:
    return vmnetcfg_problems(vmnetcfg(nics=nics), view(*others))


def test_a_plain_config_passes() -> None:
    assert problems((NET, MAC), (NET2, MAC)) == []  # one MAC on two networks is fine


def test_any_mac_notation_passes() -> None:
    assert problems((NET, "52-54-00-00-00-01")) == []


def test_a_malformed_mac_is_refused() -> None:
    """The CRD's pattern refuses these already; the controller re-checks older objects."""
    assert problems((NET, "52:54:00:00:00")) == [
        "mac address '52:54:00:00:00' is not a valid 48-bit MAC address"
    ]


def test_a_mac_twice_on_one_network_is_refused() -> None:
    assert problems((NET, MAC), (NET, MAC.upper())) == [
        f"duplicate mac address {MAC} on network {NET}"
    ]


def test_a_mac_used_by_another_config_on_the_network_is_refused() -> None:
    other = vmnetcfg("team", "vm-9", [("net-1", MAC.replace(":", "-").upper())])
    assert problems((NET, MAC), others=(other,)) == [
        f"mac address {MAC} is already used on network {NET} "
        "by VirtualMachineNetworkConfig team/vm-9"
    ]
    assert problems((NET2, MAC), others=(other,)) == []


def test_the_config_itself_is_not_another_user_of_its_mac() -> None:
    cfg = vmnetcfg(nics=[(NET, MAC)])
    assert vmnetcfg_problems(cfg, view(cfg)) == []


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("192.168.0.15", None),
        ("192.168.0.21", None),  # already this MAC's
        ("0.0.0.0", None),  # "any address", as upstream's IPAM reads it
        ("192.168.0.256", "ip address 192.168.0.256 is not an IPv4 address"),
        ("fe80::1", "ip address fe80::1 is not an IPv4 address"),
        ("10.1.1.1", "ip address 10.1.1.1 is not within subnet 192.168.0.0/24"),
        ("192.168.0.0", "ip address 192.168.0.0 is the same as network ip"),
        ("192.168.0.255", "ip address 192.168.0.255 is the same as broadcast ip"),
        (
            "192.168.0.201",
            "ip address 192.168.0.201 is not within pool range 192.168.0.10-192.168.0.200",
        ),
        (
            "192.168.0.5",
            "ip address 192.168.0.5 is not within pool range 192.168.0.10-192.168.0.200",
        ),
        ("192.168.0.50", "ip address 192.168.0.50 is not allocatable"),  # excluded in spec
        ("192.168.0.60", "ip address 192.168.0.60 is not allocatable"),  # EXCLUDED in status
        (
            "192.168.0.61",
            "ip address 192.168.0.61 is set aside: a VM declined it (another host uses it on "
            "the network); pin another address, or wait until the controller gives it back",
        ),
        (
            "192.168.0.20",
            f"ip address 192.168.0.20 is already allocated to mac {OTHER_MAC.upper()}",
        ),
    ],
)
def test_static_address(ip: str, reason: str | None) -> None:
    assert problems((NET, MAC, ip)) == ([] if reason is None else [reason])
    assert static_ip_problem(ip, POOL, MAC) == reason


def test_server_and_router_are_not_allocatable() -> None:
    pool = ippool(
        cidr="192.168.0.0/24",
        server="192.168.0.12",
        router="192.168.0.11",
        start="192.168.0.10",
        end="192.168.0.20",
    )
    assert static_ip_problem("192.168.0.12", pool) == "ip address 192.168.0.12 is not allocatable"
    assert static_ip_problem("192.168.0.11", pool) == "ip address 192.168.0.11 is not allocatable"
    assert static_ip_problem("192.168.0.13", pool) is None


def test_a_static_address_on_an_unresolvable_network_is_still_parsed() -> None:
    assert problems(("default/gone", MAC, "1.2.3")) == [
        'network-attachment-definitions.k8s.cni.cncf.io "gone" not found',
        "ip address 1.2.3 is not an IPv4 address",
    ]


def test_one_address_asked_twice_is_refused() -> None:
    assert problems((NET, MAC, "192.168.0.15"), (NET, OTHER_MAC, "192.168.0.15")) == [
        f"duplicate desired ip 192.168.0.15 on network {NET}"
    ]
    other = vmnetcfg("team", "vm-9", [(NET, "52:54:00:00:00:42", "192.168.0.15")])
    assert problems((NET, MAC, "192.168.0.15"), others=(other,)) == [
        f"duplicate desired ip 192.168.0.15 on network {NET}"
    ]


def test_refusals_name_the_config() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_vmnetcfg_create(vmnetcfg("ns", "vm-1", [(NET, MAC, "10.1.1.1")]), view())
    assert str(caught.value) == (
        "cannot create VirtualMachineNetworkConfig ns/vm-1 because "
        "ip address 10.1.1.1 is not within subnet 192.168.0.0/24"
    )


def test_updates_are_validated() -> None:
    """Upstream checks creates only, so a new network or address slipped through."""
    old = vmnetcfg(nics=[(NET, MAC)])
    new = vmnetcfg(nics=[(NET, MAC, "192.168.0.201")])
    with pytest.raises(ValidationError) as caught:
        validate_vmnetcfg_update(old, new, view())
    assert str(caught.value).startswith(
        "cannot update VirtualMachineNetworkConfig default/test-vmnetcfg because ip address"
    )


def test_updates_refuse_only_what_they_introduce() -> None:
    old = vmnetcfg(nics=[("default/gone", MAC)])
    validate_vmnetcfg_update(old, vmnetcfg(nics=[("default/gone", MAC)]), view())
    with pytest.raises(ValidationError) as caught:
        validate_vmnetcfg_update(
            old, vmnetcfg(nics=[("default/gone", MAC), ("default/lost", MAC)]), view()
        )
    assert caught.value.reasons == (
        'network-attachment-definitions.k8s.cni.cncf.io "lost" not found',
    )


def test_a_config_being_deleted_is_not_checked_on_update() -> None:
    gone = vmnetcfg(nics=[("default/gone", MAC)], deleting=True)
    validate_vmnetcfg_update(None, gone, view())

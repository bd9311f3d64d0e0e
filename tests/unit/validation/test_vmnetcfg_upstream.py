"""Upstream's VirtualMachineNetworkConfig validator table (`TestValidator_Create`, 6 cases).

Upstream only checks that an error is or is not returned; here the messages are checked
too. Upstream's builder leaves the MAC empty, which this project's CRD no longer accepts,
so the NIC has a MAC.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.validation.builders import cluster, ippool, nad, vmnetcfg
from vmdhcp.validation import ValidationError, validate_vmnetcfg_create

NETWORK = "default/test-net"
MAC = "52:54:00:00:00:01"
PREFIX = "cannot create VirtualMachineNetworkConfig default/test-vmnetcfg because "

CASES = [
    (
        "ippool name different from nad name with the nad properly labeled",
        [nad("default", "test-net", pool=("default", "test-pool"))],
        [ippool("default", "test-pool", network=NETWORK)],
        None,
    ),
    (
        "ippool and nad share the same name with the nad properly labeled",
        [nad("default", "test-net", pool=("default", "test-net"))],
        [ippool("default", "test-net", network=NETWORK)],
        None,
    ),
    (
        "non-existed ippool referenced",
        [nad("default", "test-net", pool=("default", "test-pool"))],
        [],
        'ippools.network.harvesterhci.io "test-pool" not found',
    ),
    (
        "non-existed nad referenced",
        [],
        [ippool("default", "test-pool", network=NETWORK)],
        'network-attachment-definitions.k8s.cni.cncf.io "test-net" not found',
    ),
    (
        "nad referenced does not have proper labels to associate with the target ippool",
        [nad("default", "test-net")],
        [ippool("default", "test-pool")],
        "network.harvesterhci.io/ippool-namespace label not found",
    ),
    (
        "nad referenced has incomplete labels set to associate with the target ippool",
        [nad("default", "test-net", labels={"network.harvesterhci.io/ippool-name": "test-pool"})],
        [ippool("default", "test-pool")],
        "network.harvesterhci.io/ippool-namespace label not found",
    ),
]


@pytest.mark.parametrize(
    ("nads", "ippools", "reason"),
    [pytest.param(nads, pools, reason, id=name) for name, nads, pools, reason in CASES],
)
def test_validator_create(nads: list[Any], ippools: list[Any], reason: str | None) -> None:
    cfg = vmnetcfg(nics=[(NETWORK, MAC)])
    view = cluster(nads=nads, ippools=ippools)
    if reason is None:
        validate_vmnetcfg_create(cfg, view)
        return
    with pytest.raises(ValidationError) as caught:
        validate_vmnetcfg_create(cfg, view)
    assert str(caught.value) == PREFIX + reason


def test_nad_with_namespace_label_only_names_the_missing_name_label() -> None:
    view = cluster(
        nads=[
            nad(
                "default",
                "test-net",
                labels={"network.harvesterhci.io/ippool-namespace": "default"},
            )
        ]
    )
    with pytest.raises(ValidationError) as caught:
        validate_vmnetcfg_create(vmnetcfg(nics=[(NETWORK, MAC)]), view)
    assert caught.value.reasons == ("network.harvesterhci.io/ippool-name label not found",)

"""Upstream's IPPool validator tables (`TestValidator_Create`, 20 cases, and
`TestValidator_Update`, 25 cases), with upstream's case names and messages.

Constants as upstream's: the pool and its NAD are default/net-1, the service CIDR
10.53.0.0/16; empty addresses are fields the mutator fills in.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

import pytest

from tests.unit.validation.builders import cluster, ippool
from vmdhcp.validation import ValidationError, validate_ippool_create, validate_ippool_update

SERVICE_CIDR = IPv4Network("10.53.0.0/16")
CIDR = "192.168.0.0/24"
OVERLAP = "10.53.0.0/24"

#: (name, IPPool fields, reason or None); shared by both tables, as upstream's are.
COMMON: list[tuple[str, dict[str, Any], str | None]] = [
    (
        "invalid server ip which is out of range",
        {"server": "192.168.100.2"},
        "server ip 192.168.100.2 is not within subnet",
    ),
    (
        "invalid server ip which is the same as network ip",
        {"cidr": "192.168.0.128/25", "server": "192.168.0.128"},
        "server ip 192.168.0.128 is the same as network ip",
    ),
    (
        "invalid server ip which is the same as broadcast ip",
        {"cidr": "192.168.0.0/25", "server": "192.168.0.127"},
        "server ip 192.168.0.127 is the same as broadcast ip",
    ),
    (
        "invalid server ip which is the same as router ip",
        {"cidr": "192.168.0.254/24", "server": "192.168.0.254", "router": "192.168.0.254"},
        "server ip 192.168.0.254 is the same as router ip",
    ),
    (
        "invalid router ip which is malformed",
        {"router": "192.168.0.1000"},
        'ParseAddr("192.168.0.1000"): IPv4 field has value >255',
    ),
    (
        "invalid router ip which is out of subnet",
        {"router": "192.168.1.1"},
        "router ip 192.168.1.1 is not within subnet",
    ),
    (
        "invalid router ip which is the same as network ip",
        {"router": "192.168.0.0"},
        "router ip 192.168.0.0 is the same as network ip",
    ),
    (
        "invalid router ip which is the same as broadcast ip",
        {"router": "192.168.0.255"},
        "router ip 192.168.0.255 is the same as broadcast ip",
    ),
    (
        "invalid start ip which is malformed",
        {"start": "192.168.0.1000"},
        'ParseAddr("192.168.0.1000"): IPv4 field has value >255',
    ),
    (
        "invalid start ip which is out of subnet",
        {"start": "192.168.1.100"},
        "start ip 192.168.1.100 is not within subnet",
    ),
    (
        "invalid start ip which is the same as network ip",
        {"start": "192.168.0.0"},
        "start ip 192.168.0.0 is the same as network ip",
    ),
    (
        "invalid start ip which is the same as broadcast ip",
        {"start": "192.168.0.255"},
        "start ip 192.168.0.255 is the same as broadcast ip",
    ),
    (
        "invalid end ip which is malformed",
        {"end": "192.168.0.1000"},
        'ParseAddr("192.168.0.1000"): IPv4 field has value >255',
    ),
    (
        "invalid end ip which is out of subnet",
        {"end": "192.168.1.100"},
        "end ip 192.168.1.100 is not within subnet",
    ),
    (
        "invalid emd ip which is the same as network ip",  # sic, upstream's name
        {"end": "192.168.0.0"},
        "end ip 192.168.0.0 is the same as network ip",
    ),
    (
        "invalid end ip which is the same as broadcast ip",
        {"end": "192.168.0.255"},
        "end ip 192.168.0.255 is the same as broadcast ip",
    ),
    (
        "non-existed network name",
        {"network": "nonexist"},
        'network-attachment-definitions.k8s.cni.cncf.io "nonexist" not found',
    ),
    (
        # upstream read it from the node's rke2 node-args then; now both come from the flag
        "cidr overlaps cluster's service cidr (retrieved from the node-args annotation)",
        {"cidr": OVERLAP},
        f"cidr {OVERLAP} overlaps cluster service cidr 10.53.0.0/16",
    ),
    (
        "cidr overlaps cluster's service cidr (default service cidr)",
        {"cidr": OVERLAP},
        f"cidr {OVERLAP} overlaps cluster service cidr 10.53.0.0/16",
    ),
]

CREATE = [
    ("valid server ip", {"server": "192.168.0.2"}, None),
    *COMMON,
]

#: (name, old fields or None, new fields, reason or None)
UPDATE: list[tuple[str, dict[str, Any] | None, dict[str, Any], str | None]] = [
    ("valid server ip", {"server": "192.168.0.2"}, {"server": "192.168.0.254"}, None),
    *[
        (name, {"server": "192.168.0.2", "router": fields.get("router")}, fields, reason)
        for name, fields, reason in COMMON[:4]
    ],
    (
        "invalid server ip which collides with other allocated ips",
        {"server": "192.168.0.2", "allocated": {"192.168.0.100": "11:22:33:44:55:66"}},
        {"server": "192.168.0.100", "allocated": {"192.168.0.100": "11:22:33:44:55:66"}},
        "server ip 192.168.0.100 is already occupied",
    ),
    *[(name, None, fields, reason) for name, fields, reason in COMMON[4:]],
    (
        "server ip collides with excluded ip",
        None,
        {"server": "192.168.0.100", "allocated": {"192.168.0.100": "EXCLUDED"}},
        "server ip 192.168.0.100 is already occupied",
    ),
    (
        # upstream lists this case twice; here the second one has the exclude in the spec too
        "server ip collides with excluded ip (excluded in spec)",
        None,
        {
            "server": "192.168.0.100",
            "exclude": ["192.168.0.100"],
            "allocated": {"192.168.0.100": "EXCLUDED"},
        },
        "server ip 192.168.0.100 is already occupied",
    ),
    (
        "server ip within the pool range",
        None,
        {"server": "192.168.0.2", "allocated": {"192.168.0.2": "RESERVED"}},
        None,
    ),
    (
        # upstream lists this case twice; here the second one spells the range out
        "server ip within the pool range (explicit range)",
        None,
        {
            "server": "192.168.0.2",
            "start": "192.168.0.1",
            "end": "192.168.0.254",
            "allocated": {"192.168.0.2": "RESERVED", "192.168.0.3": "11:22:33:44:55:66"},
        },
        None,
    ),
]


def test_tables_have_upstreams_sizes() -> None:
    assert (len(CREATE), len(UPDATE)) == (20, 25)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [pytest.param(fields, reason, id=name) for name, fields, reason in CREATE],
)
def test_validator_create(fields: dict[str, Any], reason: str | None) -> None:
    pool = ippool(**{"cidr": CIDR, **fields})
    if reason is None:
        validate_ippool_create(pool, cluster(), service_cidr=SERVICE_CIDR)
        return
    with pytest.raises(ValidationError) as caught:
        validate_ippool_create(pool, cluster(), service_cidr=SERVICE_CIDR)
    assert str(caught.value) == f"cannot create IPPool default/net-1 because {reason}"


@pytest.mark.parametrize(
    ("old_fields", "new_fields", "reason"),
    [pytest.param(old, new, reason, id=name) for name, old, new, reason in UPDATE],
)
def test_validator_update(
    old_fields: dict[str, Any] | None, new_fields: dict[str, Any], reason: str | None
) -> None:
    old = None if old_fields is None else ippool(**{"cidr": CIDR, **old_fields})
    new = ippool(**{"cidr": CIDR, **new_fields})
    if reason is None:
        validate_ippool_update(old, new, cluster(), service_cidr=SERVICE_CIDR)
        return
    with pytest.raises(ValidationError) as caught:
        validate_ippool_update(old, new, cluster(), service_cidr=SERVICE_CIDR)
    assert str(caught.value) == f"cannot update IPPool default/net-1 because {reason}"

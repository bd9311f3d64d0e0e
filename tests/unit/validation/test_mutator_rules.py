"""The mutator's departures from upstream: malformed start, end and server IP are refused
rather than silently replaced, and only a range the defaults produce is judged here."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.validation.test_mutator_upstream import POOL, SERVER, add, body
from vmdhcp.validation import ValidationError, ippool_defaults, mutate_ippool_create


def refusal(given: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        mutate_ippool_create(given)
    prefix = "cannot create IPPool default/net-1 because "
    assert str(caught.value).startswith(prefix)
    return str(caught.value).removeprefix(prefix)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            {"pool": {"start": "192.168.0.1000"}},
            'ParseAddr("192.168.0.1000"): IPv4 field has value >255',
        ),
        (
            {"pool": {"end": "192.168.0.x"}},
            'ParseAddr("192.168.0.x"): unexpected character (at "x")',
        ),
        ({"serverIP": "192.168.0"}, 'ParseAddr("192.168.0"): IPv4 address too short'),
        ({"pool": {"exclude": ["192.168.0.1", "nope"]}}, 'ParseAddr("nope"): unable to parse IP'),
    ],
)
def test_malformed_addresses_are_refused_not_replaced(config: dict[str, Any], reason: str) -> None:
    assert refusal(body("192.168.0.0/24", **config)) == reason


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (body("192.168.0.0/33"), "invalid CIDR address: 192.168.0.0/33"),
        (
            {"metadata": {"namespace": "default", "name": "net-1"}, "spec": {}},
            "invalid CIDR address: ",
        ),
        (body("2001:db8::/64"), "cidr 2001:db8::/64 is not an IPv4 network"),
    ],
)
def test_no_usable_cidr_is_refused(given: dict[str, Any], reason: str) -> None:
    assert refusal(given) == reason


def test_a_range_inverted_by_a_default_is_refused() -> None:
    given = body("192.168.0.0/24", serverIP="192.168.0.2", pool={"end": "192.168.0.0"})
    assert refusal(given) == "invalid pool range"


def test_a_range_written_inverted_is_left_to_the_validator() -> None:
    given = body("192.168.0.0/24", pool={"start": "192.168.0.20", "end": "192.168.0.10"})
    assert mutate_ippool_create(given) == [add(SERVER, "192.168.0.1")]


def test_an_unparsable_router_is_left_to_the_validator() -> None:
    assert mutate_ippool_create(body("192.168.0.0/24", router="x", serverIP="192.168.0.9")) == [
        add(POOL, {"start": "192.168.0.1", "end": "192.168.0.254"})
    ]


def test_the_top_of_the_address_space_does_not_overflow() -> None:
    assert refusal(body("255.255.255.255/32")) == "fail to assign ip for dhcp server"
    given = body("255.255.255.255/32", serverIP="255.255.255.255")
    assert refusal(given) == "invalid pool range"


def test_wrong_types_count_as_missing() -> None:
    """Defaulting runs before the schema check, which refuses the wrong types afterwards."""
    ops = ippool_defaults(body("10.0.0.0/30", serverIP=7, pool="x"))
    assert ops == [add(POOL, {"start": "10.0.0.1", "end": "10.0.0.2"}), add(SERVER, "10.0.0.1")]


def test_the_server_skips_router_and_excludes() -> None:
    given = body("10.0.0.0/24", router="10.0.0.1", pool={"exclude": ["10.0.0.2", "10.0.0.3"]})
    assert mutate_ippool_create(given)[-1] == add(SERVER, "10.0.0.4")

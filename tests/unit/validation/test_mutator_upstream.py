"""Upstream's IPPool mutator table (`TestMutator_Create`, 11 cases, reference section 4.1).

Each case checks the exact operations (`add`, not upstream's `replace`), and that a
strict RFC 6902 implementation (the `jsonpatch` package) applies them to give the
defaults upstream's test expects.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from tests.unit.validation.builders import ippool_body
from vmdhcp.validation import ValidationError, mutate_ippool_create

POOL = "/spec/ipv4Config/pool"
SERVER = "/spec/ipv4Config/serverIP"


def body(cidr: str, **config: Any) -> dict[str, Any]:
    """An IPPool as a user writes it: only the given fields, no empty placeholders."""
    return {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"namespace": "default", "name": "net-1"},
        "spec": {"networkName": "default/net-1", "ipv4Config": {"cidr": cidr, **config}},
    }


def add(path: str, value: Any) -> dict[str, Any]:
    return {"op": "add", "path": path, "value": value}


#: (name, body, expected operations or error reason, expected (start, end, server))
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]] | str, tuple[str, str, str] | None]] = [
    (
        "no router ippool with server, start, and end ips undefined",
        body("192.168.0.0/24"),
        [add(POOL, {"start": "192.168.0.1", "end": "192.168.0.254"}), add(SERVER, "192.168.0.1")],
        ("192.168.0.1", "192.168.0.254", "192.168.0.1"),
    ),
    (
        "ippool with server, start, and end ips undefined",
        body("172.19.64.128/29", router="172.19.64.129"),
        [
            add(POOL, {"start": "172.19.64.129", "end": "172.19.64.134"}),
            add(SERVER, "172.19.64.130"),
        ],
        ("172.19.64.129", "172.19.64.134", "172.19.64.130"),
    ),
    (
        "ippool with server, start, and end ips all defined",
        body(
            "172.19.64.128/29",
            serverIP="172.19.64.130",
            router="172.19.64.129",
            pool={"start": "172.19.64.131", "end": "172.19.64.133"},
        ),
        [],
        ("172.19.64.131", "172.19.64.133", "172.19.64.130"),
    ),
    (
        "/30 ippool with router (zero allocatable ip left effectively)",
        body("172.19.64.128/30", router="172.19.64.129"),
        [
            add(POOL, {"start": "172.19.64.129", "end": "172.19.64.130"}),
            add(SERVER, "172.19.64.130"),
        ],
        ("172.19.64.129", "172.19.64.130", "172.19.64.130"),
    ),
    (
        "/30 ippool without router (one allocatable ip left effectively)",
        body("172.19.64.128/30"),
        [
            add(POOL, {"start": "172.19.64.129", "end": "172.19.64.130"}),
            add(SERVER, "172.19.64.129"),
        ],
        ("172.19.64.129", "172.19.64.130", "172.19.64.129"),
    ),
    (
        "/30 ippool without router but with start ip defined",
        body("172.19.64.128/30", pool={"start": "172.19.64.130"}),
        [add(f"{POOL}/end", "172.19.64.130"), add(SERVER, "172.19.64.129")],
        ("172.19.64.130", "172.19.64.130", "172.19.64.129"),
    ),
    (
        "no router ippool with excluded ips",
        body("172.19.64.128/29", pool={"exclude": ["172.19.64.129", "172.19.64.131"]}),
        [
            add(f"{POOL}/start", "172.19.64.129"),
            add(f"{POOL}/end", "172.19.64.134"),
            add(SERVER, "172.19.64.130"),
        ],
        ("172.19.64.129", "172.19.64.134", "172.19.64.130"),
    ),
    (
        "the only available ip left is the broadcast ip",
        body(
            "172.19.64.128/29",
            router="172.19.64.130",
            pool={
                "exclude": [
                    "172.19.64.129",
                    "172.19.64.131",
                    "172.19.64.132",
                    "172.19.64.133",
                    "172.19.64.134",
                ]
            },
        ),
        "fail to assign ip for dhcp server",
        None,
    ),
    ("/32 ippool", body("172.19.64.128/32"), "fail to assign ip for dhcp server", None),
    ("/31 ippool", body("172.19.64.128/31"), "fail to assign ip for dhcp server", None),
    (
        "server ip and router are in the middle of pool range",
        body("192.168.0.0/24", serverIP="192.168.0.50", router="192.168.0.100"),
        [add(POOL, {"start": "192.168.0.1", "end": "192.168.0.254"})],
        ("192.168.0.1", "192.168.0.254", "192.168.0.50"),
    ),
]


def test_table_has_upstreams_size() -> None:
    assert len(CASES) == 11


@pytest.mark.parametrize(
    ("given", "expected", "result"),
    [pytest.param(given, expected, result, id=name) for name, given, expected, result in CASES],
)
def test_mutator_create(
    given: dict[str, Any],
    expected: list[dict[str, Any]] | str,
    result: tuple[str, str, str] | None,
) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValidationError) as caught:
            mutate_ippool_create(given)
        assert str(caught.value) == f"cannot create IPPool default/net-1 because {expected}"
        return
    ops = mutate_ippool_create(given)
    assert ops == expected
    mutated = jsonpatch.apply_patch(given, ops)
    config = mutated["spec"]["ipv4Config"]
    assert (config["pool"]["start"], config["pool"]["end"], config["serverIP"]) == result
    assert config["pool"].get("exclude") == given["spec"]["ipv4Config"].get("pool", {}).get(
        "exclude"
    )


def test_upstreams_replace_ops_fail_on_a_strict_patcher() -> None:
    """Why `add`: upstream's `replace` of the absent pool is refused by RFC 6902."""
    given = body("192.168.0.0/24")
    upstream = [{"op": "replace", "path": POOL, "value": {"start": "192.168.0.1"}}]
    with pytest.raises(jsonpatch.JsonPatchConflict):
        jsonpatch.apply_patch(given, upstream)


def test_empty_strings_count_as_missing() -> None:
    """Upstream's builder leaves unset fields as empty strings; they are defaulted too."""
    ops = mutate_ippool_create(ippool_body(cidr="192.168.0.0/24"))
    assert ops == [
        add(f"{POOL}/start", "192.168.0.1"),
        add(f"{POOL}/end", "192.168.0.254"),
        add(SERVER, "192.168.0.1"),
    ]

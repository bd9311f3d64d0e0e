"""The webhook's caches and its per-admission view: the rules judge the same on the narrowed
cached view as on a full `Snapshot` of the same cluster (a property test over random
clusters with colliding MACs, static addresses and allocations), the indexes follow
events and relists, the paged listing and the readiness and staleness reports."""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.validation.builders import ippool_body
from vmdhcp.api import IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import LABEL_IPPOOL_NAME, LABEL_IPPOOL_NAMESPACE
from vmdhcp.errors import ApiError
from vmdhcp.validation import (
    Snapshot,
    ValidationError,
    ippool_problems,
    ippool_users,
    validate_vmnetcfg_create,
    vmnetcfg_problems,
)
from vmdhcp.webhook.caches import Caches
from vmdhcp.webhook.lookups import paged_lister
from vmdhcp.webhook.views import CachedView, confirm

NETWORKS = ["default/net-1", "net-1", "ns-b/net-2", "ns-b/net-3"]
MACS = ["52:54:00:00:00:01", "52-54-00-00-00-01", "52:54:00:00:00:02", "52:54:00:00:00:0A", "bad"]
IPS = ["", "0.0.0.0", "192.168.0.20", "192.168.0.21", "192.168.0.60", "192.168.0.2", "10.0.0.1"]
NAMES = ["a", "a-b", "b", "c"]
NAMESPACES = ["default", "ns-b", "ns"]


def fake_kube(pages: list[dict[str, Any]] | None = None) -> Any:
    calls: list[dict[str, Any]] = []

    def list_cluster_custom_object(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return (pages or [{"metadata": {"resourceVersion": "1"}, "items": []}])[len(calls) - 1]

    return SimpleNamespace(
        custom=SimpleNamespace(list_cluster_custom_object=list_cluster_custom_object),
        calls=calls,
    )


def listing(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": "7"}, "items": iter(items)}


def nad_body(network: str, pool: tuple[str, str] | None) -> dict[str, Any]:
    namespace, _, name = network.rpartition("/")
    labels = {LABEL_IPPOOL_NAMESPACE: pool[0], LABEL_IPPOOL_NAME: pool[1]} if pool else {}
    return {"metadata": {"namespace": namespace or "default", "name": name, "labels": labels}}


def cfg_body(namespace: str, name: str, nics: list[tuple[str, str, str]]) -> dict[str, Any]:
    configs = [
        {"networkName": n, "macAddress": m, **({"ipAddress": ip} if ip else {})}
        for n, m, ip in nics
    ]
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "3"},
        "spec": {"vmName": name, "networkConfigs": configs},
        "status": {"networkConfigs": []},
    }


nics = st.lists(
    st.tuples(st.sampled_from(NETWORKS), st.sampled_from(MACS), st.sampled_from(IPS)),
    min_size=0,
    max_size=3,
)
cfgs = st.dictionaries(st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES)), nics)
allocated = st.dictionaries(
    st.sampled_from(["192.168.0.20", "192.168.0.21", "192.168.0.60", "192.168.0.2"]),
    st.sampled_from([*MACS[:4], "EXCLUDED", "RESERVED"]),
)
pools = st.dictionaries(
    st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
    st.tuples(st.sampled_from(NETWORKS), allocated),
    max_size=3,
)
nads = st.dictionaries(
    st.sampled_from(NETWORKS),
    st.none() | st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
)


def filled(
    nad_map: dict[str, Any], pool_map: dict[Any, Any], cfg_map: dict[Any, Any]
) -> tuple[Caches, Snapshot]:
    caches = Caches(fake_kube())
    nad_bodies = [nad_body(network, pool) for network, pool in nad_map.items()]
    pool_bodies = [
        ippool_body(
            ns,
            name,
            network=network,
            server="192.168.0.2",
            start="192.168.0.10",
            end="192.168.0.200",
            allocated=alloc,
        )
        for (ns, name), (network, alloc) in pool_map.items()
    ]
    cfg_bodies = [cfg_body(ns, name, n) for (ns, name), n in sorted(cfg_map.items())]
    caches.nads._on_list(listing(*nad_bodies), True)
    caches.ippools._on_list(listing(*pool_bodies), True)
    caches.vmnetcfgs._on_list(listing(*cfg_bodies), True)
    order = sorted(
        cfg_bodies, key=lambda b: f"{b['metadata']['namespace']}/{b['metadata']['name']}"
    )
    snapshot = Snapshot(
        nads={
            (b["metadata"]["namespace"], b["metadata"]["name"]): b["metadata"]["labels"]
            for b in nad_bodies
        },
        ippools=[IPPool.model_validate(b) for b in pool_bodies],
        vmnetcfgs=[VirtualMachineNetworkConfig.model_validate(b) for b in order],
    )
    return caches, snapshot


@settings(max_examples=300, deadline=None)
@given(nads, pools, cfgs, st.sampled_from(NAMES), nics, nics)
def test_the_cached_view_judges_as_a_full_snapshot(
    nad_map: dict[str, Any],
    pool_map: dict[Any, Any],
    cfg_map: dict[Any, Any],
    name: str,
    new_nics: list[tuple[str, str, str]],
    old_nics: list[tuple[str, str, str]],
) -> None:
    caches, snapshot = filled(nad_map, pool_map, cfg_map)
    new = VirtualMachineNetworkConfig.model_validate(cfg_body("default", name, new_nics))
    old = VirtualMachineNetworkConfig.model_validate(cfg_body("default", name, old_nics))
    view = CachedView(caches, [new, old])
    assert vmnetcfg_problems(new, view) == vmnetcfg_problems(new, snapshot)
    assert vmnetcfg_problems(old, view) == vmnetcfg_problems(old, snapshot)
    for (ns, pool_name), (network, alloc) in pool_map.items():
        pool = IPPool.model_validate(ippool_body(ns, pool_name, network=network, allocated=alloc))
        assert ippool_problems(pool, CachedView(caches), check_occupied=True) == ippool_problems(
            pool, snapshot, check_occupied=True
        )
        every = CachedView(caches, every_user=True)
        assert ippool_users(pool, every) == ippool_users(pool, snapshot)


def test_events_move_the_indexes_and_a_relist_replaces_them() -> None:
    caches, _ = filled({}, {}, {("default", "a"): [("net-1", MACS[0], "")]})
    feed = caches.vmnetcfgs
    feed._on_event("ADDED", cfg_body("default", "b", [("net-1", MACS[2], "192.168.0.20")]))
    assert feed.table.find("mac", ("default/net-1", MACS[2])) == [("default", "b")]
    assert feed.table.find("network", "default/net-1") == [("default", "a"), ("default", "b")]
    feed._on_event("MODIFIED", cfg_body("default", "b", [("ns-b/net-2", MACS[2], "")]))
    assert feed.table.find("mac", ("default/net-1", MACS[2])) == []
    assert feed.table.find("ip", ("default/net-1", "192.168.0.20")) == []
    assert feed.table.find("mac", ("ns-b/net-2", MACS[2])) == [("default", "b")]
    feed._on_event("DELETED", cfg_body("default", "a", []))
    assert feed.table.find("network", "default/net-1") == []
    feed._on_list(listing(cfg_body("ns", "c", [("net-1", MACS[0], "")])), False)
    assert set(feed.table.rows) == {("ns", "c")}
    assert set(feed.table.index) == {
        ("network", "default/net-1"),
        ("mac", ("default/net-1", "52:54:00:00:00:01")),
    }


def test_an_unreadable_object_is_left_out() -> None:
    caches, _ = filled({}, {}, {})
    caches.vmnetcfgs._on_event("ADDED", {"metadata": {"namespace": "x", "name": "y"}, "spec": {}})
    assert caches.vmnetcfgs.table.rows == {}


def test_only_the_fields_the_rules_read_are_kept() -> None:
    caches, _ = filled({"net-1": ("default", "p")}, {}, {})
    body = nad_body("default/net-2", ("default", "q"))
    body["metadata"]["labels"]["team"] = "a"
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    caches.nads._on_event("ADDED", body)
    assert caches.nads.table.rows[("default", "net-2")] == {
        LABEL_IPPOOL_NAMESPACE: "default",
        LABEL_IPPOOL_NAME: "q",
    }
    cfg = cfg_body("default", "a", [("net-1", MACS[1], "")])
    cfg["metadata"]["annotations"] = {"big": "x" * 1000}
    caches.vmnetcfgs._on_event("ADDED", cfg)
    (nic,) = caches.vmnetcfgs.table.rows[("default", "a")]
    assert (nic.network_name, nic.mac_address, nic.network, nic.mac) == (
        "net-1",
        MACS[1],
        "default/net-1",
        "52:54:00:00:00:01",
    )


def test_the_listing_is_read_page_by_page() -> None:
    pages = [
        {"metadata": {"resourceVersion": "42", "continue": "t1"}, "items": [{"n": 1}, {"n": 2}]},
        {"metadata": {"resourceVersion": "42", "continue": "t2"}, "items": [{"n": 3}]},
        {"metadata": {"resourceVersion": "42"}, "items": [{"n": 4}]},
    ]
    kube = fake_kube(pages)
    found = paged_lister(kube, "g", "v", "p")()
    assert found["metadata"]["resourceVersion"] == "42"
    assert len(kube.calls) == 1  # the later pages are read as the items are consumed
    assert [item["n"] for item in found["items"]] == [1, 2, 3, 4]
    assert [call["_continue"] for call in kube.calls] == [None, "t1", "t2"]


def test_readiness_waits_for_every_first_listing_and_staleness_has_a_limit() -> None:
    caches = Caches(fake_kube())
    assert caches.problem(60) == "the webhook has not yet listed NADs, IPPools, vmnetcfgs"
    caches.nads._on_list(listing(), True)
    caches.ippools._on_list(listing(), True)
    assert caches.problem(60) == "the webhook has not yet listed vmnetcfgs"
    caches.vmnetcfgs._on_list(listing(), True)
    assert caches.problem(60) is None
    caches.ippools._on_failure("connection refused", 0.5)
    assert caches.problem(60) is None  # a watch broken for a moment: the cache still serves
    assert caches.ippools.failing_since is not None
    caches.ippools.failing_since -= 61
    assert caches.problem(60) == (
        "the webhook's watch of IPPools has failed for 61 s (connection refused)"
    )
    assert caches.problem(0) is None  # 0: answer however stale

    def watch_from(version: str) -> Any:
        yield "BOOKMARK", {"metadata": {"resourceVersion": "8"}}

    caches.ippools.watch_from = watch_from
    assert list(caches.ippools._watch("7")) == [
        ("BOOKMARK", {"metadata": {"resourceVersion": "8"}})
    ]
    assert caches.problem(60) is None  # a bookmark proves the stream current again


def test_a_cached_pool_is_handed_over_with_only_the_addresses_under_review() -> None:
    caches, _ = filled(
        {}, {("default", "p"): ("net-1", {"192.168.0.20": MACS[0], "192.168.0.21": MACS[2]})}, {}
    )
    cfg = VirtualMachineNetworkConfig.model_validate(
        cfg_body("default", "x", [("net-1", MACS[0], "192.168.0.21")])
    )
    pool = CachedView(caches, [cfg]).ippool("default", "p")
    assert pool is not None
    assert pool.status is not None
    assert pool.status.ipv4 is not None
    assert pool.status.ipv4.allocated == {"192.168.0.21": MACS[2]}


def test_a_network_of_thousands_hands_the_rules_only_the_colliding_vmnetcfgs() -> None:
    many = {
        ("default", f"vm-{n:04d}"): [("net-1", f"52:54:00:00:{n >> 8:02x}:{n & 255:02x}", "")]
        for n in range(2000)
    }
    caches, _ = filled({}, {}, many)
    cfg = VirtualMachineNetworkConfig.model_validate(
        cfg_body("default", "x", [("net-1", "52:54:00:00:00:07", "")])
    )
    found = CachedView(caches, [cfg]).vmnetcfgs_on_network("default/net-1")
    assert [c.metadata.name for c in found] == ["vm-0007"]
    assert len(CachedView(caches, every_user=True).vmnetcfgs_on_network("default/net-1")) == 2000


class LiveObjects:
    """`Kube.get_object` over a dict of API objects (a GET of one that is absent: 404)."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.objects = {
            (b["metadata"]["namespace"], b["metadata"]["name"], b.get("kind", "")): b
            for b in bodies
        }
        self.reads: list[tuple[str, str, str]] = []

    async def get_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        kind = {
            "ippools": "IPPool",
            "virtualmachinenetworkconfigs": "",
            "network-attachment-definitions": "NAD",
        }[plural]
        self.reads.append((plural, namespace, name))
        if (namespace, name, kind) not in self.objects:
            raise ApiError(404, "NotFound")
        return self.objects[(namespace, name, kind)]


def judged(check: Any, view: Any) -> list[str]:
    try:
        check(view)
    except ValidationError as exc:
        return list(exc.reasons)
    return []


def test_a_refusal_is_judged_again_on_the_objects_read_live() -> None:
    holder = cfg_body("default", "holder", [("net-1", MACS[0], "")])
    caches, _ = filled(
        {"net-1": ("default", "old-pool")}, {}, {("default", "holder"): [("net-1", MACS[0], "")]}
    )
    cfg = VirtualMachineNetworkConfig.model_validate(
        cfg_body("default", "new", [("net-1", MACS[0], "")])
    )
    view = CachedView(caches, [cfg])
    assert judged(partial(validate_vmnetcfg_create, cfg), view) == [
        'ippools.network.harvesterhci.io "old-pool" not found',
        "mac address 52:54:00:00:00:01 is already used on network default/net-1 by "
        "VirtualMachineNetworkConfig default/holder",
    ]
    # live: the NAD now names a pool that exists, and the holder was deleted
    pool = ippool_body("default", "new-pool", network="net-1", server="192.168.0.2")
    nad = {**nad_body("net-1", ("default", "new-pool")), "kind": "NAD"}
    kube = LiveObjects(nad, pool)
    live = asyncio.run(confirm(kube, view))
    assert live is not None
    assert judged(partial(validate_vmnetcfg_create, cfg), live) == []
    assert ("virtualmachinenetworkconfigs", "default", "holder") in kube.reads
    # the holder still there: the refusal stands, on the live objects
    kube = LiveObjects(nad, pool, holder)
    view = CachedView(caches, [cfg])
    assert judged(partial(validate_vmnetcfg_create, cfg), view)  # records what it asks
    live = asyncio.run(confirm(kube, view))
    assert live is not None
    assert judged(partial(validate_vmnetcfg_create, cfg), live) == [
        "mac address 52:54:00:00:00:01 is already used on network default/net-1 by "
        "VirtualMachineNetworkConfig default/holder"
    ]

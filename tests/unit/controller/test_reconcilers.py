"""The controller's reconcilers, end to end over an in-memory API server (`FakeKube`).

Each test plays the cluster: it creates or changes objects as a user would (the fake logs
the watch events those changes make), hands the events to `Controller.observe`, and runs
the work queue until nothing is left to do (`settle`), feeding back the watch events of
the controller's own writes as a real watch would. Read top to bottom, the tests say what
happens to an IPPool, to a VM and its VirtualMachineNetworkConfig (vmnetcfg), and to a
NetworkAttachmentDefinition (NAD).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.controller.fakeapi import Body, Call, FakeKube
from vmdhcp.controller.config import load_config
from vmdhcp.controller.context import FINALIZER, PODS
from vmdhcp.controller.engine import IPPOOLS, NADS, VMNETCFGS, VMS, Controller
from vmdhcp.controller.metrics import ControllerMetrics

NS, AGENTS = "ns1", "agents"
NETWORK = f"{NS}/net-48"
IMAGE = "registry.example/agent:v1"
NOW = "2024-01-01T00:00:00Z"
POD = f"{NS}-net-48-agent"
MAC_A, MAC_B, MAC_C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
LINK_NS, LINK_NAME = (
    "network.harvesterhci.io/ippool-namespace",
    "network.harvesterhci.io/ippool-name",
)
IPV4_CONFIG = {
    "serverIP": "192.168.48.77",
    "cidr": "192.168.48.0/24",
    "pool": {
        "start": "192.168.48.81",
        "end": "192.168.48.90",
        "exclude": ["192.168.48.81", "192.168.48.90"],
    },
    "router": "192.168.48.1",
}


# -- the cluster's objects ---------------------------------------------------------------


def nad_body(name: str = "net-48", annotations: dict[str, str] | None = None) -> Body:
    labels = {"network.harvesterhci.io/clusternetwork": "mgmt"}
    metadata = {"name": name, "namespace": NS, "labels": labels, "annotations": annotations or {}}
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": metadata, "spec": {"config": "{}"}}  # fmt: skip


def pool_body(name: str = "net-48", network: str = NETWORK) -> Body:
    return {"apiVersion": "network.harvesterhci.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"networkName": network, "ipv4Config": IPV4_CONFIG}}  # fmt: skip


def vm_template(*macs: str) -> Body:
    names = [f"nic-{i}" for i in range(1, len(macs) + 1)]
    interfaces = [
        {"name": n, "bridge": {}, "macAddress": m} for n, m in zip(names, macs, strict=True)
    ]
    networks = [{"name": n, "multus": {"networkName": NETWORK}} for n in names]
    return {"spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": networks}}


def vm_body(name: str, *macs: str) -> Body:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"template": vm_template(*macs)}}  # fmt: skip


def cfg_body(name: str, mac: str, ip: str | None = None) -> Body:
    entry = {"networkName": NETWORK, "macAddress": mac, **({"ipAddress": ip} if ip else {})}
    return {"apiVersion": "network.harvesterhci.io/v1alpha1",
            "kind": "VirtualMachineNetworkConfig", "metadata": {"name": name, "namespace": NS},
            "spec": {"vmName": name, "networkConfigs": [entry]}}  # fmt: skip


# -- reading the fake cluster ------------------------------------------------------------


def obj(fake: FakeKube, kind: str, name: str, namespace: str = NS) -> Body:
    body = fake.get(kind, (namespace, name))
    assert body is not None, f"{kind} {namespace}/{name} does not exist"
    return body


def condition(body: Body, kind: str) -> dict[str, Any]:
    found = [c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    assert found, f"no {kind} condition in {body.get('status')}"
    return dict(found[0])


def addresses(fake: FakeKube, name: str) -> list[tuple[str, str, str]]:
    entries = (obj(fake, VMNETCFGS, name).get("status") or {}).get("networkConfigs") or []
    return [(e["macAddress"], e["allocatedIPAddress"], e["state"]) for e in entries]


def allocated(fake: FakeKube, pool: str = "net-48") -> dict[str, str]:
    ipv4 = (obj(fake, IPPOOLS, pool).get("status") or {}).get("ipv4") or {}
    return {ip: mac for ip, mac in (ipv4.get("allocated") or {}).items() if mac != "EXCLUDED"}


def events(fake: FakeKube, reason: str) -> list[Body]:
    return [e for e in fake.events if e["reason"] == reason]


# -- running the controller --------------------------------------------------------------


def new_controller(fake: FakeKube, *, replicas: int = 1, image: str = IMAGE) -> Controller:
    """Upstream's shape (one agent pod per pool) unless `replicas` says otherwise."""
    argv = ["--namespace", AGENTS, "--image", image, "--agent-replicas", str(replicas)]
    config = load_config(argv, {})
    # a pool's status is written once allocations pause: 10 ms here, not 200
    config = dataclasses.replace(config, status_flush_seconds=0.01)
    return Controller(config, fake, ControllerMetrics(), now=lambda: NOW)


async def settle(
    controller: Controller,
    fake: FakeKube,
    *,
    debounce: bool = True,
    until: Callable[[], bool] = lambda: True,
) -> None:
    """Run the controller until it has nothing left to do now: hand it the watch events
    of every change, reconcile every queued key, and (with `debounce`) wait for the
    debounced IPPool status writes; and, if given, until `until()` holds (say, a retry
    after its backoff). Then let the fire-and-forget Events reach the fake."""
    loop = asyncio.get_running_loop()
    deadline, steps = loop.time() + 20.0, 0
    while True:
        for event_type, kind, body in fake.take_changes():
            controller.observe(kind, event_type, body)
        if len(controller.queue):
            steps += 1
            assert steps < 500, "the controller does not settle"
            await controller.reconcile(await controller.queue.get())
        elif (debounce and controller.ctx.status_writes.pending()) or not until():
            assert loop.time() < deadline, "timed out waiting for a timer of the controller"
            await asyncio.sleep(0.002)
        else:
            break
    await asyncio.gather(*list(controller.ctx.events._tasks))


async def step(controller: Controller, fake: FakeKube) -> tuple[str, str, str]:
    """Hand over the watch events so far and reconcile the one next key; returns it."""
    for event_type, kind, body in fake.take_changes():
        controller.observe(kind, event_type, body)
    key = await controller.queue.get()
    await controller.reconcile(key)
    return key


async def start_watches(controller: Controller, fake: FakeKube) -> None:
    """The other watches' initial listings reach the controller (`rebuild` was the first
    listing of IPPools and vmnetcfgs)."""
    for kind in (NADS, VMS, PODS):
        listing = {"items": [fake.get(kind, ref) for ref in list(fake.objects[kind])]}
        controller.on_list(kind, listing, True)
    await settle(controller, fake)


async def restart(fake: FakeKube) -> Controller:
    """The controller stops (what it has not seen yet is lost) and a new one starts."""
    fake.take_changes()
    controller = new_controller(fake)
    await controller.rebuild()
    await start_watches(controller, fake)
    return controller


@pytest.fixture(autouse=True)
def no_reconcile_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The engine logs and retries a reconciler's exception: a bug must fail the test."""
    with caplog.at_level(logging.INFO, logger="vmdhcp.controller"):
        yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def controller(fake: FakeKube) -> Controller:
    return new_controller(fake)


@pytest.fixture
async def served(fake: FakeKube, controller: Controller) -> Controller:
    """NAD net-48 and IPPool net-48 on it, reconciled: the network is served."""
    fake.user_create(NADS, nad_body())
    fake.user_create(IPPOOLS, pool_body())
    await settle(controller, fake)
    return controller


async def vm_with_address(controller: Controller, fake: FakeKube, name: str, mac: str) -> None:
    fake.user_create(VMS, vm_body(name, mac))
    await settle(controller, fake)
    assert addresses(fake, name)[0][0] == mac


# -- 1. an IPPool ------------------------------------------------------------------------


async def test_a_pool_gets_finalizer_conditions_nad_link_agent_pod_and_status(
    fake: FakeKube, controller: Controller
) -> None:
    fake.user_create(NADS, nad_body())
    fake.user_create(IPPOOLS, pool_body())
    await settle(controller, fake)

    pool = obj(fake, IPPOOLS, "net-48")
    assert pool["metadata"]["finalizers"] == [FINALIZER]
    assert condition(pool, "CacheReady")["status"] == "True"  # its IPAM pool is built
    assert condition(pool, "Registered")["status"] == "True"  # its agent pod exists
    assert condition(pool, "Stopped")["status"] == "False"
    agent_ready = condition(pool, "AgentReady")
    assert (agent_ready["status"], agent_ready["message"]) == (
        "False",
        f"agent pod {POD} not ready",
    )
    nad_labels = obj(fake, NADS, "net-48")["metadata"]["labels"]
    assert (nad_labels[LINK_NS], nad_labels[LINK_NAME]) == (NS, "net-48")

    pod = obj(fake, PODS, POD, namespace=AGENTS)
    assert pod["spec"]["containers"][0]["image"] == IMAGE
    assert pool["status"]["agentPodRef"] == {
        "namespace": AGENTS, "name": POD, "image": IMAGE, "uid": pod["metadata"]["uid"],
    }  # fmt: skip
    ipv4 = pool["status"]["ipv4"]
    assert (ipv4["used"], ipv4["available"]) == (0, 8)  # .82 to .89
    assert ipv4["allocated"] == {"192.168.48.81": "EXCLUDED", "192.168.48.90": "EXCLUDED"}

    # the kubelet reports the pod ready: AgentReady follows
    fake.user_patch_status(
        PODS, (AGENTS, POD), {"conditions": [{"type": "Ready", "status": "True"}]}
    )
    await settle(controller, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), "AgentReady")["status"] == "True"

    # reconciling again changes nothing: no write without a difference
    writes = fake.writes
    controller.queue.add((IPPOOLS, NS, "net-48"))
    await settle(controller, fake)
    assert fake.writes == writes


# -- 2. a VM on the pool's network --------------------------------------------------------


async def test_a_vm_gets_a_vmnetcfg_with_the_lowest_free_address(
    fake: FakeKube, served: Controller
) -> None:
    vm = fake.user_create(VMS, vm_body("vm-a", MAC_A.upper()))
    await settle(served, fake, debounce=False)

    cfg = obj(fake, VMNETCFGS, "vm-a")
    assert cfg["spec"] == {
        "vmName": "vm-a",
        "networkConfigs": [{"networkName": NETWORK, "macAddress": MAC_A}],  # normalised
    }
    assert cfg["metadata"]["labels"] == {"harvesterhci.io/vmName": "vm-a"}
    assert cfg["metadata"]["finalizers"] == [FINALIZER]
    assert cfg["metadata"]["ownerReferences"] == [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm-a",
         "uid": vm["metadata"]["uid"], "controller": True}
    ]  # fmt: skip
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]  # .81 excluded
    assert condition(cfg, "Allocated")["status"] == "True"
    assert [e["message"] for e in events(fake, "Allocated")] == [
        f"allocated 192.168.48.82 to {MAC_A} on network {NETWORK}"
    ]
    # the pool's status is written only once allocations pause (status_flush_seconds)
    assert allocated(fake) == {}

    await settle(served, fake)
    assert allocated(fake) == {"192.168.48.82": MAC_A}
    ipv4 = obj(fake, IPPOOLS, "net-48")["status"]["ipv4"]
    assert (ipv4["used"], ipv4["available"]) == (1, 7)

    await vm_with_address(served, fake, "vm-b", MAC_B)
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.83", "Allocated")]


# -- 3. static addresses -----------------------------------------------------------------


async def test_a_static_address_is_honoured_and_one_outside_the_range_refused(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("static", MAC_A, ip="192.168.48.88"))
    await settle(served, fake)
    assert addresses(fake, "static") == [(MAC_A, "192.168.48.88", "Allocated")]
    assert allocated(fake) == {"192.168.48.88": MAC_A}

    # a user moves it: the old address is released
    entry = {"networkName": NETWORK, "macAddress": MAC_A, "ipAddress": "192.168.48.86"}
    fake.user_patch(VMNETCFGS, (NS, "static"), {"spec": {"networkConfigs": [entry]}})
    await settle(served, fake)
    assert addresses(fake, "static") == [(MAC_A, "192.168.48.86", "Allocated")]
    assert allocated(fake) == {"192.168.48.86": MAC_A}

    fake.user_create(VMNETCFGS, cfg_body("outside", MAC_B, ip="192.168.48.200"))
    await settle(served, fake)
    refused = condition(obj(fake, VMNETCFGS, "outside"), "Allocated")
    message = "designated ip 192.168.48.200 is outside the pool range 192.168.48.81-192.168.48.90"
    assert (refused["status"], refused["message"]) == ("False", message)
    assert addresses(fake, "outside") == []
    [failed] = events(fake, "AllocationFailed")
    assert (failed["message"], failed["type"]) == (message, "Warning")
    assert failed["involvedObject"]["name"] == "outside"
    assert allocated(fake) == {"192.168.48.86": MAC_A}


# -- 4. one MAC, two vmnetcfgs ------------------------------------------------------------


async def test_the_same_mac_in_two_vmnetcfgs_gets_one_address(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("dup-1", MAC_A))
    await settle(served, fake)
    fake.user_create(VMNETCFGS, cfg_body("dup-2", MAC_A))
    await settle(served, fake)

    assert addresses(fake, "dup-1") == [(MAC_A, "192.168.48.82", "Allocated")]
    assert addresses(fake, "dup-2") == []
    refused = condition(obj(fake, VMNETCFGS, "dup-2"), "Allocated")
    assert refused["status"] == "False"
    assert refused["message"] == (
        f"mac {MAC_A} on network {NETWORK} is already used by vmnetcfg {NS}/dup-1"
    )
    assert allocated(fake) == {"192.168.48.82": MAC_A}


# -- 5. the VM is deleted ----------------------------------------------------------------


async def test_deleting_the_vm_deletes_its_vmnetcfg_and_releases_the_address(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    cfg_uid = obj(fake, VMNETCFGS, "vm-a")["metadata"]["uid"]
    assert allocated(fake) == {"192.168.48.82": MAC_A}

    fake.user_delete(VMS, (NS, "vm-a"))
    assert await step(served, fake) == (VMS, NS, "vm-a")
    # the VM's reconcile deleted this very vmnetcfg (uid precondition) ...
    assert fake.calls[-1] == Call(
        "delete", VMNETCFGS, (NS, "vm-a"), {"preconditions": {"uid": cfg_uid}}
    )
    # ... which the finalizer holds: deletionTimestamp set, the address still allocated
    assert obj(fake, VMNETCFGS, "vm-a")["metadata"]["deletionTimestamp"]
    assert served.allocator.owners == {(NETWORK, MAC_A): (NS, "vm-a")}

    await settle(served, fake)  # its deletion releases the address and drops the finalizer
    assert fake.get(VMNETCFGS, (NS, "vm-a")) is None
    assert served.allocator.owners == {}
    assert allocated(fake) == {}
    assert obj(fake, IPPOOLS, "net-48")["status"]["ipv4"]["used"] == 0

    await vm_with_address(served, fake, "vm-b", MAC_B)  # the address is free again
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.82", "Allocated")]


# -- 6. a vmnetcfg paused and resumed ------------------------------------------------------


async def test_pausing_a_vmnetcfg_releases_its_address_and_resuming_returns_it(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)

    fake.user_patch(VMNETCFGS, (NS, "vm-a"), {"spec": {"paused": True}})
    await settle(served, fake)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Pending")]
    cfg = obj(fake, VMNETCFGS, "vm-a")
    assert condition(cfg, "Disabled")["status"] == "True"
    assert (
        condition(cfg, "Allocated")["message"]
        == f"vmnetcfg {NS}/vm-a was administratively disabled"
    )
    assert allocated(fake) == {}

    fake.user_patch(VMNETCFGS, (NS, "vm-a"), {"spec": {"paused": False}})
    await settle(served, fake)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]
    assert condition(obj(fake, VMNETCFGS, "vm-a"), "Disabled")["status"] == "False"
    assert allocated(fake) == {"192.168.48.82": MAC_A}


async def test_each_allocation_and_release_is_logged_once(
    fake: FakeKube, served: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line per address given and taken back, whatever took it back: a pause, a
    NIC gone from the spec (the VM's MAC changed), the vmnetcfg's deletion."""
    caplog.clear()
    await vm_with_address(served, fake, "vm-a", MAC_A)
    fake.user_patch(VMNETCFGS, (NS, "vm-a"), {"spec": {"paused": True}})
    await settle(served, fake)
    fake.user_patch(VMNETCFGS, (NS, "vm-a"), {"spec": {"paused": False}})
    await settle(served, fake)
    fake.user_patch(VMS, (NS, "vm-a"), {"spec": {"template": vm_template(MAC_B)}})
    await settle(served, fake)
    assert addresses(fake, "vm-a") == [(MAC_B, "192.168.48.82", "Allocated")]
    fake.user_delete(VMS, (NS, "vm-a"))
    await settle(served, fake)

    cfg, ip = f"vmnetcfg {NS}/vm-a", "192.168.48.82"
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.getMessage().startswith("vmnetcfg ")
    ]
    assert lines == [
        f"{cfg}: allocated {ip} to mac {MAC_A} on network {NETWORK}",
        f"{cfg}: released {ip} of mac {MAC_A} on network {NETWORK}",  # paused
        f"{cfg}: allocated {ip} to mac {MAC_A} on network {NETWORK}",  # resumed
        f"{cfg}: released {ip} of mac {MAC_A} on network {NETWORK}",  # the MAC changed
        f"{cfg}: allocated {ip} to mac {MAC_B} on network {NETWORK}",
        f"{cfg}: released {ip} of mac {MAC_B} on network {NETWORK}",  # deleted
    ]


# -- 7. a pool paused, a pool deleted ------------------------------------------------------


async def test_a_paused_pool_loses_its_agent_pod_and_gets_it_back(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    pod_uid = obj(fake, PODS, POD, namespace=AGENTS)["metadata"]["uid"]

    fake.user_patch(IPPOOLS, (NS, "net-48"), {"spec": {"paused": True}})
    await settle(served, fake)
    assert Call("delete", PODS, (AGENTS, POD), {"preconditions": {"uid": pod_uid}}) in fake.calls
    assert fake.get(PODS, (AGENTS, POD)) is None
    pool = obj(fake, IPPOOLS, "net-48")
    disabled = f"ippool {NS}/net-48 was administratively disabled"
    assert condition(pool, "Stopped")["status"] == "True"
    for kind in ("CacheReady", "Registered", "AgentReady"):
        assert (condition(pool, kind)["status"], condition(pool, kind)["message"]) == (
            "False",
            disabled,
        )
    assert "agentPodRef" not in pool["status"]
    assert allocated(fake) == {"192.168.48.82": MAC_A}  # allocations are kept

    fake.user_patch(IPPOOLS, (NS, "net-48"), {"spec": {"paused": False}})
    await settle(served, fake)
    pod = obj(fake, PODS, POD, namespace=AGENTS)
    assert pod["metadata"]["uid"] != pod_uid
    assert obj(fake, IPPOOLS, "net-48")["status"]["agentPodRef"]["uid"] == pod["metadata"]["uid"]
    assert condition(obj(fake, IPPOOLS, "net-48"), "Stopped")["status"] == "False"


async def test_a_deleted_pool_cleans_up_and_is_forgotten(
    fake: FakeKube, served: Controller
) -> None:
    pod_uid = obj(fake, PODS, POD, namespace=AGENTS)["metadata"]["uid"]
    fake.user_delete(IPPOOLS, (NS, "net-48"))
    assert obj(fake, IPPOOLS, "net-48")["metadata"]["deletionTimestamp"]  # the finalizer holds it

    await settle(served, fake)
    assert fake.get(IPPOOLS, (NS, "net-48")) is None  # finalizer dropped
    assert Call("delete", PODS, (AGENTS, POD), {"preconditions": {"uid": pod_uid}}) in fake.calls
    assert fake.get(PODS, (AGENTS, POD)) is None
    labels = obj(fake, NADS, "net-48")["metadata"].get("labels") or {}
    assert LINK_NS not in labels
    assert LINK_NAME not in labels
    assert not served.allocator.serves(NETWORK)
    assert NETWORK not in served.allocator.ipam


# -- 8. a user's edit racing the controller's write ----------------------------------------


async def test_a_users_edit_made_behind_the_controllers_back_is_not_overwritten(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-r", MAC_A)
    seen_rv = obj(fake, VMNETCFGS, "vm-r")["metadata"]["resourceVersion"]

    # a user pins an address; the controller's watch has not delivered it yet ...
    pinned = {"networkName": NETWORK, "macAddress": MAC_A, "ipAddress": "192.168.48.88"}
    fake.user_patch(VMNETCFGS, (NS, "vm-r"), {"spec": {"networkConfigs": [pinned]}})
    late = fake.take_changes()
    # ... when the VM gets a second NIC and the controller rewrites the vmnetcfg's spec
    fake.user_patch(VMS, (NS, "vm-r"), {"spec": {"template": vm_template(MAC_A, MAC_B)}})
    key = await step(served, fake)

    assert key == (VMS, NS, "vm-r")
    refused = fake.calls[-1]
    assert (refused.verb, refused.kind) == ("patch", VMNETCFGS)
    assert refused.body is not None
    assert refused.body["metadata"] == {"resourceVersion": seen_rv}  # stale: 409
    assert served.queue.retries(key) == 1  # retried after its backoff
    spec = obj(fake, VMNETCFGS, "vm-r")["spec"]["networkConfigs"]
    assert spec == [pinned], "the user's edit was overwritten"

    # the watch catches up; the retry computes from the user's version and keeps the edit
    fake.changes[:0] = late
    await settle(served, fake, until=lambda: served.queue.retries(key) == 0)
    spec = obj(fake, VMNETCFGS, "vm-r")["spec"]["networkConfigs"]
    assert [(e["macAddress"], e.get("ipAddress")) for e in spec] == [
        (MAC_A, "192.168.48.88"),
        (MAC_B, None),
    ]
    assert addresses(fake, "vm-r")[0] == (MAC_A, "192.168.48.88", "Allocated")
    assert [state for _, _, state in addresses(fake, "vm-r")] == ["Allocated", "Allocated"]


# -- 9. a NAD that asks for a pool --------------------------------------------------------


async def test_a_nad_annotation_creates_and_updates_its_pool(
    fake: FakeKube, controller: Controller
) -> None:
    wanted = {"cidr": "10.10.0.0/24", "router": "10.10.0.1", "dns": ["10.10.0.2"]}
    annotation = "network.harvesterhci.io/dhcp-pool"
    nad = fake.user_create(NADS, nad_body("vlan10", {annotation: json.dumps(wanted)}))
    await settle(controller, fake)

    pool = obj(fake, IPPOOLS, "vlan10")
    assert pool["spec"] == {
        "networkName": f"{NS}/vlan10",
        "ipv4Config": {**wanted, "serverIP": "10.10.0.2",
                       "pool": {"start": "10.10.0.1", "end": "10.10.0.254"}},
    }  # fmt: skip
    assert pool["metadata"]["ownerReferences"] == [
        {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
         "name": "vlan10", "uid": nad["metadata"]["uid"], "controller": True}
    ]  # fmt: skip
    assert [e["message"] for e in events(fake, "IPPoolCreated")] == [f"created ippool {NS}/vlan10"]
    assert condition(pool, "CacheReady")["status"] == "True"

    # a changed annotation: only the mutable fields, on the version the controller saw
    seen_rv = pool["metadata"]["resourceVersion"]
    wanted["dns"] = ["9.9.9.9"]
    fake.user_patch(
        NADS, (NS, "vlan10"), {"metadata": {"annotations": {annotation: json.dumps(wanted)}}}
    )
    await settle(controller, fake)
    assert obj(fake, IPPOOLS, "vlan10")["spec"]["ipv4Config"]["dns"] == ["9.9.9.9"]
    spec_patches = [c for c in fake.calls if c.verb == "patch" and c.kind == IPPOOLS]
    assert spec_patches[-1] == Call(
        "patch",
        IPPOOLS,
        (NS, "vlan10"),
        {"spec": {"ipv4Config": {"dns": ["9.9.9.9"]}}, "metadata": {"resourceVersion": seen_rv}},
    )

    fake.user_create(NADS, nad_body("broken", {annotation: "{not json"}))
    await settle(controller, fake)
    [invalid] = events(fake, "InvalidDHCPPool")
    assert invalid["type"] == "Warning"
    assert invalid["involvedObject"]["name"] == "broken"
    assert invalid["message"].startswith(f"annotation {annotation} cannot make an IPPool: ")
    assert fake.get(IPPOOLS, (NS, "broken")) is None


# -- 10. the write gate --------------------------------------------------------------------


async def test_a_controller_that_may_not_write_writes_nothing_and_retries(
    fake: FakeKube, controller: Controller
) -> None:
    fake.may_write = lambda: False  # leadership lost
    fake.user_create(NADS, nad_body())
    fake.user_create(IPPOOLS, pool_body())
    await settle(controller, fake)
    key = (IPPOOLS, NS, "net-48")
    assert (fake.writes, fake.calls) == (0, [])
    assert controller.queue.retries(key) == 1
    assert "finalizers" not in obj(fake, IPPOOLS, "net-48")["metadata"]

    fake.may_write = lambda: True  # leading again: the retry does the work
    await settle(controller, fake, until=lambda: controller.queue.retries(key) == 0)
    assert obj(fake, IPPOOLS, "net-48")["metadata"]["finalizers"] == [FINALIZER]
    assert fake.get(PODS, (AGENTS, POD)) is not None


# -- 11. a second pool on one network -------------------------------------------------------


async def test_a_second_pool_on_a_served_network_is_refused(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(IPPOOLS, pool_body("net-48-again"))
    await settle(served, fake)

    again = obj(fake, IPPOOLS, "net-48-again")
    refused = condition(again, "CacheReady")
    assert refused["status"] == "False"
    assert refused["message"] == f"network {NETWORK} is already served by ippool {NS}/net-48"
    assert condition(again, "Registered")["status"] == "False"
    assert "agentPodRef" not in again["status"]
    assert fake.get(PODS, (AGENTS, f"{NS}-net-48-again-agent")) is None
    assert not [c for c in fake.calls if c.kind == PODS and c.ref[1] != POD]
    assert obj(fake, NADS, "net-48")["metadata"]["labels"][LINK_NAME] == "net-48"
    assert condition(obj(fake, IPPOOLS, "net-48"), "CacheReady")["status"] == "True"


async def test_a_refused_pool_takes_over_when_the_serving_pool_is_deleted(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(IPPOOLS, pool_body("net-48-again"))
    await settle(served, fake)
    fake.user_delete(IPPOOLS, (NS, "net-48"))
    await settle(served, fake)
    assert fake.get(IPPOOLS, (NS, "net-48")) is None

    assert served.allocator.holder(NETWORK) == (NS, "net-48-again")
    assert condition(obj(fake, IPPOOLS, "net-48-again"), "CacheReady")["status"] == "True"
    assert fake.get(PODS, (AGENTS, f"{NS}-net-48-again-agent")) is not None


# -- 12. a restart ---------------------------------------------------------------------------


async def test_a_restarted_controller_rebuilds_keeps_addresses_and_reports_conflicts(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    await vm_with_address(served, fake, "vm-b", MAC_B)
    # while no controller runs, a vmnetcfg appears whose status claims vm-a's address
    fake.user_create(VMNETCFGS, cfg_body("zz-claim", MAC_C))
    claim = {"networkName": NETWORK, "macAddress": MAC_C,
             "allocatedIPAddress": "192.168.48.82", "state": "Allocated"}  # fmt: skip
    fake.user_patch_status(VMNETCFGS, (NS, "zz-claim"), {"networkConfigs": [claim]})
    fake.take_changes()

    restarted = new_controller(fake)
    await restarted.rebuild()  # before any allocation: from the vmnetcfgs' statuses
    network = restarted.allocator.ipam.pool(NETWORK).allocations()
    assert {str(ip): mac for ip, mac in network.items()} == {
        "192.168.48.82": MAC_A,  # the first claim (by name) wins
        "192.168.48.83": MAC_B,
    }
    writes = len(fake.calls)
    await start_watches(restarted, fake)

    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.83", "Allocated")]
    assert addresses(fake, "zz-claim") == [(MAC_C, "192.168.48.84", "Allocated")]
    assert allocated(fake) == {
        "192.168.48.82": MAC_A,
        "192.168.48.83": MAC_B,
        "192.168.48.84": MAC_C,
    }
    expected = (
        f"vmnetcfg {NS}/zz-claim: ip 192.168.48.82 is claimed by mac {MAC_C} "
        f"but already allocated to mac {MAC_A}"
    )
    assert [e["message"] for e in events(fake, "AllocationConflict")] == [expected]
    conflicts = condition(obj(fake, IPPOOLS, "net-48"), "Conflicts")
    assert (conflicts["status"], conflicts["reason"]) == ("True", "RestoreConflict")
    assert conflicts["message"] == f"1 at rebuild: {expected}"
    # nothing else was rewritten: no agent pod, no vmnetcfg of vm-a or vm-b
    later = fake.calls[writes:]
    assert not [c for c in later if c.kind == PODS or c.ref[1] in ("vm-a", "vm-b")], later


async def test_a_vmnetcfg_deleted_while_the_controller_is_down_frees_its_address(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("gone", MAC_A))
    await settle(served, fake)
    assert allocated(fake) == {"192.168.48.82": MAC_A}
    fake.user_delete(VMNETCFGS, (NS, "gone"))  # the finalizer holds it: deletionTimestamp

    restarted = await restart(fake)
    assert fake.get(VMNETCFGS, (NS, "gone")) is None  # the finalizer was dropped
    assert allocated(fake) == {}
    fake.user_create(VMNETCFGS, cfg_body("next", MAC_B))
    await settle(restarted, fake)
    assert addresses(fake, "next") == [(MAC_B, "192.168.48.82", "Allocated")]


async def test_a_refused_static_address_leaks_nothing_across_a_restart(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("s", MAC_A, ip="192.168.48.86"))
    await settle(served, fake)
    entry = {"networkName": NETWORK, "macAddress": MAC_A, "ipAddress": "192.168.48.200"}
    fake.user_patch(VMNETCFGS, (NS, "s"), {"spec": {"networkConfigs": [entry]}})
    await settle(served, fake)
    # refused: it keeps (and its status still shows) the address it holds, and says why
    assert addresses(fake, "s") == [(MAC_A, "192.168.48.86", "Allocated")]
    assert condition(obj(fake, VMNETCFGS, "s"), "Allocated")["status"] == "False"

    restarted = await restart(fake)
    fake.user_delete(VMNETCFGS, (NS, "s"))
    await settle(restarted, fake)
    assert fake.get(VMNETCFGS, (NS, "s")) is None
    assert allocated(fake) == {}


# -- found in review -----------------------------------------------------------------------


async def test_a_vm_deleted_and_created_again_under_its_name_owns_its_vmnetcfg(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-r", MAC_A)
    fake.user_delete(VMS, (NS, "vm-r"))
    again = fake.user_create(VMS, vm_body("vm-r", MAC_A))  # both events reach one reconcile
    await settle(served, fake)
    references = obj(fake, VMNETCFGS, "vm-r")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in references] == [again["metadata"]["uid"]]
    assert addresses(fake, "vm-r") == [(MAC_A, "192.168.48.82", "Allocated")]


async def test_a_vm_deleted_while_kopf_relisted_is_noticed_when_the_listing_pauses(
    fake: FakeKube, served: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmdhcp.controller import engine

    monkeypatch.setattr(engine, "LISTING_QUIET", 0.01)
    await vm_with_address(served, fake, "vm-x", MAC_A)
    await vm_with_address(served, fake, "vm-y", MAC_B)
    fake.user_delete(VMS, (NS, "vm-x"))
    fake.take_changes()  # the watch broke: its DELETED event is lost; kopf lists again
    served.observe(VMS, None, obj(fake, VMS, "vm-y"))
    await settle(served, fake, until=lambda: fake.get(VMNETCFGS, (NS, "vm-x")) is None)
    assert served.store.get(VMS, (NS, "vm-x")) is None
    assert allocated(fake) == {"192.168.48.83": MAC_B}


async def test_a_pool_status_called_for_is_written_even_while_allocations_go_on(
    fake: FakeKube, served: Controller
) -> None:
    """Each allocation re-arms the debouncer, so in a burst it is never quiet; once its
    maximum delay calls for a write, the pool's next reconcile writes, even if another
    allocation came in between (the agent serves what the status lists)."""
    await vm_with_address(served, fake, "vm-a", MAC_A)  # settled: status written
    fake.user_create(VMNETCFGS, cfg_body("b", MAC_B))
    for event_type, kind, body in fake.take_changes():
        served.observe(kind, event_type, body)
    await served.reconcile(await served.queue.get())  # b allocated: a write is gathering
    key = (IPPOOLS, NS, "net-48")
    assert served.ctx.status_writes.is_pending(key)
    served.ctx.status_writes._due(key)  # its timer fires (maximum delay): the pool queued
    fake.user_create(VMNETCFGS, cfg_body("c", MAC_C))  # and the burst goes on
    for event_type, kind, body in fake.take_changes():
        served.observe(kind, event_type, body)
    await served.reconcile((VMNETCFGS, NS, "c"))
    assert served.ctx.status_writes.is_pending(key)
    while (queued := await served.queue.get()) != key:
        served.queue.done(queued)
    await served.reconcile(key)
    assert allocated(fake) == {
        "192.168.48.82": MAC_A,
        "192.168.48.83": MAC_B,
        "192.168.48.84": MAC_C,
    }


async def test_agent_pod_changes_are_logged(
    fake: FakeKube, controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    fake.user_create(NADS, nad_body())
    fake.user_create(IPPOOLS, pool_body())
    await settle(controller, fake)
    fake.user_patch(IPPOOLS, (NS, "net-48"), {"spec": {"paused": True}})
    await settle(controller, fake)
    lines = [r.getMessage() for r in caplog.records if r.name == "vmdhcp.controller"]
    assert f"agent pod {AGENTS}/{POD} created" in lines
    assert f"agent pod {AGENTS}/{POD} deleted" in lines

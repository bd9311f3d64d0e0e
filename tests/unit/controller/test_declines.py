"""DHCPDECLINEs reported by the agent, acted on by the controller (over the in-memory API
server, the report Leases handed to `Reports` as their watch would): the declined address is
set aside and marked, the MAC moves and the vmnetcfg says why; a pinned address does not
move but gets a condition; a report seen again, a forged entry, a vmnetcfg going away and a
restart move nothing twice; the quarantine ends on the controller's clock."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.controller import test_reconcilers as base
from tests.unit.controller.fakeapi import FakeKube
from tests.unit.controller.test_reconcilers import (
    MAC_A,
    MAC_B,
    MAC_C,
    NS,
    addresses,
    cfg_body,
    condition,
    events,
    new_controller,
    obj,
    settle,
    start_watches,
    vm_with_address,
)
from tests.unit.controller.test_rogue import lease
from vmdhcp.agent.report import AgentReport, DeclinedAddress
from vmdhcp.controller import declines
from vmdhcp.controller.engine import IPPOOLS, VMNETCFGS, Controller
from vmdhcp.controller.rogue import Reports

fake = base.fake
no_reconcile_errors = base.no_reconcile_errors
AT = "2026-12-05T07:00:00Z"


@pytest.fixture
def controller(fake: FakeKube) -> Controller:
    made = new_controller(fake)
    made.ctx.config = dataclasses.replace(made.ctx.config, decline_quarantine_seconds=600.0)
    clock = [1000.0]
    made.ctx.clock = lambda: clock[0]
    return made


served = base.served


def report(fake: FakeKube, *declined: DeclinedAddress) -> AgentReport:
    pool = obj(fake, IPPOOLS, "net-48")
    return AgentReport((NS, "net-48"), pool["metadata"]["uid"], "agent-0", 0.0, (), declined)


def ipv4(fake: FakeKube) -> dict[str, object]:
    status: dict[str, object] = obj(fake, IPPOOLS, "net-48")["status"]["ipv4"]
    return status


def results(controller: Controller) -> dict[str, float]:
    counter = declines.counter(controller.ctx)
    return {r: counter.labels(r)._value.get() for r in declines.RESULTS}


async def test_a_declined_address_is_set_aside_and_the_vm_gets_another(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]
    assert (ipv4(fake)["used"], ipv4(fake)["available"]) == (1, 7)
    reports = Reports(served.ctx)
    entry = DeclinedAddress(MAC_A, "192.168.48.82", AT)
    reports.event("ADDED", lease(report(fake, entry)))
    await settle(served, fake)

    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.83", "Allocated")]
    status = ipv4(fake)
    assert status["allocated"] == {
        "192.168.48.81": "EXCLUDED",
        "192.168.48.82": "DECLINED",
        "192.168.48.83": MAC_A,
        "192.168.48.90": "EXCLUDED",
    }
    assert (status["used"], status["available"]) == (2, 6)  # used + available: still 8
    (event,) = events(fake, "AddressDeclined")
    assert event["involvedObject"]["name"] == "vm-a"
    assert event["type"] == "Warning"
    assert "declined 192.168.48.82" in event["message"]
    assert "set aside for 600s" in event["message"]
    assert "it now has 192.168.48.83" in event["message"]
    assert results(served)["honoured"] == 1

    # nobody gets it meanwhile
    await vm_with_address(served, fake, "vm-b", MAC_B)
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.84", "Allocated")]

    # the report again (a relist), or its entry still there at the next pool change: once
    writes = fake.writes
    reports.listed({"items": [lease(report(fake, entry))]}, False)
    served.queue.add((IPPOOLS, NS, "net-48"))
    await settle(served, fake)
    assert fake.writes == writes
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.83", "Allocated")]
    assert results(served)["honoured"] == 1
    # the agent saw the move and drops the entry: nothing changes either
    reports.event("MODIFIED", lease(report(fake)))
    await settle(served, fake)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.83", "Allocated")]
    assert len(events(fake, "AddressDeclined")) == 1


async def test_a_restart_keeps_it_aside_and_the_quarantine_ends_on_the_controllers_clock(
    fake: FakeKube, served: Controller
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    Reports(served.ctx).event(
        "ADDED", lease(report(fake, DeclinedAddress(MAC_A, "192.168.48.82", AT)))
    )
    await settle(served, fake)
    assert ipv4(fake)["allocated"]["192.168.48.82"] == "DECLINED"  # type: ignore[index]

    fake.take_changes()  # the controller stops; a new one starts, its quarantine 10 s
    restarted = new_controller(fake)
    clock = [50.0]
    restarted.ctx.clock = lambda: clock[0]
    restarted.ctx.config = dataclasses.replace(restarted.ctx.config, decline_quarantine_seconds=10)
    await restarted.rebuild()
    await start_watches(restarted, fake)
    # the report is still there: the MAC holds another address, nothing moves again
    Reports(restarted.ctx).event(
        "ADDED", lease(report(fake, DeclinedAddress(MAC_A, "192.168.48.82", AT)))
    )
    await vm_with_address(restarted, fake, "vm-b", MAC_B)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.83", "Allocated")]
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.84", "Allocated")]
    assert ipv4(fake)["allocated"]["192.168.48.82"] == "DECLINED"  # type: ignore[index]
    assert len(events(fake, "AddressDeclined")) == 1
    # counted from the rebuild (at 50 on its clock): still aside at 59.9, back at 60
    clock[0] = 59.9
    restarted.queue.add((IPPOOLS, NS, "net-48"))
    await settle(restarted, fake)
    assert ipv4(fake)["allocated"]["192.168.48.82"] == "DECLINED"  # type: ignore[index]
    clock[0] = 60.0
    restarted.queue.add((IPPOOLS, NS, "net-48"))
    await settle(restarted, fake)
    assert "192.168.48.82" not in ipv4(fake)["allocated"]  # type: ignore[operator]
    assert (ipv4(fake)["used"], ipv4(fake)["available"]) == (2, 6)
    fake.user_create(VMNETCFGS, cfg_body("vm-c", MAC_C))
    await settle(restarted, fake)
    assert addresses(fake, "vm-c") == [(MAC_C, "192.168.48.82", "Allocated")]


async def test_a_forged_or_stale_entry_moves_nobody(fake: FakeKube, served: Controller) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    await vm_with_address(served, fake, "vm-b", MAC_B)
    reports = Reports(served.ctx)
    forged = (
        DeclinedAddress(MAC_B, "192.168.48.82", AT),  # another MAC's address
        DeclinedAddress(MAC_C, "192.168.48.85", AT),  # a MAC with no address
        DeclinedAddress("not-a-mac", "192.168.48.83", AT),
    )
    reports.event("ADDED", lease(report(fake, *forged)))
    await settle(served, fake)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.83", "Allocated")]
    assert "DECLINED" not in ipv4(fake)["allocated"].values()  # type: ignore[attr-defined]
    assert results(served)["not_allocated"] == 3
    assert events(fake, "AddressDeclined") == []
    # a report of an older pool of that name says nothing about this one
    stale = AgentReport((NS, "net-48"), "old-uid", "agent-0", 0.0, (), forged[:1])
    reports.event("MODIFIED", lease(stale))
    await settle(served, fake)
    assert results(served)["not_allocated"] == 3


async def test_a_pinned_address_is_not_moved_and_the_conflict_is_a_condition(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("pinned", MAC_A, ip="192.168.48.86"))
    await settle(served, fake)
    assert declines.CONDITION not in str(obj(fake, VMNETCFGS, "pinned")["status"])
    reports = Reports(served.ctx)
    reports.event("ADDED", lease(report(fake, DeclinedAddress(MAC_A, "192.168.48.86", AT))))
    await settle(served, fake)
    assert addresses(fake, "pinned") == [(MAC_A, "192.168.48.86", "Allocated")]
    assert "DECLINED" not in ipv4(fake)["allocated"].values()  # type: ignore[attr-defined]
    found = condition(obj(fake, VMNETCFGS, "pinned"), declines.CONDITION)
    assert (found["status"], found["reason"]) == ("True", "PinnedAddressDeclined")
    assert "pinned address 192.168.48.86" in found["message"]
    (event,) = events(fake, "PinnedAddressConflict")
    assert event["involvedObject"]["name"] == "pinned"
    assert results(served)["pinned"] == 1
    assert condition(obj(fake, VMNETCFGS, "pinned"), "Allocated")["status"] == "True"

    # the agent's hold ran out: it offers the address again, no decline for now. The
    # conflict stays for a quarantine on the controller's clock (before: False at once,
    # then True again when the VM declined again: a flap and a second Event)
    clock = [1001.0]  # the fixture's clock was at 1000
    served.ctx.clock = lambda: clock[0]
    reports.event("MODIFIED", lease(report(fake)))
    await settle(served, fake)
    kept = condition(obj(fake, VMNETCFGS, "pinned"), declines.CONDITION)
    assert (kept["status"], kept["reason"]) == ("True", "PinnedAddressDeclined")
    reports.event("MODIFIED", lease(report(fake, DeclinedAddress(MAC_A, "192.168.48.86", "T2"))))
    await settle(served, fake)
    clock[0] = 1001.0 + 599.0  # 600 s after the last report of it
    reports.event("MODIFIED", lease(report(fake)))
    await settle(served, fake)
    assert condition(obj(fake, VMNETCFGS, "pinned"), declines.CONDITION)["status"] == "True"
    clock[0] = 1001.0 + 600.0
    served.queue.add((VMNETCFGS, NS, "pinned"))  # what its timed requeue does
    await settle(served, fake)
    cleared = condition(obj(fake, VMNETCFGS, "pinned"), declines.CONDITION)
    assert (cleared["status"], cleared["reason"]) == ("False", "NoConflict")
    assert len(events(fake, "PinnedAddressConflict")) == 1


async def test_a_vmnetcfg_being_deleted_is_left_alone_and_the_limit_holds(
    fake: FakeKube, served: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    await vm_with_address(served, fake, "vm-a", MAC_A)
    fake.user_create(VMNETCFGS, cfg_body("going", MAC_B))
    fake.user_create(VMNETCFGS, cfg_body("vm-c", MAC_C))
    await settle(served, fake)
    fake.user_delete(VMNETCFGS, (NS, "going"))  # the finalizer holds it a moment
    for event_type, kind, body in fake.take_changes():  # seen, not reconciled yet
        served.observe(kind, event_type, body)
    monkeypatch.setattr(declines, "MAX_ASIDE", 1)
    entries = (
        DeclinedAddress(MAC_A, "192.168.48.82", AT),
        DeclinedAddress(MAC_B, "192.168.48.83", AT),
        DeclinedAddress(MAC_C, "192.168.48.84", AT),
    )
    Reports(served.ctx).event("ADDED", lease(report(fake, *entries)))
    await settle(served, fake)
    counted = results(served)
    assert (counted["honoured"], counted["limit"]) == (1, 1)
    assert counted["no_vmnetcfg"] + counted["not_allocated"] == 1  # "going": left alone
    assert fake.get(VMNETCFGS, (NS, "going")) is None
    ((_, moved, _),) = addresses(fake, "vm-a")
    assert moved not in ("192.168.48.82", "192.168.48.84")
    assert addresses(fake, "vm-c") == [(MAC_C, "192.168.48.84", "Allocated")]
    assert list(ipv4(fake)["allocated"].values()).count("DECLINED") == 1  # type: ignore[attr-defined]
    (ignored,) = events(fake, "DeclineIgnored")
    assert "1 addresses of this pool are set aside already" in ignored["message"]


async def test_a_crash_between_the_pools_and_the_vmnetcfgs_writes_makes_no_duplicate(
    fake: FakeKube, served: Controller
) -> None:
    """The decline moved MAC_A from .82 to .83 and wrote the pool's status (.82 DECLINED,
    .83 MAC_A); the controller stopped before it wrote vm-a's status (still .82). The
    rebuild must not give .82 back to vm-a and .83 to the next VM (before: "a vmnetcfg's
    claim on it won", .83 was freed and handed to vm-b while vm-a's VM was bound to it)."""
    await vm_with_address(served, fake, "vm-a", MAC_A)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.82", "Allocated")]
    status = obj(fake, IPPOOLS, "net-48")["status"]
    allocated = {**status["ipv4"]["allocated"], "192.168.48.82": "DECLINED"}
    allocated["192.168.48.83"] = MAC_A
    fake.user_patch_status(
        IPPOOLS, (NS, "net-48"), {**status, "ipv4": {**status["ipv4"], "allocated": allocated}}
    )
    fake.take_changes()  # the controller stopped there; a new one starts
    restarted = new_controller(fake)
    restarted.ctx.clock = lambda: 50.0
    await restarted.rebuild()
    await start_watches(restarted, fake)
    assert addresses(fake, "vm-a") == [(MAC_A, "192.168.48.83", "Allocated")]
    await vm_with_address(restarted, fake, "vm-b", MAC_B)
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.84", "Allocated")]
    final = ipv4(fake)["allocated"]
    assert final["192.168.48.82"] == "DECLINED"  # type: ignore[index]
    assert final["192.168.48.83"] == MAC_A  # type: ignore[index]


async def test_a_pinned_claim_keeps_its_address_over_a_declined_mark(
    fake: FakeKube, served: Controller
) -> None:
    fake.user_create(VMNETCFGS, cfg_body("pinned", MAC_A, ip="192.168.48.86"))
    await settle(served, fake)
    status = obj(fake, IPPOOLS, "net-48")["status"]
    allocated = {**status["ipv4"]["allocated"], "192.168.48.86": "DECLINED"}
    fake.user_patch_status(
        IPPOOLS, (NS, "net-48"), {**status, "ipv4": {**status["ipv4"], "allocated": allocated}}
    )
    fake.take_changes()
    restarted = new_controller(fake)
    await restarted.rebuild()
    await start_watches(restarted, fake)
    assert addresses(fake, "pinned") == [(MAC_A, "192.168.48.86", "Allocated")]
    assert ipv4(fake)["allocated"]["192.168.48.86"] == MAC_A  # type: ignore[index]


async def test_an_entry_refused_for_the_limit_is_acted_on_once_there_is_room(
    fake: FakeKube, served: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, an entry refused for the limit was marked acted on and never looked at
    again: that VM kept its declined address for good."""
    clock = [1000.0]
    served.ctx.clock = lambda: clock[0]
    await vm_with_address(served, fake, "vm-a", MAC_A)
    await vm_with_address(served, fake, "vm-b", MAC_B)
    monkeypatch.setattr(declines, "MAX_ASIDE", 1)
    entries = (
        DeclinedAddress(MAC_A, "192.168.48.82", AT),
        DeclinedAddress(MAC_B, "192.168.48.83", AT),
    )
    reports = Reports(served.ctx)
    reports.event("ADDED", lease(report(fake, *entries)))
    await settle(served, fake)
    assert (results(served)["honoured"], results(served)["limit"]) == (1, 1)
    assert addresses(fake, "vm-b") == [(MAC_B, "192.168.48.83", "Allocated")]
    served.queue.add((IPPOOLS, NS, "net-48"))  # another reconcile: refused again, quietly
    await settle(served, fake)
    assert results(served)["limit"] == 1
    assert len(events(fake, "DeclineIgnored")) == 1
    clock[0] += 600.0  # .82's quarantine is over: room for one
    served.queue.add((IPPOOLS, NS, "net-48"))
    await settle(served, fake)
    assert results(served)["honoured"] == 2
    ((_, moved, _),) = addresses(fake, "vm-b")
    assert moved != "192.168.48.83"
    assert ipv4(fake)["allocated"]["192.168.48.83"] == "DECLINED"  # type: ignore[index]

"""The agents' reports into the IPPool's status: the `RogueDHCPServer` condition, over the
in-memory API server (the report Leases handed to `Reports` as their watch would)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.unit.controller import test_reconcilers as base
from tests.unit.controller.fakeapi import FakeKube
from tests.unit.controller.test_reconcilers import NS, condition, obj, settle, vm_with_address
from vmdhcp.agent.report import AgentReport, ReportedServer, lease_body
from vmdhcp.controller.engine import IPPOOLS, Controller
from vmdhcp.controller.rogue import CONDITION, Reports, rogue_state, with_rogue_condition

SERVER = ReportedServer("192.168.48.9", "02:00:00:00:00:09", "2026-12-05T07:00:00Z")


# the reconcilers' fixtures: a fake API server, a served pool, no reconcile error allowed
fake = base.fake
controller = base.controller
served = base.served
no_reconcile_errors = base.no_reconcile_errors


def report(fake: FakeKube, *servers: ReportedServer, uid: str | None = None) -> AgentReport:
    pool = obj(fake, IPPOOLS, "net-48")
    return AgentReport((NS, "net-48"), uid or pool["metadata"]["uid"], "agent-0", 2.0, servers)


def lease(of: AgentReport) -> dict[str, Any]:
    body = lease_body(of, "agents", "agent-0_u", None)
    body["metadata"]["resourceVersion"] = "1"
    return body


def conditions(fake: FakeKube) -> list[str]:
    pool = obj(fake, IPPOOLS, "net-48")
    return [c["type"] for c in (pool.get("status") or {}).get("conditions") or []]


async def test_a_reported_server_sets_the_condition_and_its_absence_clears_it(
    fake: FakeKube, served: Controller
) -> None:
    reports = Reports(served.ctx)
    reports.listed({"items": [lease(report(fake))]}, True)  # a report with nothing in it
    await settle(served, fake)
    assert CONDITION not in conditions(fake)  # never had one: no condition, no write

    reports.event("MODIFIED", lease(report(fake, SERVER)))
    await settle(served, fake)
    seen = condition(obj(fake, IPPOOLS, "net-48"), CONDITION)
    assert (seen["status"], seen["reason"]) == ("True", "RogueServerSeen")
    assert "192.168.48.9 (MAC 02:00:00:00:00:09)" in seen["message"]
    assert "agent-0" in seen["message"]

    # the controller's own status writes (an allocation) keep it
    await vm_with_address(served, fake, "vm-1", "02:00:00:00:00:0a")
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "True"

    reports.event("MODIFIED", lease(report(fake)))
    await settle(served, fake)
    gone = condition(obj(fake, IPPOOLS, "net-48"), CONDITION)
    assert (gone["status"], gone["reason"]) == ("False", "NoRogueServer")
    assert gone["lastTransitionTime"]

    # the same report again: nothing to write
    writes = fake.writes
    reports.event("MODIFIED", lease(report(fake)))
    await settle(served, fake)
    assert fake.writes == writes


async def test_a_deleted_report_or_a_relist_without_it_clears_the_condition(
    fake: FakeKube, served: Controller
) -> None:
    reports = Reports(served.ctx)
    reports.event("ADDED", lease(report(fake, SERVER)))
    await settle(served, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "True"
    reports.listed({"items": []}, False)
    await settle(served, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "False"
    reports.event("ADDED", lease(report(fake, SERVER)))
    await settle(served, fake)
    reports.event("DELETED", lease(report(fake, SERVER)))
    await settle(served, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "False"


async def test_a_report_about_an_earlier_pool_of_the_same_name_is_ignored(
    fake: FakeKube, served: Controller
) -> None:
    Reports(served.ctx).event("ADDED", lease(report(fake, SERVER, uid="an-older-pool")))
    await settle(served, fake)
    assert CONDITION not in conditions(fake)


def test_the_condition_names_every_server_and_is_kept_once_present() -> None:
    two = (SERVER, ReportedServer("192.168.48.10", "02:00:00:00:00:10"))
    state = rogue_state(AgentReport(("a", "b"), "u", "agent-0", 60, two), "u")
    assert state[0] is True
    assert "192.168.48.9 (MAC 02:00:00:00:00:09) since 2026-12-05T07:00:00Z" in state[2]
    assert "192.168.48.10 (MAC 02:00:00:00:00:10)" in state[2]
    assert "every 60s" in state[2]
    body = {"metadata": {"uid": "u"}}
    assert with_rogue_condition([], None, body, "T", None) == []
    clean = AgentReport(("a", "b"), "u", "agent-0", 60, ())
    added = with_rogue_condition([], AgentReport(("a", "b"), "u", "a", 60, two), body, "T", 1)
    kept = with_rogue_condition(added, clean, body, "T2", 1)
    assert [(c["type"], c["status"]) for c in kept] == [(CONDITION, "False")]
    assert kept[0]["lastTransitionTime"] == "T2"


async def test_a_report_that_says_the_check_is_off_makes_the_condition_unknown(
    fake: FakeKube, served: Controller
) -> None:
    """The serving agent has no rogue check (interval 0, no NET_RAW): what an earlier
    leader saw is no longer known (before: True stayed for ever, or turned False)."""
    reports = Reports(served.ctx)
    reports.event("ADDED", lease(report(fake, SERVER)))
    await settle(served, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "True"
    off = dataclasses.replace(report(fake), rogue_check_interval=0.0)
    reports.event("MODIFIED", lease(off))
    await settle(served, fake)
    unknown = condition(obj(fake, IPPOOLS, "net-48"), CONDITION)
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "RogueCheckOff")
    assert "does not check" in unknown["message"]
    since = unknown["lastTransitionTime"]
    writes = fake.writes
    reports.event("MODIFIED", lease(off))  # the same again: nothing moves, nothing written
    served.queue.add((IPPOOLS, NS, "net-48"))
    await settle(served, fake)
    assert fake.writes == writes
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["lastTransitionTime"] == since
    # a pool that never had the condition does not get it for a report with the check off
    assert with_rogue_condition([], off, {"metadata": {}}, "T", None) == []


async def test_a_report_under_another_name_or_without_a_pool_uid_is_ignored(
    fake: FakeKube, served: Controller
) -> None:
    """A Lease is the report of the pool its name says, with that pool's uid: another
    Lease's content naming net-48 (before: attributed by content) says nothing."""
    reports = Reports(served.ctx)
    other = lease(report(fake, SERVER))
    other["metadata"]["name"] = "vm-dhcp-agent-report.other.pool"
    reports.event("ADDED", other)
    reports.listed({"items": [other]}, False)
    no_uid = lease(dataclasses.replace(report(fake, SERVER), ippool_uid=""))
    reports.event("ADDED", no_uid)
    await settle(served, fake)
    assert CONDITION not in conditions(fake)
    assert served.ctx.agent_reports == {}
    assert reports.ignored == {"vm-dhcp-agent-report.other.pool", no_uid["metadata"]["name"]}
    reports.event("ADDED", lease(report(fake, SERVER)))  # the pool's own: heard
    await settle(served, fake)
    assert condition(obj(fake, IPPOOLS, "net-48"), CONDITION)["status"] == "True"


async def test_the_start_waits_for_the_reports_first_listing(
    fake: FakeKube, controller: Controller
) -> None:
    """What the controller's start awaits before it builds the IPAM and starts its workers
    (`app.run`: `listed_once(AWAITED_AT_START)`) includes the reports' first listing, which
    `Reports` signals; a later listing signals nothing more."""
    import asyncio

    from vmdhcp.controller.engine import AWAITED_AT_START, REPORTS, VMNETCFGS

    assert REPORTS in AWAITED_AT_START
    reports = Reports(
        controller.ctx, on_first=controller.listed.setdefault(REPORTS, asyncio.Event()).set
    )
    waiting = asyncio.create_task(controller.listed_once(AWAITED_AT_START))
    controller.on_list(IPPOOLS, {"items": []}, True)
    controller.on_list(VMNETCFGS, {"items": []}, True)
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the reports are not in yet
    reports.listed({"items": []}, True)
    await asyncio.wait_for(waiting, 1.0)
    reports.listed({"items": []}, False)

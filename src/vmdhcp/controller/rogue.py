"""What the agents report (`vmdhcp.agent.report`), turned into IPPool status: the
`RogueDHCPServer` condition, True while the pool's serving agent sees another DHCP server
answer on the pool's network, False once it no longer does.

The agent may not write IPPools; it keeps a report Lease per pool in the agent namespace
(labelled `REPORT_LABEL`), which the controller watches here (list and watch, by label, in
that namespace only) and folds into the status it writes anyway. The condition is the
controller's own, like every other condition of the pool, so its status writes keep it.
It appears the first time a foreign server is reported (a pool that never had one does
not get the condition, nor a status write for it) and stays, False, once it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vmdhcp.agent.report import REPORT_LABEL, AgentReport
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import set_condition
from vmdhcp.controller.context import IPPOOLS, Context
from vmdhcp.controller.informer import WATCH_SECONDS, Informer
from vmdhcp.controller.store import Body, meta
from vmdhcp.k8s import Kube, lease_lister, lease_watcher

log = logging.getLogger("vmdhcp.controller")

CONDITION = "RogueDHCPServer"
SEEN, NOT_SEEN = "RogueServerSeen", "NoRogueServer"
MESSAGE_LIMIT = 1024


def report_of(ctx: Context, pool: Ref) -> AgentReport | None:
    for report in ctx.agent_reports.values():
        if report.ippool == pool:
            return report
    return None


class Reports:
    """Keeps `ctx.agent_reports` (report Lease name -> report) as the report Leases' watch
    delivers them, and queues the pools whose report changed."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.by_lease = ctx.agent_reports

    def listed(self, listing: Body, first: bool) -> None:
        """A listing is the whole truth: reports that are no longer there are dropped."""
        fresh: dict[str, AgentReport] = {}
        for body in listing.get("items") or []:
            report = AgentReport.from_lease(body)
            if report is not None:
                fresh[str(meta(body).get("name"))] = report
        changed = {
            name for name in {*fresh, *self.by_lease} if fresh.get(name) != self.by_lease.get(name)
        }
        pools = {r.ippool for n in changed for r in (fresh.get(n), self.by_lease.get(n)) if r}
        self.by_lease.clear()
        self.by_lease.update(fresh)
        for pool in pools:
            self.ctx.queue.add((IPPOOLS, *pool))

    def event(self, event_type: str, body: Body) -> None:
        name = str(meta(body).get("name"))
        previous = self.by_lease.pop(name, None)
        report = None if event_type == "DELETED" else AgentReport.from_lease(body)
        if report is not None:
            self.by_lease[name] = report
        if report == previous:
            return
        for pool in {r.ippool for r in (previous, report) if r is not None}:
            self.ctx.queue.add((IPPOOLS, *pool))


def report_informer(
    kube: Kube, namespace: str, reports: Reports, watch_seconds: int = WATCH_SECONDS
) -> Informer:
    """The agents' report Leases in the agent namespace (not the election Leases, renewed
    every 2 s: those are read at a pool's reconcile, see `replicas`)."""
    selector = f"{REPORT_LABEL}=true"
    return Informer(
        f"agent reports in {namespace}",
        lease_lister(kube, namespace, selector),
        lease_watcher(kube, namespace, selector, watch_seconds),
        reports.listed,
        reports.event,
    )


def rogue_state(report: AgentReport | None, pool_uid: str) -> tuple[bool, str, str]:
    """The condition a report calls for. A report of another pool of the same name (one
    deleted before) says nothing about this one."""
    if report is None or (report.ippool_uid and pool_uid and report.ippool_uid != pool_uid):
        return False, NOT_SEEN, "no other DHCP server seen on this network"
    every = f"every {report.rogue_check_interval:g}s" if report.rogue_check_interval else "off"
    if not report.rogue_servers:
        return (
            False,
            NOT_SEEN,
            f"no other DHCP server seen on this network (agent {report.agent or '?'} checks "
            f"{every})",
        )
    servers = "; ".join(
        f"{s.describe()}" + (f" since {s.since}" if s.since else "") for s in report.rogue_servers
    )
    message = (
        f"another DHCP server answers on this network, VMs may take their addresses from it: "
        f"{servers} (seen by agent {report.agent or '?'}, which checks {every})"
    )
    return True, SEEN, message[:MESSAGE_LIMIT]


def with_rogue_condition(
    conditions: list[dict[str, Any]],
    report: AgentReport | None,
    body: Body,
    now: str,
    generation: int | None,
    on_change: Callable[[bool, str], None] | None = None,
) -> list[dict[str, Any]]:
    """`conditions` with `RogueDHCPServer` set from `report`: added when a foreign server
    is first reported, kept (False) once it has been there."""
    status, reason, message = rogue_state(report, str(meta(body).get("uid") or ""))
    present = next((c for c in conditions if c.get("type") == CONDITION), None)
    if present is None and not status:
        return conditions
    if on_change is not None and (present is None or present.get("status") != str(status)):
        on_change(status, message)
    return set_condition(
        conditions, CONDITION, status, reason, message, now=now, generation=generation
    )

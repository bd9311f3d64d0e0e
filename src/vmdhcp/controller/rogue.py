"""What the agents report (`vmdhcp.agent.report`), turned into IPPool status: the
`RogueDHCPServer` condition, True while the pool's serving agent sees another DHCP server
answer on the pool's network, False once it no longer does.

The agent may not write IPPools; it keeps a report Lease per pool in the agent namespace
(labelled `REPORT_LABEL`), which the controller watches here (list and watch, by label, in
that namespace only) and folds into the status it writes anyway. The condition is the
controller's own, like every other condition of the pool, so its status writes keep it.
It appears the first time a foreign server is reported (a pool that never had one does
not get the condition, nor a status write for it) and stays, False, once it is gone;
Unknown (`RogueCheckOff`) while the serving agent's report says it does not check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vmdhcp.agent.report import REPORT_LABEL, AgentReport
from vmdhcp.api.constants import report_lease_name
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import set_condition
from vmdhcp.controller.context import IPPOOLS, Context
from vmdhcp.controller.informer import WATCH_SECONDS, Informer
from vmdhcp.controller.store import Body, meta
from vmdhcp.k8s import Kube, lease_lister, lease_watcher

log = logging.getLogger("vmdhcp.controller")

CONDITION = "RogueDHCPServer"
SEEN, NOT_SEEN, CHECK_OFF = "RogueServerSeen", "NoRogueServer", "RogueCheckOff"
MESSAGE_LIMIT = 1024


def report_of(ctx: Context, pool: Ref) -> AgentReport | None:
    """The pool's report: the one under its report Lease's name (see `Reports._accepted`)."""
    report = ctx.agent_reports.get(report_lease_name(*pool))
    return report if report is not None and report.ippool == pool else None


class Reports:
    """Keeps `ctx.agent_reports` (report Lease name -> report) as the report Leases' watch
    delivers them, and queues the pools whose report changed."""

    def __init__(self, ctx: Context, on_first: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        self.by_lease = ctx.agent_reports
        self.on_first = on_first
        self.ignored: set[str] = set()
        """Lease names whose report was refused (logged once each)."""
        self.refused = 0
        """Called after the first listing is in: the controller builds the IPAM and starts
        its workers only then, so that no pool is reconciled without its report (a
        condition would flap True -> False -> True, an Event be posted twice)."""

    def listed(self, listing: Body, first: bool) -> None:
        """A listing is the whole truth: reports that are no longer there are dropped."""
        self._listed(listing)
        if self.on_first is not None:
            on_first, self.on_first = self.on_first, None
            on_first()

    def _listed(self, listing: Body) -> None:
        fresh: dict[str, AgentReport] = {}
        for body in listing.get("items") or []:
            report = self._accepted(body)
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

    def _accepted(self, body: Body) -> AgentReport | None:
        """The report a Lease carries, if it is the report of the pool it names: a Lease is
        the report of pool P only under P's name (`report_lease_name`) and with P's uid, so
        a Lease of one pool (written by anyone who may write Leases here) cannot speak for
        another. Others are ignored, counted and logged once per Lease."""
        report = AgentReport.from_lease(body)
        name = str(meta(body).get("name"))
        if report is None or (name == report_lease_name(*report.ippool) and report.ippool_uid):
            return report
        if name not in self.ignored:
            log.warning(
                "report lease %s ignored: it is not the report of ippool %s/%s (%s)",
                name,
                *report.ippool,
                "no ippool uid" if not report.ippool_uid else "another pool's lease name",
            )
        self.ignored.add(name)
        self.refused += 1
        return None

    def event(self, event_type: str, body: Body) -> None:
        name = str(meta(body).get("name"))
        previous = self.by_lease.pop(name, None)
        report = None if event_type == "DELETED" else self._accepted(body)
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


def rogue_state(report: AgentReport | None, pool_uid: str) -> tuple[bool | None, str, str]:
    """The condition a report calls for (None: Unknown). A report of another pool of the
    same name (one deleted before) says nothing about this one; a serving agent whose check
    is off (`--rogue-check-interval 0`, or no packet socket) cannot say either way."""
    if report is None or not report.ippool_uid or report.ippool_uid != pool_uid:
        return False, NOT_SEEN, "no other DHCP server seen on this network"
    if not report.rogue_check_interval:
        return (
            None,
            CHECK_OFF,
            f"the serving agent {report.agent or '?'} does not check for other DHCP servers "
            "(--rogue-check-interval 0, or no NET_RAW capability)",
        )
    every = f"every {report.rogue_check_interval:g}s"
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
    value = "Unknown" if status is None else str(status)
    if on_change is not None and (present is None or present.get("status") != value):
        on_change(bool(status), message)
    out = set_condition(
        conditions, CONDITION, bool(status), reason, message, now=now, generation=generation
    )
    if status is None:  # set_condition knows True and False only
        for condition in out:
            if condition.get("type") == CONDITION and condition.get("status") != "Unknown":
                if present is not None and present.get("status") == "Unknown":
                    condition["lastTransitionTime"] = present.get("lastTransitionTime") or now
                    condition["lastUpdateTime"] = present.get("lastUpdateTime") or now
                else:
                    condition["lastTransitionTime"] = now
                condition["status"] = "Unknown"
    return out

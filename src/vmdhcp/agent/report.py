"""The agent's report to the controller: what only the serving agent sees on the wire, for
the controller to put in the IPPool's status (the agent may not write IPPools).

The channel is one coordination.k8s.io Lease per IPPool in the agent namespace,
`report_lease_name(pool)`, labelled `REPORT_LABEL=true`, with the report as JSON in the
annotation `REPORT_ANNOTATION`; `spec.holderIdentity` names the agent that wrote it last,
`spec.renewTime` when. The agent already creates, reads and updates Leases there (its
election), so the channel costs it no new privilege; the controller lists and watches
these Leases by label (read only, in that one namespace). Only the serving agent writes,
and only when the content changes (a pool with nothing to report has no report at all);
the controller never writes it. Level-triggered: the report is the agent's current view,
not a stream of happenings, so a restart on either side loses nothing; the serving agent
reads the Lease again every `RESYNC_SECONDS` and rewrites it if it says something else.
Every write is fenced on the agent's election (made only with time left before its renew
deadline, with a timeout within it), and a leader that stops serving withdraws its report
from its writer, so a deposed leader's late write cannot replace the new leader's.

The content is versioned and open to more fields (readers ignore the ones they do not
know): `rogueServers` (the `RogueDHCPServer` condition) and `declined` ("MAC X declined
address Y", `mac`, `address`, `at`), kept by the agent until the IPPool it watches no
longer gives Y to X, and acted on by the controller (`vmdhcp.controller.declines`).

Pure but for `ReportWriter`, which does the writing, and `Reporter`, which puts the parts
(the rogue check's, the declines') together; the controller imports the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vmdhcp.api import GROUP
from vmdhcp.api.constants import report_lease_name
from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.agent")

REPORT_LABEL = f"{GROUP}/agent-report"
REPORT_ANNOTATION = f"{GROUP}/agent-report"
REPORT_VERSION = 1
WRITE_RETRY_SECONDS = 5.0
RESYNC_SECONDS = 10.0
"""The serving agent reads its report Lease this often and writes it again if it differs
from what it wants (level-triggered: a write of someone else's is undone)."""
WRITE_TIMEOUT = 10.0
MIN_WRITE_BUDGET = 1.0
"""A write goes out only with this long left before this leader's renew deadline, and its
timeout ends before that deadline: no report write of a deposed leader lands."""


def unfenced() -> float:
    """Without leader election the one agent always may write."""
    return float("inf")


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, order=True)
class ReportedServer:
    server_id: str
    mac: str
    since: str = field(default="", compare=False)

    def describe(self) -> str:
        return f"{self.server_id} (MAC {self.mac})"


@dataclass(frozen=True, order=True)
class DeclinedAddress:
    """A client (`mac`) declined the address it was offered (`address`), at `at` by the
    reporting agent's wall clock: a text that identifies the decline, never compared with
    another machine's clock."""

    mac: str
    address: str
    at: str = ""

    def describe(self) -> str:
        return f"{self.mac} declined {self.address}"


@dataclass(frozen=True)
class AgentReport:
    ippool: tuple[str, str]
    ippool_uid: str
    agent: str
    rogue_check_interval: float
    rogue_servers: tuple[ReportedServer, ...] = ()
    declined: tuple[DeclinedAddress, ...] = ()

    def same_content(self, other: AgentReport | None) -> bool:
        """Whether writing this over `other` would tell the controller anything new (who
        wrote it and since when a server is known do not count: no write per failover)."""
        if other is None:
            return not self.rogue_servers and not self.declined
        return (
            self.ippool == other.ippool
            and self.ippool_uid == other.ippool_uid
            and self.rogue_check_interval == other.rogue_check_interval
            and self.rogue_servers == other.rogue_servers
            and self.declined == other.declined
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": REPORT_VERSION,
                "ippool": f"{self.ippool[0]}/{self.ippool[1]}",
                "ippoolUID": self.ippool_uid,
                "agent": self.agent,
                "rogueCheckInterval": self.rogue_check_interval,
                "rogueServers": [
                    {"serverID": s.server_id, "mac": s.mac, "since": s.since}
                    for s in self.rogue_servers
                ],
                "declined": [
                    {"mac": d.mac, "address": d.address, "at": d.at} for d in self.declined
                ],
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> AgentReport | None:
        """The report a Lease carries; None when it carries none we can read (a report of a
        later version with the same fields is read; fields it adds are ignored)."""
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        try:
            data = json.loads(annotations.get(REPORT_ANNOTATION) or "")
            namespace, _, name = data["ippool"].partition("/")
            if not namespace or not name:
                return None
            servers = tuple(
                sorted(
                    ReportedServer(_text(s["serverID"]), _text(s["mac"]), str(s.get("since") or ""))
                    for s in data.get("rogueServers") or []
                )
            )
            declined = _declined(data.get("declined"))
            return cls(
                (namespace, name),
                str(data.get("ippoolUID") or ""),
                str(data.get("agent") or ""),
                float(data.get("rogueCheckInterval") or 0),
                servers,
                declined,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _declined(items: Any) -> tuple[DeclinedAddress, ...]:
    """The declined entries; one that cannot be read is skipped alone (the rest of the
    report, the rogue servers included, still counts)."""
    found = []
    for item in items if isinstance(items, list) else []:
        try:
            found.append(
                DeclinedAddress(
                    _text(item["mac"]), _text(item["address"]), str(item.get("at") or "")
                )
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return tuple(sorted(found))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a non-empty string: {value!r}")
    return value


def lease_body(
    report: AgentReport, namespace: str, identity: str, current: dict[str, Any] | None
) -> dict[str, Any]:
    """The Lease carrying `report`: `current` (as read, with its resourceVersion) updated,
    or a new one."""
    body: dict[str, Any] = dict(current or {})
    metadata = dict(body.get("metadata") or {})
    metadata["name"] = report_lease_name(*report.ippool)
    metadata["namespace"] = namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), REPORT_LABEL: "true"}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        REPORT_ANNOTATION: report.to_json(),
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {**(body.get("spec") or {}), "holderIdentity": identity, "renewTime": stamp}
    body.update(apiVersion="coordination.k8s.io/v1", kind="Lease", metadata=metadata, spec=spec)
    return body


class ReportWriter:
    """Keeps the pool's report Lease equal to the latest report wanted: written from a
    thread, only when its content differs from what the Lease holds, retried on failure,
    and read again every `RESYNC_SECONDS` (rewritten if it differs). Every write is fenced
    on leadership: `time_left` (the election's: seconds before this leader's renew deadline,
    0 when not leading) must leave `MIN_WRITE_BUDGET`, and the write's timeout ends within
    it. `withdraw` (serving stopped) forgets the wanted report: nothing more is written."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        identity: str,
        time_left: Callable[[], float] = unfenced,
        resync: float = RESYNC_SECONDS,
    ) -> None:
        self.api = api
        """A `vmdhcp.agent.kubeapi.Connection` (its `request`)."""
        self.namespace = namespace
        self.identity = identity
        self.time_left = time_left
        self.resync = resync
        self.writes = 0
        self.fenced = 0
        """Writes not made because this agent was not (or no longer surely) the leader."""
        self._wanted: AgentReport | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _path(self, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return f"{base}/{name}" if name else base

    def _read(self, pool: tuple[str, str]) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self.api.request(
                "GET", self._path(report_lease_name(*pool)), timeout=10
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return lease

    async def stored(self, pool: tuple[str, str]) -> AgentReport | None:
        """What the pool's report says now (a new leader starts from it); None when there
        is none or it cannot be read."""
        try:
            lease = await asyncio.to_thread(self._read, pool)
        except Exception as exc:  # best effort: the agent starts from nothing then
            log.warning("cannot read the report of ippool %s/%s: %s", *pool, exc)
            return None
        return None if lease is None else AgentReport.from_lease(lease)

    def want(self, report: AgentReport) -> None:
        """Make the report say this (soon); called on the event loop."""
        self._wanted = report
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="agent-report")

    def withdraw(self) -> None:
        """Serving stopped: write nothing more (a retry or resync pending included)."""
        self._wanted = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # then level-triggered: look again
                await asyncio.wait_for(self._wake.wait(), self.resync)
            self._wake.clear()
            report = self._wanted
            if report is None:
                continue
            try:
                await asyncio.to_thread(self._sync, report)
            except Exception as exc:  # the API server away, a conflict: try again
                log.warning(
                    "cannot write the report of ippool %s/%s (retrying in %.0fs): %s",
                    *report.ippool,
                    WRITE_RETRY_SECONDS,
                    str(exc).splitlines()[0] if str(exc) else exc,
                )
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                self._wake.set()

    def _budget(self) -> float | None:
        """The timeout a write may have now, or None when it may not be made."""
        left = self.time_left() - MIN_WRITE_BUDGET / 2
        if left < MIN_WRITE_BUDGET / 2 or self._wanted is None:
            self.fenced += 1
            return None
        return min(WRITE_TIMEOUT, left)

    def _sync(self, report: AgentReport) -> None:
        if self._budget() is None:
            return
        current = self._read(report.ippool)
        if report.same_content(None if current is None else AgentReport.from_lease(current)):
            return
        body = lease_body(report, self.namespace, self.identity, current)
        timeout = self._budget()  # asked again right before the write: the read took time
        if timeout is None or self._wanted is not report:
            return  # deposed meanwhile, or a newer report is wanted: its turn comes
        if current is None:
            self.api.request("POST", self._path(), body=body, timeout=timeout)
        else:
            self.api.request(
                "PUT", self._path(body["metadata"]["name"]), body=body, timeout=timeout
            )  # a 409 (changed meanwhile) is retried from a fresh read
        self.writes += 1
        log.info(
            "reported to the controller for ippool %s/%s: %s; %s",
            *report.ippool,
            ", ".join(s.describe() for s in report.rogue_servers) or "no foreign DHCP server",
            ", ".join(d.describe() for d in report.declined) or "no declined address",
        )


class Reporter:
    """The pool's report, put together from its parts: the rogue check's servers and the
    declined addresses, each set by its owner on the event loop. A serving agent starts from
    the stored report (`resume`), so that a part not yet set keeps what the previous leader
    reported instead of being written away."""

    def __init__(
        self,
        writer: ReportWriter,
        pool: tuple[str, str],
        agent: str,
        pool_uid: Callable[[], str],
        rogue_check_interval: float,
    ) -> None:
        self.writer = writer
        self.pool = pool
        self.agent = agent
        self.pool_uid = pool_uid
        self.rogue_check_interval = rogue_check_interval
        self.rogue_checking = False
        """Set by the rogue check once it runs (`RogueWatch.attach`): without it (interval 0,
        no NET_RAW) the report says the check is off (interval 0) and no servers, whatever
        a previous leader reported (the controller then says Unknown)."""
        self.rogue_servers: tuple[ReportedServer, ...] = ()
        self.declined: tuple[DeclinedAddress, ...] = ()
        self._stored: asyncio.Task[AgentReport | None] | None = None
        self._resumed = False
        self._last: AgentReport | None = None
        """What the report says as far as we know: stored, then what we asked for."""

    async def resume(self) -> AgentReport | None:
        """The stored report of this pool (read once while serving), its parts taken over."""
        if self._stored is None:
            self._stored = asyncio.create_task(self.writer.stored(self.pool))
        stored = await asyncio.shield(self._stored)
        if stored is not None and stored.ippool_uid != self.pool_uid():
            stored = None  # an older pool of that name
        if not self._resumed:
            self._resumed = True
            self._last = stored
            if stored is not None and self.rogue_checking:
                self.rogue_servers = self.rogue_servers or stored.rogue_servers
            if stored is not None:
                self.declined = self.declined or stored.declined
            self._push(always=True)  # the writer keeps the Lease equal to it from now on
        return stored

    def stand_down(self) -> None:
        """Serving stopped: the next leader's report is its own; read it again if we lead."""
        self._stored = None
        self._resumed = False
        self._last = None
        self.rogue_servers, self.declined = (), ()
        self.writer.withdraw()

    def set_rogue_servers(self, servers: tuple[ReportedServer, ...]) -> None:
        self.rogue_servers = servers
        self._push()

    def set_declined(self, declined: tuple[DeclinedAddress, ...]) -> None:
        self.declined = tuple(sorted(declined))
        self._push()

    def _push(self, *, always: bool = False) -> None:
        if not self._resumed:
            return  # written once `resume` has read what is there
        report = AgentReport(
            self.pool,
            self.pool_uid(),
            self.agent,
            self.rogue_check_interval if self.rogue_checking else 0.0,
            self.rogue_servers if self.rogue_checking else (),
            self.declined,
        )
        if report.same_content(self._last) and not always:
            return
        self._last = report
        self.writer.want(report)

"""The agent's report to the controller: its Lease, its JSON, and when it is written."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from vmdhcp.agent.report import (
    REPORT_ANNOTATION,
    REPORT_LABEL,
    AgentReport,
    DeclinedAddress,
    ReportedServer,
    Reporter,
    ReportWriter,
    lease_body,
    report_lease_name,
)
from vmdhcp.api.constants import agent_lease_name
from vmdhcp.errors import ApiError

POOL = ("default", "net-48")
SERVER = ReportedServer("10.77.0.9", "02:00:00:00:00:09", "2026-12-05T07:00:00Z")
REPORT = AgentReport(POOL, "uid-1", "agent-0", 60.0, (SERVER,))
DECLINE = DeclinedAddress("52:54:00:00:00:01", "192.168.48.10", "2026-12-05T07:00:00Z")
EMPTY = AgentReport(POOL, "uid-1", "agent-0", 60.0, ())


def test_the_report_round_trips_through_its_lease() -> None:
    body = lease_body(REPORT, "harvester-system", "agent-0_uid", None)
    assert body["metadata"]["name"] == "vm-dhcp-agent-report.default.net-48"
    assert body["metadata"]["labels"] == {REPORT_LABEL: "true"}
    assert body["spec"]["holderIdentity"] == "agent-0_uid"
    read = AgentReport.from_lease(json.loads(json.dumps(body)))
    assert read == REPORT
    assert read is not None
    assert read.rogue_servers[0].since == SERVER.since


def test_an_update_keeps_the_leases_version_and_other_metadata() -> None:
    current = lease_body(EMPTY, "ns", "agent-1", None)
    current["metadata"]["resourceVersion"] = "42"
    current["metadata"]["annotations"]["someone/else"] = "kept"
    body = lease_body(REPORT, "ns", "agent-0", current)
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["metadata"]["annotations"]["someone/else"] == "kept"
    assert AgentReport.from_lease(body) == REPORT


def test_unreadable_reports_are_none_and_later_fields_are_ignored() -> None:
    for annotation in (None, "", "{", "[]", '{"ippool": 3}', '{"rogueServers": [{}]}'):
        annotations = {} if annotation is None else {REPORT_ANNOTATION: annotation}
        assert AgentReport.from_lease({"metadata": {"annotations": annotations}}) is None
    later = json.loads(REPORT.to_json()) | {"version": 2, "declined": [{"mac": "x"}]}
    lease = {"metadata": {"annotations": {REPORT_ANNOTATION: json.dumps(later)}}}
    assert AgentReport.from_lease(lease) == REPORT


def test_only_a_change_of_content_is_worth_a_write() -> None:
    assert EMPTY.same_content(None)  # no report is the same as nothing to report
    assert not REPORT.same_content(None)
    moved = AgentReport(POOL, "uid-1", "agent-1", 60.0, (ReportedServer("10.77.0.9", SERVER.mac),))
    assert REPORT.same_content(moved)  # another writer, another "since": nothing new
    assert not REPORT.same_content(EMPTY)
    assert not REPORT.same_content(AgentReport(POOL, "uid-2", "agent-0", 60.0, (SERVER,)))


def test_long_pool_names_give_valid_lease_names() -> None:
    name = report_lease_name("a" * 63, "b" * 253)
    assert len(name) <= 253
    assert name != report_lease_name("a" * 63, "b" * 252 + "c")
    assert name[-1].isalnum()


def test_lease_names_of_two_pools_never_meet() -> None:
    """With dashes, `prod/eu-net` and `prod-eu/net` shared a name; and an election Lease
    could be named as another pool's report."""
    assert agent_lease_name("prod", "eu-net") != agent_lease_name("prod-eu", "net")
    assert report_lease_name("prod", "eu-net") != report_lease_name("prod-eu", "net")
    assert agent_lease_name("report-default", "net-48") != report_lease_name("default", "net-48")
    assert agent_lease_name("default", "net-48") == "vm-dhcp-agent.default.net-48"


class FakeApi:
    """The Lease calls of `kubeapi.Connection.request`, on one object."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.calls: list[str] = []
        self.fail = 0

    def request(
        self, method: str, path: str, query: Any = None, body: Any = None, timeout: float = 30
    ) -> dict[str, Any]:
        self.calls.append(method)
        if self.fail:
            self.fail -= 1
            raise ApiError(503, "ServiceUnavailable", "away")
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "NotFound", "no such lease")
            return copy.deepcopy(self.lease)
        if method == "PUT":
            assert self.lease is not None
            assert body["metadata"]["resourceVersion"] == self.lease["metadata"]["resourceVersion"]
        assert path.startswith("/apis/coordination.k8s.io/v1/namespaces/agents/leases")
        self.lease = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": str(len(self.calls))},
        }
        return copy.deepcopy(self.lease)


def test_the_writer_writes_only_what_differs() -> None:
    api = FakeApi()
    writer = ReportWriter(api, "agents", "agent-0")

    def sync(report: AgentReport) -> None:
        writer._wanted = report
        writer._sync(report)

    sync(EMPTY)
    assert api.calls == ["GET"]  # nothing to report, no report: no object at all
    sync(REPORT)
    assert api.calls == ["GET", "GET", "POST"]
    sync(REPORT)
    assert api.calls[-1] == "GET"
    sync(EMPTY)
    assert api.calls[-2:] == ["GET", "PUT"]
    assert AgentReport.from_lease(api.lease or {}) == EMPTY
    assert writer.writes == 2


async def test_a_failed_write_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vmdhcp.agent.report.WRITE_RETRY_SECONDS", 0.01)
    api = FakeApi()
    api.fail = 2
    writer = ReportWriter(api, "agents", "agent-0")
    writer.want(REPORT)
    for _ in range(200):
        if writer.writes:
            break
        await asyncio.sleep(0.01)
    await writer.close()
    assert AgentReport.from_lease(api.lease or {}) == REPORT
    assert await writer.stored(POOL) == REPORT


async def _until(condition: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_deposed_leaders_writer_never_overwrites_the_new_leaders_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leader A cannot reach the API server (its write is retried); it is deposed, B leads
    and writes its own report; the network heals: A's stale report must not land (before:
    A's retry read B's Lease and PUT its own over it with the fresh resourceVersion)."""
    monkeypatch.setattr("vmdhcp.agent.report.WRITE_RETRY_SECONDS", 0.01)
    api = FakeApi()
    left = {"a": 8.0}
    old = ReportWriter(api, "agents", "agent-a", lambda: left["a"])
    old_reporter = Reporter(old, POOL, "agent-a", lambda: "uid-1", 60.0)
    old_reporter.rogue_checking = True
    api.fail = 10**6  # partitioned
    await old_reporter.resume()
    old_reporter.set_rogue_servers((SERVER,))
    await asyncio.sleep(0.05)
    left["a"] = 0.0  # its renew deadline passed: deposed
    api.fail = 0  # healed, and the new leader writes its report at once
    new = ReportWriter(api, "agents", "agent-b")
    wanted = AgentReport(POOL, "uid-1", "agent-b", 60.0, (), (DECLINE,))
    new._wanted = wanted
    new._sync(wanted)
    await asyncio.sleep(0.2)  # A's retries, every 0.01 s, had every chance
    assert AgentReport.from_lease(api.lease or {}) == wanted
    assert old.fenced > 0
    assert old.writes == 0
    old_reporter.stand_down()  # and once it stands down it wants nothing at all
    assert old._wanted is None
    left["a"] = 8.0  # even leading again, it writes only what a new term wants
    await asyncio.sleep(0.05)
    assert AgentReport.from_lease(api.lease or {}) == wanted
    await old.close()


async def test_the_leader_rewrites_a_report_that_someone_else_changed() -> None:
    """Level-triggered: the serving agent compares the Lease with what it wants every
    resync, not only when its own content changes (before: its `_last` equalled its content,
    so a Lease overwritten behind its back stayed wrong)."""
    api = FakeApi()
    writer = ReportWriter(api, "agents", "agent-b", resync=0.02)
    reporter = Reporter(writer, POOL, "agent-b", lambda: "uid-1", 60.0)
    reporter.rogue_checking = True
    reporter.set_rogue_servers((SERVER,))
    await reporter.resume()
    await _until(lambda: writer.writes == 1)
    mine = AgentReport.from_lease(api.lease or {})
    assert mine is not None
    assert mine.rogue_servers == (SERVER,)
    stale = lease_body(EMPTY, "agents", "agent-a", api.lease)  # a late write of another
    api.request("PUT", "/apis/coordination.k8s.io/v1/namespaces/agents/leases/x", body=stale)
    await _until(lambda: writer.writes == 2)
    again = AgentReport.from_lease(api.lease or {})
    assert again is not None
    assert again.rogue_servers == (SERVER,)
    await writer.close()


async def test_a_new_leader_keeps_a_stored_report_equal_to_its_own_in_place() -> None:
    """A new leader whose content equals the stored report still keeps it level: when a
    stale writer changes it afterwards, it is put back."""
    api = FakeApi()
    api.request(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/agents/leases",
        body=lease_body(REPORT, "agents", "agent-a", None),
    )
    writer = ReportWriter(api, "agents", "agent-b", resync=0.02)
    reporter = Reporter(writer, POOL, "agent-0", lambda: "uid-1", 60.0)
    reporter.rogue_checking = True
    await reporter.resume()
    assert reporter.rogue_servers == (SERVER,)
    api.request(
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/agents/leases/x",
        body=lease_body(EMPTY, "agents", "agent-a", api.lease),
    )
    await _until(lambda: writer.writes == 1)
    assert AgentReport.from_lease(api.lease or {}) == REPORT
    await writer.close()


async def test_an_agent_that_does_not_check_reports_the_check_off_and_no_servers() -> None:
    """A new leader without a rogue check (interval 0, no NET_RAW) must not keep the previous
    leader's servers in the report for ever (before: it adopted them, and nothing cleared
    them): it reports the check off and no servers."""
    api = FakeApi()
    api.request(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/agents/leases",
        body=lease_body(REPORT, "agents", "agent-a", None),
    )
    writer = ReportWriter(api, "agents", "agent-b")
    reporter = Reporter(writer, POOL, "agent-b", lambda: "uid-1", 60.0)  # never attached
    await reporter.resume()
    await _until(lambda: writer.writes == 1)
    written = AgentReport.from_lease(api.lease or {})
    assert written is not None
    assert (written.rogue_check_interval, written.rogue_servers) == (0.0, ())
    await writer.close()

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
    ReportedServer,
    ReportWriter,
    lease_body,
    report_lease_name,
)
from vmdhcp.api.constants import agent_lease_name
from vmdhcp.errors import ApiError

POOL = ("default", "net-48")
SERVER = ReportedServer("10.77.0.9", "02:00:00:00:00:09", "2026-12-05T07:00:00Z")
REPORT = AgentReport(POOL, "uid-1", "agent-0", 60.0, (SERVER,))
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
    writer._sync(EMPTY)
    assert api.calls == ["GET"]  # nothing to report, no report: no object at all
    writer._sync(REPORT)
    assert api.calls == ["GET", "GET", "POST"]
    writer._sync(REPORT)
    assert api.calls[-1] == "GET"
    writer._sync(EMPTY)
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

"""list_then_watch, driven by scripted list and watch callables: a watch that ends is
resumed from the last resourceVersion seen (bookmarks included) without a relist; only an
expiry (410 Gone, as an ERROR event or raised) relists, and that list reaches on_list as
not the first; failures back off; resourceVersions are opaque."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from vmdhcp import watching
from vmdhcp.agent.sources import KubernetesSource
from vmdhcp.api import IPPool
from vmdhcp.errors import ApiError
from vmdhcp.watching import list_then_watch

Body = dict[str, Any]
SEED_FILE = Path(__file__).resolve().parents[1] / "data" / "ippool-net-48.yaml"
Step = Body | Exception
Watch = list[tuple[str, Body]] | Iterator[tuple[str, Body]] | Exception


def obj(name: str, version: str) -> Body:
    return {"metadata": {"name": name, "resourceVersion": version}}


def listing(version: str, *names: str) -> Body:
    return {"metadata": {"resourceVersion": version}, "items": [obj(n, version) for n in names]}


def bookmark(version: str) -> tuple[str, Body]:
    return ("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": version}})


def gone() -> tuple[str, Body]:
    return ("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})


class Gone(Exception):
    """As the `kubernetes` library raises it: an exception with a `status`."""

    status = 410


@dataclass
class Script:
    """Lists and watches answer from their queues, in order; the stop event is set when
    a queue runs dry (so the loop ends at its next call)."""

    lists: list[Step]
    watches: list[Watch]
    stop: threading.Event = field(default_factory=threading.Event)
    listed: list[tuple[Body, bool]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    watched_from: list[str] = field(default_factory=list)
    failures: list[tuple[str, float]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def list_once(self) -> Body:
        self.calls.append("list")
        if not self.lists:
            self.stop.set()
            return listing("end")
        step = self.lists.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def watch_from(self, version: str) -> Iterator[tuple[str, Body]]:
        self.calls.append("watch")
        self.watched_from.append(version)
        if not self.watches:
            self.stop.set()
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def run(self) -> None:
        list_then_watch(
            self.list_once,
            self.watch_from,
            on_list=lambda body, first: self.listed.append((body, first)),
            on_event=lambda kind, body: self.events.append(
                (kind, body["metadata"]["resourceVersion"])
            ),
            on_failure=lambda reason, retry_in: self.failures.append((reason, retry_in)),
            stop=self.stop,
        )


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every watch counts as long-running (no backoff) unless a test says otherwise, and
    backoffs are recorded instead of waited for."""
    waits: list[float] = []
    monkeypatch.setattr(watching, "SHORTEST_WATCH_SECONDS", 0.0)
    real_wait = threading.Event.wait

    def wait(self: threading.Event, timeout: float | None = None) -> bool:
        if timeout is not None:
            waits.append(timeout)
        return real_wait(self, 0)

    monkeypatch.setattr(threading.Event, "wait", wait)
    return waits


def test_a_watch_that_ends_is_resumed_from_the_last_version_without_a_relist() -> None:
    script = Script(
        lists=[listing("100", "a")],
        watches=[
            [("ADDED", obj("b", "101")), ("MODIFIED", obj("a", "102"))],  # server timeout
            [bookmark("150")],  # nothing changed, the bookmark moved on
            [],  # an empty watch keeps the version
            [("DELETED", obj("b", "151"))],
        ],
    )
    script.run()
    assert script.watched_from == ["100", "102", "150", "150", "151"]
    assert [first for _, first in script.listed] == [True]
    assert script.calls.count("list") == 1
    assert script.events == [("ADDED", "101"), ("MODIFIED", "102"), ("DELETED", "151")]
    assert script.failures == []


def test_bookmarks_and_errors_are_not_handed_over() -> None:
    script = Script(lists=[listing("1")], watches=[[bookmark("2"), bookmark("3")]])
    script.run()
    assert script.events == []
    assert script.watched_from == ["1", "3"]


def test_a_broken_connection_is_reported_and_resumed_from_the_last_version() -> None:
    def broken() -> Iterator[tuple[str, Body]]:
        yield ("MODIFIED", obj("a", "7"))
        yield bookmark("8")
        raise ConnectionResetError("connection reset by peer")

    script = Script(
        lists=[listing("5", "a")], watches=[broken(), ConnectionRefusedError("refused")]
    )
    script.run()
    assert script.watched_from == ["5", "8", "8"]
    assert script.calls.count("list") == 1
    assert script.events == [("MODIFIED", "7")]
    assert [reason for reason, _ in script.failures] == ["connection reset by peer", "refused"]
    assert [retry for _, retry in script.failures] == [0.5, 1.0]


@pytest.mark.parametrize(
    "expiry",
    [
        [gone()],
        Gone("(410)\nReason: Expired: too old resource version"),
        ApiError(410, "HTTP 410", "HTTP 410: too old resource version"),
        [("ERROR", {"kind": "Status", "code": 504, "message": "Too large resource version"})],
    ],
    ids=["error-event", "library-exception", "http-410", "too-large"],
)
def test_an_expiry_relists_and_the_relist_is_not_the_first(expiry: Watch) -> None:
    script = Script(
        lists=[listing("20", "a", "b"), listing("40", "a")],
        watches=[[("MODIFIED", obj("a", "21"))], expiry, [("ADDED", obj("c", "41"))]],
    )
    script.run()
    assert [(body["metadata"]["resourceVersion"], first) for body, first in script.listed] == [
        ("20", True),
        ("40", False),
    ]
    # the relist's items reach on_list whole: the consumer sees that b is gone
    assert [i["metadata"]["name"] for i in script.listed[1][0]["items"]] == ["a"]
    assert script.watched_from == ["20", "21", "40", "41"]
    assert script.failures == []  # an expiry is routine, not a failure


def test_an_error_event_that_is_not_an_expiry_is_a_failure_and_rewatches() -> None:
    error = ("ERROR", {"kind": "Status", "code": 500, "message": "etcd hiccup"})
    script = Script(lists=[listing("3")], watches=[[bookmark("4"), error]])
    script.run()
    assert script.watched_from == ["3", "4"]
    assert script.calls.count("list") == 1
    assert script.failures == [("watch error 500: etcd hiccup", 0.5)]


def test_a_failing_list_backs_off_up_to_ten_seconds(no_waiting: list[float]) -> None:
    refused = [ApiError(403, "Forbidden", "ippools is forbidden") for _ in range(7)]
    script = Script(lists=[*refused, listing("9")], watches=[])
    script.run()
    retries = [retry for _, retry in script.failures]
    assert retries == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert no_waiting[: len(retries)] == retries
    assert script.failures[0][0] == "ippools is forbidden"
    # the first list that works is still the first
    assert [first for _, first in script.listed] == [True]
    assert script.watched_from == ["9"]


def test_a_list_without_a_resource_version_is_a_failure() -> None:
    script = Script(lists=[{"metadata": {}, "items": []}, listing("1")], watches=[])
    script.run()
    assert [first for _, first in script.listed] == [True]
    assert len(script.failures) == 1
    assert "resourceVersion" in script.failures[0][0]


def test_watches_that_end_at_once_back_off_and_a_long_one_resets_it(
    monkeypatch: pytest.MonkeyPatch, no_waiting: list[float]
) -> None:
    monkeypatch.setattr(watching, "SHORTEST_WATCH_SECONDS", 1.0)
    # each watch reads the clock when it starts and when it ends
    clock = itertools.chain(
        [0.0, 0.1, 1.0, 1.1, 2.0, 2.2, 3.0, 9.0, 10.0, 10.1], itertools.count(20)
    )
    monkeypatch.setattr(watching, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    script = Script(lists=[listing("1")], watches=[[], [], [], [], []])
    script.run()
    # three short watches: 0.5, 1, 2 s; a long one resets; a short one waits 0.5 s again
    assert no_waiting == [0.5, 1.0, 2.0, 0.5]
    assert script.failures == []  # short watches back off quietly
    assert script.calls.count("list") == 1


@pytest.mark.parametrize(
    "versions",
    [["abc", "xyz", "abd"], ["10", "9", "100"], ["v2", "v10", "v1"]],
    ids=["letters", "descending", "mixed"],
)
def test_resource_versions_are_opaque(versions: list[str]) -> None:
    first, *later = versions
    script = Script(
        lists=[listing(first, "a")],
        watches=[[("MODIFIED", obj("a", v))] for v in later],
    )
    script.run()
    assert script.watched_from == versions
    assert script.events == [("MODIFIED", v) for v in later]
    assert script.failures == []


def test_stop_during_a_watch_ends_the_loop_before_the_next_event() -> None:
    stop = threading.Event()
    seen: list[str] = []

    def watch_from(version: str) -> Iterator[tuple[str, Body]]:
        yield ("ADDED", obj("a", "2"))
        stop.set()
        yield ("ADDED", obj("b", "3"))

    list_then_watch(
        lambda: listing("1"),
        watch_from,
        on_list=lambda body, first: None,
        on_event=lambda kind, body: seen.append(body["metadata"]["name"]),
        on_failure=lambda reason, retry_in: None,
        stop=stop,
    )
    assert seen == ["a"]


# -- the agent's KubernetesSource on top of it: a version it already has is not delivered --


def pool(version: str, uid: str = "u-1", dns: str = "1.1.1.1", note: str = "") -> Body:
    body: Body = yaml.safe_load(SEED_FILE.read_text())
    body["metadata"].update(uid=uid, resourceVersion=version)
    if note:
        body["metadata"]["annotations"] = {"note": note}
    body["spec"]["ipv4Config"]["dns"] = [dns]
    return body


def pool_list(version: str, *items: Body) -> Body:
    return {"metadata": {"resourceVersion": version}, "items": list(items)}


class FakeApi:
    """The agent's Connection, scripted like `Script` (the source's stop event ends it)."""

    def __init__(self, source: KubernetesSource, lists: list[Body], watches: list[Watch]):
        self.source, self.lists, self.watches = source, lists, watches
        self.watched_from: list[str] = []
        self.calls: list[str] = []

    def request(self, method: str, path: str, query: Any = None, **_: Any) -> Body:
        self.calls.append("list")
        if not self.lists:
            self.source.stop()
            return pool_list("end")
        return self.lists.pop(0)

    def watch(self, path: str, query: dict[str, Any], seconds: int) -> Iterator[tuple[str, Body]]:
        self.calls.append("watch")
        self.watched_from.append(query["resourceVersion"])
        if not self.watches:
            self.source.stop()
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def new_source() -> KubernetesSource:
    async def never(pool: IPPool | None) -> None:
        raise AssertionError("the thread hands over through put(), not deliver()")

    return KubernetesSource("default", "net-48", never, kubeconfig=None, context=None)


def delivered_by(source: KubernetesSource, api: FakeApi) -> list[tuple[str, str, str] | None]:
    """What the source hands to the agent: (resourceVersion, uid, first DNS) or None."""
    out: list[tuple[str, str, str] | None] = []

    def put(item: IPPool | None) -> None:
        if item is None:
            out.append(None)
        else:
            dns = item.model_dump(by_alias=True)["spec"]["ipv4Config"]["dns"]
            out.append((item.metadata.resource_version or "", item.metadata.uid or "", dns[0]))

    source.api = api
    source._watch_forever(put)
    return out


def test_the_agent_is_given_each_pool_version_once() -> None:
    source = new_source()
    api = FakeApi(
        source,
        lists=[
            pool_list("5", pool("5")),
            pool_list("30", pool("7", dns="9.9.9.9")),  # relist after 410: the same pool
            pool_list("40"),  # relist after 410: the pool went unwatched
            pool_list("50"),  # and again: still none
        ],
        watches=[
            [],  # the server's timeout: resumed, nothing delivered again
            [("MODIFIED", pool("6", note="a"))],  # a new version, but not for the agent
            [("MODIFIED", pool("7", dns="9.9.9.9"))],  # a change
            [bookmark("20")],
            [gone()],
            [gone()],
            [gone()],
            [("ADDED", pool("51", uid="u-2"))],  # created again: another uid
            [("DELETED", pool("52", uid="u-2"))],
            [("ADDED", pool("53", uid="u-3"))],
            [("MODIFIED", pool("53", uid="u-3"))],  # the same resourceVersion again
        ],
    )
    assert delivered_by(source, api) == [
        ("5", "u-1", "1.1.1.1"),
        ("7", "u-1", "9.9.9.9"),
        None,
        ("51", "u-2", "1.1.1.1"),
        None,
        ("53", "u-3", "1.1.1.1"),
    ]
    assert api.watched_from == ["5", "5", "6", "7", "20", "30", "40", "50", "51", "52", "53", "53"]


def test_an_empty_first_list_is_delivered_as_no_pool() -> None:
    source = new_source()
    api = FakeApi(source, lists=[pool_list("1")], watches=[[], [("ADDED", pool("2"))]])
    assert delivered_by(source, api) == [None, ("2", "u-1", "1.1.1.1")]


def test_a_broken_pool_is_logged_once_and_a_fixed_one_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = pool("3")
    del broken["spec"]
    source = new_source()
    api = FakeApi(
        source,
        lists=[pool_list("2", pool("2")), pool_list("9", broken)],
        watches=[[("MODIFIED", broken)], [gone()], [("MODIFIED", pool("10"))]],
    )
    assert delivered_by(source, api) == [("2", "u-1", "1.1.1.1"), ("10", "u-1", "1.1.1.1")]
    assert sum("keeping the previous leases" in r.getMessage() for r in caplog.records) == 1

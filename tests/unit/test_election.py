"""Leader election (vmdhcp.election) against an in-memory Lease store with real
resourceVersion semantics, on a virtual timeline: every candidate has its own monotonic
clock (an arbitrary base) and its own, possibly skewed, wall clock."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vmdhcp.election import LeaderElector
from vmdhcp.errors import ApiError

NS, NAME = "kube-system", "vm-dhcp-controllers"
EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Timeline:
    """Virtual time shared by all candidates: `sleep` waits until `run_until` moves the
    clock past its wake-up time, so the async loops run instantly and deterministically."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        await future

    @staticmethod
    async def settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def run_until(self, end: float) -> None:
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            wake, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                self.now = wake
                future.set_result(None)
                await self.settle()
        self.now = end


class Store:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.writes = 0
        self.conflicts = 0

    def spec(self) -> dict[str, Any]:
        return dict(self.leases[NS, NAME]["spec"])

    def put(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        lease = copy.deepcopy(body)
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.leases[key] = lease
        return copy.deepcopy(lease)

    def conflict(self, reason: str) -> ApiError:
        self.conflicts += 1
        return ApiError(409, reason)


class View:
    """One candidate's LeaseClient on the shared store; its calls can be made to fail or hang."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mode = "ok"
        self.before_write: Callable[[], None] = lambda: None

    async def _enter(self) -> None:
        await asyncio.sleep(0)  # let concurrent candidates interleave
        if self.mode == "error":
            raise ApiError(500, "InternalError")
        if self.mode == "unreachable":
            raise ApiError(0, "ConnectionRefusedError")
        if self.mode == "timeout":
            raise TimeoutError
        if self.mode == "oserror":
            raise OSError("network is unreachable")
        if self.mode == "hang":
            await asyncio.Event().wait()

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        await self._enter()
        lease = self.store.leases.get((namespace, name))
        if lease is None:
            raise ApiError(404, "NotFound")
        return copy.deepcopy(lease)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._enter()
        self.before_write()
        key = (namespace, body["metadata"]["name"])
        if key in self.store.leases:
            raise self.store.conflict("AlreadyExists")
        return self.store.put(key, body)

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._enter()
        self.before_write()
        current = self.store.leases.get((namespace, name))
        if current is None:
            raise ApiError(404, "NotFound")
        version = body["metadata"].get("resourceVersion")  # absent: unconditional, as the API
        if version is not None and version != current["metadata"]["resourceVersion"]:
            raise self.store.conflict("Conflict")
        return self.store.put((namespace, name), body)


def candidate(
    store: Store, timeline: Timeline, identity: str, *, mono_base: float, wall_offset: float = 0
) -> tuple[LeaderElector, View]:
    view = View(store)
    elector = LeaderElector(
        view,
        NS,
        NAME,
        identity,
        jitter=0.0,
        monotonic=lambda: mono_base + timeline.now,
        wall=lambda: EPOCH + timedelta(seconds=timeline.now + wall_offset),
        sleep=timeline.sleep,
    )
    return elector, view


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture
def store() -> Store:
    return Store()


def start(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


def test_durations_are_validated() -> None:
    view = View(Store())
    LeaderElector(view, NS, NAME, "a")
    for bad in (
        {"lease_duration": 10, "renew_deadline": 10},
        {"renew_deadline": 2.4, "retry_period": 2},
        {"retry_period": 0},
    ):
        with pytest.raises(ValueError, match="must exceed"):
            LeaderElector(view, NS, NAME, "a", **bad)


@pytest.mark.parametrize(
    ("standby_offset", "leader_offset"),
    [(30, 0), (-30, 0), (0, 3600), (0, -3600), (30, -3600), (-30, 3600)],
)
async def test_skewed_clocks_never_steal_a_healthy_lease(
    store: Store, timeline: Timeline, standby_offset: float, leader_offset: float
) -> None:
    leader, _ = candidate(store, timeline, "a", mono_base=50, wall_offset=leader_offset)
    standby, _ = candidate(store, timeline, "b", mono_base=9e5, wall_offset=standby_offset)
    assert await leader.try_acquire_or_renew()
    for _ in range(200):
        timeline.now += 2
        assert await leader.try_acquire_or_renew()
        assert not await standby.try_acquire_or_renew()
        assert leader.is_leader()
        assert not standby.is_leader()
    spec = store.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == 0
    renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
    assert renewed == EPOCH + timedelta(seconds=400 + leader_offset)
    assert standby.observed_holder == "a"


async def test_standby_takes_over_only_after_seeing_no_change_for_lease_duration(
    store: Store, timeline: Timeline
) -> None:
    leader, _ = candidate(store, timeline, "a", mono_base=3)
    standby, _ = candidate(store, timeline, "b", mono_base=7e4, wall_offset=-30)
    for t in range(11):
        timeline.now = t
        if t % 2 == 0:
            assert await leader.try_acquire_or_renew()
        assert not await standby.try_acquire_or_renew()
    # The leader stalls after its renewal at t=10, then renews once more at t=20.
    for t in range(11, 21):
        timeline.now = t
        if t == 20:
            assert await leader.try_acquire_or_renew()
        assert not await standby.try_acquire_or_renew()
    for t in range(21, 35):
        timeline.now = t
        assert not await standby.try_acquire_or_renew(), t
    timeline.now = 35
    assert await standby.try_acquire_or_renew()
    assert standby.is_leader()
    assert not leader.is_leader()
    assert standby.leading_since == 7e4 + 35
    spec = store.spec()
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    assert spec["acquireTime"] == (EPOCH + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("mode", ["error", "unreachable", "timeout", "oserror", "hang"])
async def test_failing_leader_stops_before_any_standby_may_take_over(
    store: Store, timeline: Timeline, mode: str
) -> None:
    leader, leader_view = candidate(store, timeline, "a", mono_base=100)
    standby, _ = candidate(store, timeline, "b", mono_base=5e5, wall_offset=30)
    assert await leader.try_acquire_or_renew()
    samples: list[tuple[float, bool, bool]] = []
    stopped_at: list[float] = []
    took_at: list[float] = []

    async def monitor() -> None:
        while True:
            samples.append((timeline.now, leader.is_leader(), standby.is_leader()))
            await timeline.sleep(0.25)

    async def break_leader() -> None:
        await timeline.sleep(21)  # the renewal at t=20 is the last to succeed
        leader_view.mode = mode

    async def lead() -> None:
        await leader.renew_until_lost()
        stopped_at.append(timeline.now)

    async def contend() -> None:
        await standby.acquire()
        took_at.append(timeline.now)

    tasks = [start(c()) for c in (monitor, break_leader, lead, contend)]
    await timeline.run_until(60)
    for task in tasks:
        task.cancel()

    assert stopped_at == [30.0]  # 20 + renew_deadline
    assert len(took_at) == 1
    assert took_at[0] >= 20 + 15 > stopped_at[0]
    assert all(t < 30 for t, leading, _ in samples if leading)
    assert not any(a and b for _, a, b in samples)
    assert any(b for _, _, b in samples)
    assert store.spec()["holderIdentity"] == "b"


async def test_a_paused_leader_stops_claiming_leadership(store: Store, timeline: Timeline) -> None:
    leader, _ = candidate(store, timeline, "a", mono_base=0)
    timeline.now = 4
    assert await leader.try_acquire_or_renew()
    timeline.now = 13.9
    assert leader.is_leader()
    timeline.now = 14  # woke up from a pause: renew_deadline after the last renewal start
    assert not leader.is_leader()


@pytest.mark.parametrize("state", ["expired", "released", "absent"])
async def test_two_candidates_racing_for_a_free_lease_exactly_one_wins(
    store: Store, timeline: Timeline, state: str
) -> None:
    a, _ = candidate(store, timeline, "a", mono_base=1, wall_offset=-30)
    b, _ = candidate(store, timeline, "b", mono_base=2, wall_offset=30)
    if state != "absent":
        old, _ = candidate(store, timeline, "old", mono_base=3)
        assert await old.try_acquire_or_renew()
        if state == "released":
            assert await old.release()
        else:
            assert not await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
            timeline.now = 15
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    assert store.conflicts == 1
    winner, loser = (a, b) if results[0] else (b, a)
    assert store.spec()["holderIdentity"] == winner.identity
    assert winner.is_leader()
    assert not loser.is_leader()
    assert not await loser.try_acquire_or_renew()
    assert loser.observed_holder == winner.identity


async def test_release_lets_a_standby_take_over_at_once(store: Store, timeline: Timeline) -> None:
    leader, leader_view = candidate(store, timeline, "a", mono_base=10)
    standby, _ = candidate(store, timeline, "b", mono_base=20)
    assert await leader.try_acquire_or_renew()
    assert not await standby.try_acquire_or_renew()
    leading_at_write: list[bool] = []
    leader_view.before_write = lambda: leading_at_write.append(leader.is_leader())
    timeline.now = 1
    assert await leader.release()
    assert leading_at_write == [False]
    assert not leader.is_leader()
    assert leader.observed_holder == ""
    spec = store.spec()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert await standby.try_acquire_or_renew()  # no waiting
    assert store.spec()["leaseTransitions"] == 1


async def test_release_by_a_non_holder_writes_nothing(store: Store, timeline: Timeline) -> None:
    leader, leader_view = candidate(store, timeline, "a", mono_base=10)
    standby, _ = candidate(store, timeline, "b", mono_base=20)
    assert await leader.try_acquire_or_renew()
    assert not await standby.try_acquire_or_renew()
    writes = store.writes
    assert not await standby.release()
    assert store.writes == writes
    # A leader cut off from the API loses the lease without seeing it; its stale release
    # carries the old resourceVersion and is refused.
    leader_view.mode = "error"
    timeline.now = 15
    assert not await leader.try_acquire_or_renew()
    assert await standby.try_acquire_or_renew()
    leader_view.mode = "ok"
    assert not await leader.release()
    assert store.spec()["holderIdentity"] == "b"
    assert store.writes == writes + 1


@pytest.mark.parametrize("mode", ["error", "unreachable", "timeout", "oserror"])
async def test_api_errors_while_acquiring_never_make_a_leader(
    store: Store, timeline: Timeline, mode: str
) -> None:
    old, _ = candidate(store, timeline, "old", mono_base=0)
    assert await old.try_acquire_or_renew()
    standby, view = candidate(store, timeline, "b", mono_base=50)
    view.mode = mode
    for _ in range(30):
        timeline.now += 2
        assert not await standby.try_acquire_or_renew()
        assert not standby.is_leader()
    # The first record it manages to read starts its wait: it never saw the lease change.
    view.mode = "ok"
    assert not await standby.try_acquire_or_renew()
    timeline.now += 14
    assert not await standby.try_acquire_or_renew()
    timeline.now += 1
    assert await standby.try_acquire_or_renew()


async def test_hanging_api_while_acquiring_never_makes_a_leader(
    store: Store, timeline: Timeline
) -> None:
    standby, view = candidate(store, timeline, "b", mono_base=50)
    view.mode = "hang"
    task = start(standby.acquire())
    await timeline.run_until(60)
    assert not task.done()
    assert not standby.is_leader()
    view.mode = "ok"
    await timeline.run_until(80)
    assert task.done()
    assert standby.is_leader()


async def test_a_missing_lease_is_created(
    store: Store, timeline: Timeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vmdhcp.election")
    leader, _ = candidate(store, timeline, "a", mono_base=0, wall_offset=0.5)
    timeline.now = 1
    assert await leader.try_acquire_or_renew()
    lease = store.leases[NS, NAME]
    assert lease["metadata"]["name"] == NAME
    assert lease["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2024-05-01T12:00:01.500000Z",
        "renewTime": "2024-05-01T12:00:01.500000Z",
        "leaseTransitions": 0,
    }
    timeline.now = 3
    assert await leader.try_acquire_or_renew()
    assert store.spec()["acquireTime"] == "2024-05-01T12:00:01.500000Z"
    assert store.spec()["renewTime"] == "2024-05-01T12:00:03.500000Z"
    assert [r.getMessage() for r in caplog.records].count(f"became leader (lease {NS}/{NAME})") == 1


async def test_the_same_elector_leads_again_after_losing(store: Store, timeline: Timeline) -> None:
    a, a_view = candidate(store, timeline, "a", mono_base=0)
    b, _ = candidate(store, timeline, "b", mono_base=1e3)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    a_view.mode = "error"
    timeline.now = 16
    assert not a.is_leader()
    assert await b.try_acquire_or_renew()
    a_view.mode = "ok"
    assert not await a.try_acquire_or_renew()
    assert a.observed_holder == "b"
    assert a.leading_since is None
    # b dies; a, which saw the record change at t=16, takes over at t=31.
    timeline.now = 30
    assert not await a.try_acquire_or_renew()
    timeline.now = 31
    assert await a.try_acquire_or_renew()
    assert a.is_leader()
    assert a.leading_since == 31
    assert a.leader_transitions == 2


async def test_run_toggles_leading_and_releases_when_cancelled(
    store: Store, timeline: Timeline
) -> None:
    a, a_view = candidate(store, timeline, "a", mono_base=0)
    b, _ = candidate(store, timeline, "b", mono_base=1e3)
    events: list[tuple[str, float, bool]] = []

    async def started() -> None:
        events.append(("started", timeline.now, a.is_leader()))

    async def stopped() -> None:
        events.append(("stopped", timeline.now, a.is_leader()))

    async def b_lives() -> None:
        await b.acquire()
        await b.renew_until_lost()

    async def script() -> None:
        await timeline.sleep(9.5)
        a_view.mode = "error"  # a's last good renewal started at t=8
        await timeline.sleep(20.5)
        a_view.mode = "ok"
        await timeline.sleep(10.5)
        b_task.cancel()  # b crashes at t=40.5, just after renewing at t=40

    run_task = start(a.run(started, stopped))
    b_task = start(b_lives())
    script_task = start(script())
    await timeline.run_until(70)
    run_task.cancel()
    await timeline.run_until(71)
    assert run_task.cancelled()
    assert script_task.done()

    assert [e[0] for e in events] == ["started", "stopped", "started", "stopped"]
    assert events[0] == ("started", 0, True)
    assert events[1] == ("stopped", 18, False)
    assert events[2][1] >= 40 + 15
    assert events[2][2]
    assert events[3] == ("stopped", 70, False)
    spec = store.spec()
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert spec["leaseTransitions"] == 2


async def test_a_renewal_in_flight_during_release_does_not_make_us_lead_again(
    store: Store, timeline: Timeline
) -> None:
    leader, _ = candidate(store, timeline, "a", mono_base=10)
    assert await leader.try_acquire_or_renew()
    renewal = asyncio.ensure_future(leader.try_acquire_or_renew())  # its read is under way
    await asyncio.sleep(0)
    assert await leader.release() in (True, False)  # 409 if the renewal's write came first
    await renewal
    assert not leader.is_leader()
    assert leader.time_left() == 0.0


async def test_time_left_bounds_a_leaders_writes(store: Store, timeline: Timeline) -> None:
    leader, _ = candidate(store, timeline, "a", mono_base=10)
    assert leader.time_left() == 0.0
    assert await leader.try_acquire_or_renew()
    timeline.now = 4
    assert leader.time_left() == pytest.approx(6.0)  # renew deadline 10 from the renewal
    timeline.now = 10
    assert leader.time_left() == 0.0


async def test_a_standby_tries_again_right_when_a_dead_leaders_lease_expires(
    store: Store, timeline: Timeline
) -> None:
    """Its retries are a period apart (2 s, jittered up to 4.4), but it also wakes just
    after the lease it saw held would expire on its clock: no retry period added on top."""
    leader, _ = candidate(store, timeline, "a", mono_base=3)
    standby, _ = candidate(store, timeline, "b", mono_base=5e4)
    timeline.now = 0.3
    assert await leader.try_acquire_or_renew()  # then it dies
    took: list[float] = []

    async def contend() -> None:
        await standby.acquire()
        took.append(timeline.now)

    task = start(contend())
    await timeline.run_until(40)
    task.cancel()
    # it first read the lease at 0.3 (the record then changed for it); expiry at 15.3
    assert took
    assert 15.3 <= took[0] <= 15.3 + 0.06, took

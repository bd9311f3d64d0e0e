"""The work queue: dedupe, one worker per key, delays, per-key backoff and its metrics, on a
manual clock (no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from vmdhcp.controller.workqueue import QueueMetrics, WorkQueue


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self._when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self._when


class FakeScheduler:
    """A manual clock: timers run only in `advance`, in the order they are due."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self._timers.append(timer)
        return timer

    def live(self) -> list[FakeTimer]:
        return [timer for timer in self._timers if not timer.cancelled]

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while due := [t for t in self.live() if t.when() <= target]:
            timer = min(due, key=lambda t: t.when())
            self._timers.remove(timer)
            self.now = max(self.now, timer.when())
            timer.callback()
        self.now = target


def test_backoff_defaults_double_from_5ms_and_cap_at_300s() -> None:
    queue: WorkQueue[str] = WorkQueue()
    assert [queue.backoff(n) for n in range(4)] == [0.005, 0.01, 0.02, 0.04]
    assert queue.backoff(15) == 0.005 * 2**15
    assert queue.backoff(16) == 300.0
    assert queue.backoff(10**6) == 300.0
    with pytest.raises(ValueError, match="base_delay"):
        WorkQueue(base_delay=2.0, max_delay=1.0)


async def test_backoff_doubles_per_failure_and_caps() -> None:
    clock = FakeScheduler()
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=8.0, scheduler=clock)
    queue.add("k")
    waits = []
    for failures in range(1, 7):
        assert await queue.get() == "k"
        queue.add_rate_limited("k")  # the reconcile failed
        queue.done("k")
        assert queue.retries("k") == failures
        [timer] = clock.live()
        wait = timer.when() - clock.now
        waits.append(wait)
        clock.advance(wait - 0.5)
        assert len(queue) == 0
        clock.advance(0.5)
        assert len(queue) == 1
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


async def test_forget_resets_the_backoff_and_drops_the_key() -> None:
    clock = FakeScheduler()
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=8.0, scheduler=clock)
    for _ in range(3):
        queue.add_rate_limited("k")
        clock.advance(10)
        assert await queue.get() == "k"
        queue.done("k")
    assert queue.retries("k") == 3
    queue.forget("k")  # the reconcile succeeded
    assert queue.retries("k") == 0
    assert queue._failures == {}  # memory stays bounded by the keys failing now
    queue.forget("never-failed")
    queue.add_rate_limited("k")
    assert [t.when() - clock.now for t in clock.live()] == [1.0]


async def test_key_added_while_handled_is_handled_again_after_done_by_one_worker() -> None:
    clock = FakeScheduler()
    queue: WorkQueue[str] = WorkQueue(scheduler=clock)
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 1
    assert await queue.get() == "b"  # a second worker does not get "a" while it is handled
    queue.done("a")
    assert len(queue) == 1
    assert await queue.get() == "a"  # once more, after done
    queue.add_rate_limited("a")  # a failure, whose backoff ends while still handled
    clock.advance(1)
    assert len(queue) == 0
    queue.done("b")
    assert len(queue) == 0
    queue.done("a")
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert queue.idle()


async def test_no_key_is_handled_by_two_workers_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue()
    handling: set[int] = set()
    overlaps: list[int] = []
    handled: list[int] = []
    idle = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await queue.get()
            if key in handling:
                overlaps.append(key)
            handling.add(key)
            for _ in range(key + 1):
                await asyncio.sleep(0)  # let the other workers and the producer run
            handling.discard(key)
            handled.append(key)
            queue.done(key)
            if queue.idle():
                idle.set()

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for _ in range(50):
        for key in (0, 1, 2, 3, 4, 4, 3, 2, 1, 0):
            queue.add(key)
        await asyncio.sleep(0)
    if not queue.idle():
        idle.clear()
        await asyncio.wait_for(idle.wait(), 5)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert overlaps == []
    assert set(handled) == set(range(5))
    assert len(handled) < 500  # adds of a waiting key coalesced


async def test_add_after_does_not_double_queue() -> None:
    clock = FakeScheduler()
    queue: WorkQueue[str] = WorkQueue(scheduler=clock)
    queue.add_after("k", 2)
    queue.add_after("k", 5)  # a later due time does not postpone it
    queue.add_after("k", 1)  # an earlier one brings it forward
    assert [t.when() for t in clock.live()] == [1.0]
    clock.advance(1)
    assert len(queue) == 1
    queue.add_after("k", 1)  # already waiting
    assert clock.live() == []
    clock.advance(10)
    assert len(queue) == 1
    assert await queue.get() == "k"
    queue.add("k")
    queue.add_after("k", 1)  # already due after done
    assert clock.live() == []
    queue.done("k")
    assert await queue.get() == "k"
    queue.done("k")
    assert queue.idle()

    queue.add_after("k", 1)
    queue.add("k")  # an add now cancels the delayed one
    assert clock.live() == []
    queue.add_after("k", 0)  # due now: added at once (and already waiting)
    assert len(queue) == 1
    assert await queue.get() == "k"
    queue.done("k")
    clock.advance(5)
    assert queue.idle()
    assert queue.retries("k") == 0  # delays are not failures


async def test_metrics() -> None:
    registry = CollectorRegistry()
    metrics = QueueMetrics(registry)
    clock = FakeScheduler()
    queue: WorkQueue[str] = WorkQueue(name="test", metrics=metrics, scheduler=clock)
    other: WorkQueue[str] = WorkQueue(name="other", metrics=metrics, scheduler=clock)

    def value(metric: str, name: str = "test") -> float | None:
        return registry.get_sample_value(f"vmdhcpcontroller_workqueue_{metric}", {"name": name})

    assert value("adds_total") == 0
    assert value("depth") == 0
    assert value("longest_running_processor_seconds") == 0
    queue.add("a")
    queue.add("a")
    queue.add("b")
    other.add("x")
    assert value("adds_total") == 2
    assert value("depth") == 2
    assert value("depth", "other") == 1

    clock.advance(0.5)
    assert await queue.get() == "a"
    assert value("depth") == 1
    assert value("queue_duration_seconds_count") == 1
    assert value("queue_duration_seconds_sum") == 0.5
    assert value("queue_duration_seconds_bucket", "test") is None  # it needs an le label
    assert (
        registry.get_sample_value(
            "vmdhcpcontroller_workqueue_queue_duration_seconds_bucket",
            {"name": "test", "le": "0.1"},
        )
        == 0
    )
    clock.advance(2)
    assert value("longest_running_processor_seconds") == 2
    assert value("unfinished_work_seconds") == 2
    assert await queue.get() == "b"
    assert value("queue_duration_seconds_sum") == 0.5 + 2.5
    clock.advance(1)
    assert value("longest_running_processor_seconds") == 3
    assert value("unfinished_work_seconds") == 3 + 1
    assert value("longest_running_processor_seconds", "other") == 0

    queue.add_rate_limited("a")
    queue.done("a")
    assert value("retries_total") == 1
    assert value("work_duration_seconds_count") == 1
    assert value("work_duration_seconds_sum") == 3
    assert value("longest_running_processor_seconds") == 1
    clock.advance(queue.backoff(0))
    assert value("adds_total") == 3
    assert value("depth") == 1
    queue.done("b")
    assert value("unfinished_work_seconds") == 0
    assert value("work_duration_seconds_count") == 2

    with pytest.raises(ValueError, match="name"):
        WorkQueue(metrics=metrics)

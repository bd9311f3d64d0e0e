"""A work queue of object keys, as client-go's util/workqueue has: a key waits in the queue
at most once, is never handled by two workers at once (added while being handled, it is
queued again after `done`), may be added after a delay, and a key that keeps failing comes
back after a per-key exponential backoff until `forget`. Optional Prometheus metrics with
client-go's meanings (distributed-correctness guide, section 3)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

K = TypeVar("K", bound=Hashable)

DURATION_BUCKETS = tuple(10.0**exponent for exponent in range(-8, 2))
"""10 ns to 10 s, one bucket per power of ten, as client-go's."""


class Timer(Protocol):
    def cancel(self) -> None: ...
    def when(self) -> float: ...


class Scheduler(Protocol):
    """What the queue and the debouncer need of an event loop; an asyncio loop is one,
    and tests pass a manual clock instead so that they need no sleeps."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer: ...


class _Series(NamedTuple):
    adds: Counter
    retries: Counter
    queue_duration: Histogram
    work_duration: Histogram


class QueueMetrics:
    """client-go's work queue metrics, named vmdhcpcontroller_workqueue_*, one series per
    queue (label `name`). Create one per registry; give each queue its own name."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        prefix = "vmdhcpcontroller_workqueue_"

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(prefix + name, doc, ["name"], registry=registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(prefix + name, doc, ["name"], registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(
                prefix + name, doc, ["name"], registry=registry, buckets=DURATION_BUCKETS
            )

        self.depth = gauge("depth", "Keys waiting to be handed to a worker")
        self.adds = counter("adds_total", "Adds that queued a key not already queued")
        self.queue_duration = histogram(
            "queue_duration_seconds", "Seconds a key waited in the queue before a worker got it"
        )
        self.work_duration = histogram(
            "work_duration_seconds", "Seconds a worker spent on a key (from get to done)"
        )
        self.unfinished_work = gauge(
            "unfinished_work_seconds", "Seconds of work in progress not yet observed as done"
        )
        self.longest_running = gauge(
            "longest_running_processor_seconds", "Seconds the longest running worker has run"
        )
        self.retries = counter("retries_total", "Rate-limited re-adds (failures)")

    def attach(
        self,
        name: str,
        depth: Callable[[], float],
        unfinished: Callable[[], float],
        longest: Callable[[], float],
    ) -> _Series:
        self.depth.labels(name).set_function(depth)
        self.unfinished_work.labels(name).set_function(unfinished)
        self.longest_running.labels(name).set_function(longest)
        return _Series(
            self.adds.labels(name),
            self.retries.labels(name),
            self.queue_duration.labels(name),
            self.work_duration.labels(name),
        )


class WorkQueue(Generic[K]):
    """Keys for workers. After handling a key, a worker calls `done`; after a failure it
    first calls `add_rate_limited`, after a success `forget`.

    Backoff: `base_delay` seconds after the first consecutive failure of a key, doubling
    with each further one, capped at `max_delay`. client-go caps at 1000 s; we cap at 300 s
    so that an operator who fixes a problem never waits more than 5 minutes for it to be
    picked up. (client-go's overall token bucket is left out: our API writes are few.)

    `scheduler` provides timers and the clock (default: the running asyncio loop for timers
    and time.monotonic, the clock that loop uses, for metrics). With `metrics`, the queue's
    series are labelled `name`.
    """

    def __init__(
        self,
        *,
        name: str = "",
        metrics: QueueMetrics | None = None,
        base_delay: float = 0.005,
        max_delay: float = 300.0,
        scheduler: Scheduler | None = None,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self.name = name
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._scheduler = scheduler
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._pending: set[K] = set()
        self._active: dict[K, float] = {}
        """key -> when a worker got it"""
        self._again: set[K] = set()
        self._timers: dict[K, Timer] = {}
        self._added: dict[K, float] = {}
        """key -> when it was added, while it waits (for the queue duration)"""
        self._failures: dict[K, int] = {}
        self._series: _Series | None = None
        if metrics is not None:
            if not name:
                raise ValueError("a queue with metrics needs a name")
            self._series = metrics.attach(name, self.__len__, self._unfinished, self._longest)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: K) -> None:
        """Queue `key` now (once; after `done` if a worker has it), cancelling a delayed add."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._pending or key in self._again:
            return
        self._added[key] = self._now()
        if self._series is not None:
            self._series.adds.inc()
        if key in self._active:
            self._again.add(key)
        else:
            self._push(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` in `delay` seconds, unless it is already waiting or due sooner."""
        if key in self._pending or key in self._again:
            return
        if delay <= 0:
            self.add(key)
            return
        scheduler = self._scheduler or asyncio.get_running_loop()
        due = scheduler.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timers[key] = scheduler.call_at(due, functools.partial(self._fire, key))

    def add_rate_limited(self, key: K) -> None:
        """Add `key` after its backoff, and count one more consecutive failure of it."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if self._series is not None:
            self._series.retries.inc()
        self.add_after(key, self.backoff(failures))

    def backoff(self, failures: int) -> float:
        """The delay after `failures` + 1 consecutive failures."""
        if failures >= 64:
            return self._max_delay
        return min(self._base_delay * 2.0**failures, self._max_delay)

    def forget(self, key: K) -> None:
        """Reset `key`'s failure count (after a success); a pending add stays."""
        self._failures.pop(key, None)

    def retries(self, key: K) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> K:
        key = await self._queue.get()
        self._pending.discard(key)
        now = self._now()
        self._active[key] = now
        added = self._added.pop(key, None)
        if self._series is not None and added is not None:
            self._series.queue_duration.observe(now - added)
        return key

    def done(self, key: K) -> None:
        started = self._active.pop(key, None)
        if self._series is not None and started is not None:
            self._series.work_duration.observe(self._now() - started)
        if key in self._again:
            self._again.discard(key)
            self._push(key)

    def idle(self) -> bool:
        return not self._pending and not self._active and not self._timers

    def _push(self, key: K) -> None:
        self._pending.add(key)
        self._queue.put_nowait(key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _now(self) -> float:
        return self._scheduler.time() if self._scheduler is not None else time.monotonic()

    # Called at scrape time, maybe from another thread: copy the values first.
    def _unfinished(self) -> float:
        now = self._now()
        return sum(now - started for started in tuple(self._active.values()))

    def _longest(self) -> float:
        now = self._now()
        return max((now - started for started in tuple(self._active.values())), default=0.0)

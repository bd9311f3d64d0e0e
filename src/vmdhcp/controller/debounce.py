"""Coalesce bursts of changes to a key into one call, for status writes: the controller
touches an IPPool's key on each allocation or release and the debouncer calls `fire(key)`
(e.g. the work queue's `add`) once the changes pause for `quiet` seconds, and at the
latest `max_delay` seconds after the first change not yet flushed, so a steady stream of
changes still reaches the status. It lives outside the work queue, so that the queue's
`add` (say, from a watch event of our own write) does not disturb it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from vmdhcp.controller.workqueue import Scheduler, Timer

K = TypeVar("K", bound=Hashable)


class Debouncer(Generic[K]):
    """`scheduler` provides timers and the clock (default: the running asyncio loop)."""

    def __init__(
        self,
        fire: Callable[[K], object],
        *,
        quiet: float,
        max_delay: float,
        scheduler: Scheduler | None = None,
    ) -> None:
        if quiet < 0 or max_delay < 0:
            raise ValueError("quiet and max_delay must not be negative")
        self._fire = fire
        self._quiet = quiet
        self._max_delay = max_delay
        self._scheduler = scheduler
        self._first: dict[K, float] = {}
        """key -> when its first change not yet flushed came"""
        self._timers: dict[K, Timer] = {}
        self._closed = False

    def touch(self, key: K) -> None:
        """Note a change: fire `key` at min(now + quiet, first change + max_delay)."""
        if self._closed:
            return
        scheduler = self._scheduler or asyncio.get_running_loop()
        now = scheduler.time()
        first = self._first.setdefault(key, now)
        due = min(now + self._quiet, first + self._max_delay)
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() == due:
                return
            timer.cancel()
        self._timers[key] = scheduler.call_at(due, functools.partial(self._due, key))

    def cancel(self, key: K) -> None:
        """Forget `key`'s unflushed changes (say, its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._first.pop(key, None)

    def is_pending(self, key: K) -> bool:
        return key in self._timers

    def pending(self) -> int:
        """How many keys will fire."""
        return len(self._timers)

    def close(self) -> None:
        """Cancel every pending fire; later touches are ignored."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._first.clear()

    def _due(self, key: K) -> None:
        self._timers.pop(key, None)
        self._first.pop(key, None)
        self._fire(key)

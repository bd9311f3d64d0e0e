"""Kubernetes Events, the one way both the controller and the agent build and limit them
(each sends them with its own API client): core/v1 bodies, and a filter that lets one
(object, reason, message) through at most once per interval, in bounded memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

MEMORY = 10_000


def event_body(
    *,
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    uid: str | None,
    reason: str,
    message: str,
    warning: bool,
    component: str,
) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class RepeatFilter:
    """`allow(key)` is True at most once per `seconds` for each key."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable) -> bool:
        now = self.clock()
        if now - self._last.get(key, now - self.seconds - 1) < self.seconds:
            return False
        if len(self._last) >= MEMORY:  # messages carry addresses: bound the memory
            self._last = {k: t for k, t in self._last.items() if now - t < self.seconds}
            for oldest in list(self._last)[: max(0, len(self._last) - MEMORY // 2)]:
                del self._last[oldest]  # a flood: forget the oldest half
        self._last.pop(key, None)
        self._last[key] = now
        return True

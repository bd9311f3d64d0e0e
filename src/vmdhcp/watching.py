"""List, then watch from the list's resourceVersion, for ever: the loop both the agent (its
one IPPool) and the controller (its agent pods) run in a thread, whatever client they use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Body = dict[str, Any]

SHORTEST_WATCH_SECONDS = 1.0
"""A watch that ends sooner than this counts as a failure for the backoff."""


def list_then_watch(
    list_once: Callable[[], Body],
    watch_from: Callable[[str], Iterator[tuple[str, Body]]],
    *,
    on_list: Callable[[Body, bool], None],
    on_event: Callable[[str, Body], None],
    on_failure: Callable[[str, float], None],
    stop: threading.Event,
) -> None:
    """Until `stop` is set: `list_once()`, hand the list over (`on_list(listing, first)`),
    `watch_from(its resourceVersion)` and hand over each ADDED, MODIFIED and DELETED object
    (`on_event(type, body)`). A watch that ends, or reports an error such as 410 Gone, is
    followed by a relist; a failure is reported (`on_failure(reason, retry_in)`) and
    retried after a backoff that grows to 10 s. Blocks: run it in a thread."""
    backoff, first = 0.5, True
    while not stop.is_set():
        try:
            listing = list_once()
            on_list(listing, first)
            first = False
            watched_from = time.monotonic()
            for kind, body in watch_from(listing["metadata"]["resourceVersion"]):
                if stop.is_set():
                    return
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(kind, body)
                elif kind == "ERROR":
                    break  # 410 Gone and the like: relist
            # only a watch that ran for a while resets the backoff: a list that works
            # followed by a watch that fails or ends at once (no watch permission, a proxy
            # cutting streams) must not relist in a tight loop
            if time.monotonic() - watched_from >= SHORTEST_WATCH_SECONDS:
                backoff = 0.5
            else:
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        except Exception as exc:  # the loop's boundary: report, back off, relist
            on_failure(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

"""List once, then watch from the last resourceVersion seen, for ever: the loop both the
agent (its one IPPool) and the controller (its agent pods) run in a thread, whatever
client they use. It follows client-go's Reflector (distributed-correctness guide, §2)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Body = dict[str, Any]

SHORTEST_WATCH_SECONDS = 1.0
"""A watch that ends sooner than this counts as a failure for the backoff."""

LONGEST_BACKOFF = 10.0

OBJECT_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


class WatchError(Exception):
    """An ERROR event other than an expiry (a Status object in the stream)."""

    def __init__(self, status: object, message: str) -> None:
        super().__init__(f"watch error {status}: {message}" if message else f"watch error {status}")
        self.status = status


def _expired(status: object, message: str) -> bool:
    """The watch cannot go on from its resourceVersion: 410 Gone (compacted away, "too old
    resource version"), or a version the server has not reached ("too large resource
    version", after a restore): only a relist brings a usable one."""
    return status == 410 or "too large resource version" in message.lower()


def _version_of(body: Body) -> str | None:
    metadata = body.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


def list_then_watch(
    list_once: Callable[[], Body],
    watch_from: Callable[[str], Iterator[tuple[str, Body]]],
    *,
    on_list: Callable[[Body, bool], None],
    on_event: Callable[[str, Body], None],
    on_failure: Callable[[str, float], None],
    stop: threading.Event,
) -> None:
    """Until `stop` is set: `list_once()` and hand the list over (`on_list(listing,
    first)`), then `watch_from(resourceVersion)` and hand over each ADDED, MODIFIED and
    DELETED object (`on_event(type, body)`). Blocks: run it in a thread.

    The resourceVersion to watch from is the list's, then that of every event, BOOKMARK
    events included (`watch_from` should ask for them: `allowWatchBookmarks=true`;
    bookmarks are not handed over). A watch that ends (the server's timeout) or breaks is
    resumed from there, without a relist. Only an expiry relists: 410 Gone, as an ERROR
    event or as the status of an exception raised by the watch (an `ApiError` or the
    `kubernetes` library's `ApiException`), or "too large resource version". A relist
    reaches `on_list(listing, False)`, and it replaces what the consumer holds: objects
    the consumer has that the listing lacks were deleted while unwatched, and the
    consumer must diff (no DELETED event is made up for them).

    resourceVersions are opaque: passed back to the server, never compared.

    Failures (a list or watch that raises, an ERROR event that is not an expiry) are
    reported (`on_failure(reason, retry_in)`) and retried after a backoff that grows to
    10 s; a failed list is listed again, a failed watch is watched again from the same
    resourceVersion. A watch that ends within SHORTEST_WATCH_SECONDS backs off too (not
    reported): a list that works and a watch that ends at once must not loop tightly.
    """
    backoff, first = 0.5, True
    version: str | None = None  # None: list first
    while not stop.is_set():
        try:
            if version is None:
                listing = list_once()
                listed = _version_of(listing)
                if listed is None:
                    raise ValueError("the list has no resourceVersion to watch from")
                on_list(listing, first)
                first, version = False, listed
            watched_from = time.monotonic()
            try:
                for kind, body in watch_from(version):
                    if stop.is_set():
                        return
                    if kind == "ERROR":
                        status, message = body.get("code"), str(body.get("message") or "")
                        if _expired(status, message):
                            version = None
                            break
                        raise WatchError(status, message)
                    if kind in OBJECT_EVENTS:
                        on_event(kind, body)
                    version = _version_of(body) or version
            except Exception as exc:
                if not _expired(getattr(exc, "status", None), str(exc)):
                    raise
                version = None  # an HTTP 410 to the watch request, or the library's
            # only a watch that ran for a while resets the backoff: a list that works
            # followed by a watch that fails or ends at once (no watch permission, a proxy
            # cutting streams) must not loop tightly
            if time.monotonic() - watched_from >= SHORTEST_WATCH_SECONDS:
                backoff = 0.5
            else:
                stop.wait(backoff)
                backoff = min(backoff * 2, LONGEST_BACKOFF)
        except Exception as exc:  # the loop's boundary: report, back off, retry
            on_failure(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, LONGEST_BACKOFF)

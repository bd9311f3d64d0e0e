"""The agent pods, listed and watched in the agent namespace only, with the agent label.

kopf watches a resource either cluster-wide or in the operator's namespaces; for pods the
controller needs neither: on a Harvester node every VM is a pod, and a cluster-wide watch
would stream every virt-launcher change into the controller (and need the right to read
every pod in the cluster). This watch asks the API server for exactly the agent pods.

It runs in a daemon thread of its own (the client's watch blocks) and hands everything to
the event loop: each list to `on_list(listing, first)` and each ADDED, MODIFIED or
DELETED event to `on_event(type, body)` (BOOKMARKs stay here). The first list (True)
fills the cache. A watch that ends (every `watch_seconds`) or breaks is resumed from the
last resourceVersion, bookmarks included, without a relist; only an expired one (410
Gone) relists, and that list (False) replaces the picture: pods the consumer holds that
it lacks went while unwatched, so it must diff, as `Controller.correct` does. Failures
back off and retry for ever.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from vmdhcp.k8s import Kube, pod_lister, pod_watcher
from vmdhcp.watching import list_then_watch

log = logging.getLogger(__name__)

Body = dict[str, Any]

WATCH_SECONDS = 300
"""The server closes each watch after this long; the next one resumes where it ended."""


class PodWatch:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        label_selector: str,
        on_list: Callable[[Body, bool], object],
        on_event: Callable[[str, Body], object],
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = label_selector
        self.on_list = on_list
        self.on_event = on_event
        self.watch_seconds = watch_seconds
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="agent-pods", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        """The thread ends at its next event or timeout; nothing reaches the loop after."""
        self._stop.set()

    def _hand_over(self, callback: Callable[..., object], *args: Any) -> None:
        if self._loop is not None and not self._stop.is_set():
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        list_then_watch(
            pod_lister(self.kube, self.namespace, self.selector),
            pod_watcher(self.kube, self.namespace, self.selector, self.watch_seconds),
            on_list=self._listed,
            on_event=lambda kind, body: self._hand_over(self.on_event, kind, body),
            on_failure=self._failed,
            stop=self._stop,
        )

    def _listed(self, listing: Body, first: bool) -> None:
        if not first:
            log.info("agent pods in %s: listed again (the watch had expired)", self.namespace)
        self._hand_over(self.on_list, listing, first)

    def _failed(self, reason: str, retry_in: float) -> None:
        log.warning(
            "agent pods in %s: list or watch failed (%s); retrying in %.1fs",
            self.namespace,
            reason,
            retry_in,
        )

"""The controller's own informers: list, then watch from that list's resourceVersion, in a
thread, handing everything to the event loop in order.

Two kinds of objects are watched here rather than through kopf:

- IPPools and vmnetcfgs, whose first listing seeds the IPAM: the watch must continue from
  exactly that listing, or an object deleted in between keeps its addresses (kopf lists
  on its own, and its one way of saying "my listing is complete", index gating, costs
  O(objects²): with 1,000 VMs a VM created after a restart waited 7.6 s instead of 2.5);
- the agent pods, in the agent namespace and by label only: on a Harvester node every VM
  is a pod, and a cluster-wide pod watch (kopf's, and upstream's informer) would stream
  every virt-launcher change into the controller and need the right to read every pod.

Each informer hands `on_list(listing, first)` and `on_event(type, body)` to the loop (BOOKMARKs
stay here). A watch that ends (every `watch_seconds`) or breaks is resumed from the last
resourceVersion; only an expired one (410 Gone) relists, and that list (`first` False) is
the truth as of its version: the consumer must settle what it lacks (`Controller.on_list`).
Failures back off and retry for ever.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from vmdhcp.k8s import Kube, custom_object_lister, custom_object_watcher, pod_lister, pod_watcher
from vmdhcp.watching import list_then_watch

log = logging.getLogger(__name__)

Body = dict[str, Any]

WATCH_SECONDS = 300
"""The server closes each watch after this long; the next one resumes where it ended."""


class Informer:
    def __init__(
        self,
        name: str,
        list_once: Callable[[], Body],
        watch_from: Callable[[str], Iterator[tuple[str, Body]]],
        on_list: Callable[[Body, bool], object],
        on_event: Callable[[str, Body], object],
    ) -> None:
        self.name = name
        self.list_once = list_once
        self.watch_from = watch_from
        self.on_list = on_list
        self.on_event = on_event
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
            self.list_once,
            self.watch_from,
            on_list=self._listed,
            on_event=lambda kind, body: self._hand_over(self.on_event, kind, body),
            on_failure=self._failed,
            stop=self._stop,
        )

    def _listed(self, listing: Body, first: bool) -> None:
        if not first:
            log.info("%s: listed again (the watch had expired)", self.name)
        self._hand_over(self.on_list, listing, first)

    def _failed(self, reason: str, retry_in: float) -> None:
        log.warning("%s: list or watch failed (%s); retrying in %.1fs", self.name, reason, retry_in)


class PodWatch(Informer):
    """The agent pods of `namespace` with `label_selector`."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        label_selector: str,
        on_list: Callable[[Body, bool], object],
        on_event: Callable[[str, Body], object],
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        super().__init__(
            f"agent pods in {namespace}",
            pod_lister(kube, namespace, label_selector),
            pod_watcher(kube, namespace, label_selector, watch_seconds),
            on_list,
            on_event,
        )


def custom_informer(
    kube: Kube,
    resource: tuple[str, str, str],
    on_list: Callable[[Body, bool], object],
    on_event: Callable[[str, Body], object],
    watch_seconds: int = WATCH_SECONDS,
) -> Informer:
    """Every object of a custom resource (group, version, plural), cluster-wide."""
    return Informer(
        resource[2],
        custom_object_lister(kube, *resource),
        custom_object_watcher(kube, *resource, watch_seconds),
        on_list,
        on_event,
    )

"""The controller's core: watch events into the store and the work queue, the start-up
rebuild, the workers that hand each key to its kind's reconciler, and the resync.

One reconciler per kind, each in its own module: `ippools`, `vmnetcfgs`, `vms`, `nads`
(agent pods are part of the IPPool's). Every IPAM change is synchronous (`allocator`), so
no two reconciles can hand out one address; API writes come after the decision and carry
preconditions (`context`), so a crash or a lost race between the two loses nothing that a
restart does not rebuild.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from vmdhcp.api.constants import (
    AGENT_LABEL_VALUE,
    ANNOTATION_DHCP_POOL,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    LABEL_VM_DHCP_CONTROLLER,
)
from vmdhcp.controller import resync
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.context import (
    IPPOOLS,
    KINDS,
    NADS,
    PODS,
    RESOURCES,
    VMNETCFGS,
    VMS,
    Context,
    Key,
    utc_now,
)
from vmdhcp.controller.ippools import build_pool, reconcile_ippool
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.controller.nads import reconcile_nad
from vmdhcp.controller.store import Body, meta, ref_of
from vmdhcp.controller.vmnetcfgs import reconcile_vmnetcfg
from vmdhcp.controller.vms import reconcile_vm
from vmdhcp.controller.workqueue import QueueMetrics, WorkQueue
from vmdhcp.errors import ApiError
from vmdhcp.k8s import Kube

__all__ = ["IPPOOLS", "NADS", "PODS", "VMNETCFGS", "VMS", "Controller"]

log = logging.getLogger("vmdhcp.controller")

LOADED_AT_START = (IPPOOLS, VMNETCFGS)
REPORTS = "agent-reports"
AWAITED_AT_START = (*LOADED_AT_START, REPORTS)
"""The listings the IPAM build and the workers wait for: the objects it is built from, and
the agents' reports (`rogue.Reports`), which every pool's conditions are made from."""
WATCHED_BY_KOPF = (VMS, NADS)
LISTING_QUIET = 2.0
"""Seconds without listing events after which a kopf listing is taken as complete."""
"""Watched by the controller's own informers: their first listing seeds the IPAM."""


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        kube: Kube,
        metrics: ControllerMetrics,
        now: Callable[[], str] = utc_now,
    ) -> None:
        queue: WorkQueue[Key] = WorkQueue(name="controller", metrics=QueueMetrics(metrics.registry))
        self.ctx = Context(config, kube, metrics, queue, now=now)
        self.config, self.kube, self.metrics = config, kube, metrics
        self.store, self.allocator, self.queue = self.ctx.store, self.ctx.allocator, self.ctx.queue
        self.rebuilt = False
        self.listed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._listing_timers: dict[str, asyncio.TimerHandle] = {}
        self._suspects: dict[str, dict[Ref, str]] = {kind: {} for kind in KINDS}
        self._handlers = {
            IPPOOLS: reconcile_ippool,
            VMNETCFGS: reconcile_vmnetcfg,
            VMS: reconcile_vm,
            NADS: reconcile_nad,
        }

    # -- intake ----------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Body) -> None:
        """Store what a watch delivered and queue what it affects."""
        if not self.store.observe(kind, event_type, body):
            return
        ref = ref_of(body)
        m = meta(body)
        if kind == PODS:
            labels = m.get("labels") or {}
            pool = (labels.get(LABEL_IPPOOL_NAMESPACE), labels.get(LABEL_IPPOOL_NAME))
            if pool[0] and pool[1]:
                self.queue.add((IPPOOLS, pool[0], pool[1]))
        elif kind == NADS:
            pool_ref = self.allocator.holder(f"{ref[0]}/{ref[1]}")
            if pool_ref is not None:
                self.queue.add((IPPOOLS, *pool_ref))
            if ANNOTATION_DHCP_POOL in (m.get("annotations") or {}):
                self.queue.add((NADS, *ref))
        else:
            self.queue.add((kind, *ref))
            if kind == VMNETCFGS and event_type == "DELETED":
                self.queue.add((VMS, *ref))  # a VM still there gets a new one
        if event_type is None and kind in WATCHED_BY_KOPF:
            self._listing_seen(kind)

    def _listing_seen(self, kind: str) -> None:
        """kopf delivers the objects of a listing (its first, or a relist after 410 Gone)
        but never says which ones vanished meanwhile: once its listing events pause,
        what the store holds and a list of ours lacks is read, and released if gone."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        timer = self._listing_timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        self._listing_timers[kind] = loop.call_later(LISTING_QUIET, self._drop_vanished, kind)

    def _drop_vanished(self, kind: str) -> None:
        self._listing_timers.pop(kind, None)
        task = asyncio.ensure_future(self._vanished(kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _vanished(self, kind: str) -> None:
        try:
            listed = {ref_of(body) for body in (await self._list(kind)).get("items") or []}
            for ref, body in self.store.items(kind):
                if ref in listed:
                    continue
                current = await self._read(kind, ref)
                if current is None or current["metadata"].get("uid") != meta(body).get("uid"):
                    log.warning("%s %s/%s was deleted unwatched", kind, *ref)
                    self.observe(kind, "DELETED", body)
        except ApiError as exc:  # the resync is the next chance
            log.warning("%s: cannot check for objects deleted unwatched: %s", kind, exc)

    def on_list(self, kind: str, listing: Body, first: bool) -> None:
        """An informer's listing. The first fills the store, in order with the events
        that follow it (the watch goes on from its resourceVersion, so nothing falls
        between the two). A later one comes after the watch expired: the truth as of its
        version, it settles at once what the store disagrees on (reading each object)."""
        if first:
            for body in listing.get("items") or []:
                self.observe(kind, None, body)
            self.listed.setdefault(kind, asyncio.Event()).set()
            return
        task = asyncio.ensure_future(self._settle(kind, listing))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, kind: str, listing: Body) -> None:
        try:
            await self.correct(kind, listing, authoritative=True)
        except ApiError as exc:  # the next relist or resync tries again
            log.warning("%s: cannot settle a relist: %s", kind, exc)

    async def listed_once(self, kinds: tuple[str, ...]) -> None:
        """Wait until the informers of `kinds` have delivered their first listing."""
        for kind in kinds:
            await self.listed.setdefault(kind, asyncio.Event()).wait()

    # -- start-up --------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """List every IPPool and vmnetcfg (as their informers' first listings do) and
        build the IPAM from them; for tests and tools that run no informer."""
        for kind in LOADED_AT_START:
            self.on_list(kind, await self.kube.list_objects(*RESOURCES[kind]), True)
        self.build_ipam()

    def build_ipam(self) -> None:
        """Build the IPAM from the store before any allocation: vmnetcfg statuses first
        (each is what one VM holds), then IPPool statuses; every claim that cannot be
        honoured is reported, never resolved silently."""
        began = time.monotonic()
        for ref, body in sorted(self.store.items(IPPOOLS)):
            if not meta(body).get("deletionTimestamp"):
                build_pool(self.ctx, ref, body)
        self.rebuilt = True
        log.info(
            "ipam rebuilt from %d ippools and %d vmnetcfgs (%d allocations) in %.2fs",
            self.store.count(IPPOOLS),
            self.store.count(VMNETCFGS),
            self.allocator.allocations(),
            time.monotonic() - began,
        )

    # -- workers ---------------------------------------------------------------------------

    async def run_workers(self, count: int) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            await self.reconcile(key)

    async def reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        try:
            await self._handlers[kind](self.ctx, (namespace, name))
            self.queue.forget(key)
        except ApiError as exc:
            # a conflict is expected (our picture was older than the object): the watch
            # brings the new version and the retry computes from it
            level = logging.DEBUG if exc.conflict else logging.WARNING
            retry_in = self.queue.backoff(self.queue.retries(key))
            log.log(level, "%s %s/%s: %s; retrying in %.3fs", kind, namespace, name, exc, retry_in)
            self.queue.add_rate_limited(key)
        except Exception:  # the worker's boundary: a bug must not stop the controller
            log.exception("%s %s/%s: reconcile failed; retrying", kind, namespace, name)
            self.queue.add_rate_limited(key)
        finally:
            self.queue.done(key)

    # -- resynchronisation -----------------------------------------------------------------

    async def _list(self, kind: str) -> Body:
        if kind == PODS:
            selector = f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}"
            return await self.kube.list_pods(self.config.agent_namespace, selector)
        return await self.kube.list_objects(*RESOURCES[kind])

    async def _read(self, kind: str, ref: Ref) -> Body | None:
        try:
            if kind == PODS:
                return await self.kube.read_pod(*ref)
            return await self.kube.get_object(
                *RESOURCES[kind][:2], ref[0], RESOURCES[kind][2], ref[1]
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def resync(self) -> int:
        """Relist every watched kind and correct the store where a watch missed something
        (see `resync`); returns how many corrections it made."""
        total = 0
        for kind in KINDS:
            try:
                listing = await self._list(kind)
            except ApiError as exc:
                if exc.not_found:  # that API is not installed (no KubeVirt, no Multus)
                    continue
                raise
            total += await self.correct(kind, listing)
        return total

    async def correct(
        self, kind: str, listing: Body, initial: bool = False, authoritative: bool = False
    ) -> int:
        """Bring the store of `kind` in line with a fresh list of it. An `initial` list
        (a watch's first) fills the store: nothing in it is a correction. An
        `authoritative` one (a relist by the watch itself) is settled at once; otherwise
        only what disagreed in the previous round too (see `resync`)."""
        if initial:
            for body in listing.get("items") or []:
                self.observe(kind, None, body)
            return 0
        made, self._suspects[kind] = await resync.correct(
            self.store,
            kind,
            listing,
            lambda ref: self._read(kind, ref),
            lambda event_type, body: self.observe(kind, event_type, body),
            None if authoritative else self._suspects[kind],
        )
        for what, count in made.items():
            if count:
                self.metrics.resync_corrections.labels(what).inc(count)
        return sum(made.values())

    async def resync_every(self, seconds: float) -> None:
        """Resync for ever, `seconds` apart; a failed round is logged and retried next time."""
        while True:
            await asyncio.sleep(seconds)
            try:
                corrections = await self.resync()
            except ApiError as exc:
                self.metrics.resyncs.labels("error").inc()
                log.warning("resync failed, retrying in %.0f s: %s", seconds, exc)
                continue
            except Exception:  # a bug here must not stop the controller: the watches go on
                self.metrics.resyncs.labels("error").inc()
                log.exception("resync failed, retrying in %.0f s", seconds)
                continue
            self.metrics.resyncs.labels("ok").inc()
            log.debug("resync: %d corrections", corrections)

    # -- views for the HTTP API ------------------------------------------------------------

    def ipam_dump(self, network: str, limit: int = 1 << 16) -> dict[str, str] | None:
        """Upstream's /ipams shape: every allocatable address -> "true"/"false"."""
        if network not in self.allocator.ipam:
            return None
        pool = self.allocator.ipam.pool(network)
        taken = pool.allocations()
        if pool.capacity > limit:
            return {str(ip): "true" for ip in taken}
        blocked = pool.reserved | pool.excluded
        out = {}
        for number in range(int(pool.start), int(pool.end) + 1):
            ip = IPv4Address(number)
            if ip not in blocked:
                out[str(ip)] = "true" if ip in taken else "false"
        return out

    def cache_dump(self, network: str) -> dict[str, str] | None:
        """Upstream's /caches shape: MAC -> address."""
        if network not in self.allocator.ipam:
            return None
        return {mac: str(ip) for ip, mac in self.allocator.ipam.pool(network).allocations().items()}

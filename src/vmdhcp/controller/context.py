"""What every reconciler shares: the store, the allocator, the queue, the API client, and
the few write helpers that carry the distributed rules (preconditions, read-your-writes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vmdhcp.agent.report import AgentReport
from vmdhcp.api import GROUP, VERSION
from vmdhcp.api.constants import (
    KUBEVIRT_GROUP,
    KUBEVIRT_VERSION,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    VM_PLURAL,
)
from vmdhcp.controller.allocator import Allocator, Effects, Ref
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.debounce import Debouncer
from vmdhcp.controller.events import EventRecorder
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.controller.store import Body, ObjectStore, meta, ref_of, rv, uid
from vmdhcp.controller.workqueue import WorkQueue
from vmdhcp.errors import ApiError
from vmdhcp.k8s import Kube

log = logging.getLogger("vmdhcp.controller")

IPPOOLS, VMNETCFGS, VMS, NADS, PODS = "ippool", "vmnetcfg", "vm", "nad", "pod"
KINDS = (IPPOOLS, VMNETCFGS, VMS, NADS, PODS)
RESOURCES: dict[str, tuple[str, str, str]] = {
    IPPOOLS: (GROUP, VERSION, "ippools"),
    VMNETCFGS: (GROUP, VERSION, "virtualmachinenetworkconfigs"),
    VMS: (KUBEVIRT_GROUP, KUBEVIRT_VERSION, VM_PLURAL),
    NADS: (NAD_GROUP, NAD_VERSION, NAD_PLURAL),
}
"""(group, version, plural) of the custom resources the controller watches."""
FINALIZER = f"{GROUP}/vm-dhcp-controller"
UPSTREAM_FINALIZERS = (
    "wrangler.cattle.io/vm-dhcp-ippool-controller",
    "wrangler.cattle.io/vm-dhcp-vmnetcfg-controller",
)
RETRY_SECONDS = 10.0
MAX_STATUS_DELAY = 1.0

Key = tuple[str, str, str]  # (kind, namespace, name)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Context:
    config: ControllerConfig
    kube: Kube
    metrics: ControllerMetrics
    queue: WorkQueue[Key]
    store: ObjectStore = field(default_factory=lambda: ObjectStore(KINDS))
    allocator: Allocator = field(default_factory=Allocator)
    now: Callable[[], str] = utc_now
    status_writes: Debouncer[Key] = field(init=False)
    """IPPools whose allocations changed: their status is written once changes pause
    (`status_flush_seconds`), and at least every MAX_STATUS_DELAY during a burst."""
    status_due: set[Key] = field(default_factory=set)
    agents_seen_ready: set[str] = field(default_factory=set)
    """uids of agent replicas seen Ready once (see replicas._stuck)."""
    agents_unwell_since: dict[str, float] = field(default_factory=dict)
    """uid of an agent replica -> monotonic time it was first seen not serving."""
    agent_leases: dict[Ref, tuple[str, float, str]] = field(default_factory=dict)
    """IPPool -> its agents' Lease record as last read, when we saw it change, and the last
    holder we saw in it."""
    agent_reports: dict[str, AgentReport] = field(default_factory=dict)
    """The agents' reports (`vmdhcp.agent.report`) by report Lease name (see `rogue`)."""
    declined_seen: dict[Ref, set[tuple[str, str, str]]] = field(default_factory=dict)
    pinned_conflicts: dict[tuple[Ref, str, str, str], float] = field(default_factory=dict)
    """(vmnetcfg, network, mac, pinned address) -> until when (`clock`) its AddressConflict
    stays True after the agent last reported the decline."""
    declined_refused: dict[Ref, set[tuple[str, str, str]]] = field(default_factory=dict)
    """Declined entries not acted on for now (the limit, no vmnetcfg): tried again, counted
    and announced once."""
    """IPPool -> the declined entries (mac, address, at) of its report already acted on
    (see `declines`)."""
    clock: Callable[[], float] = time.monotonic
    """This controller's clock for durations (the decline quarantine)."""
    events: EventRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.events = EventRecorder(self.kube)
        self.status_writes = Debouncer(
            self._status_due,
            quiet=self.config.status_flush_seconds,
            max_delay=max(MAX_STATUS_DELAY, self.config.status_flush_seconds),
        )

    def _status_due(self, key: Key) -> None:
        self.status_due.add(key)
        self.queue.add(key)

    def status_may_wait(self, pool: Ref) -> bool:
        """Whether a pool's allocations may be left out of this status write: more changes
        are gathering and the debouncer has not called for a write yet. Once it has, the
        next reconcile writes, however busy the pool is (at least every MAX_STATUS_DELAY:
        the agent serves what the status lists)."""
        key = (IPPOOLS, *pool)
        if key in self.status_due:
            self.status_due.discard(key)
            return False
        return self.status_writes.is_pending(key)

    def apply(self, effects: Effects) -> None:
        for owner in effects.retry:
            self.queue.add((VMNETCFGS, *owner))
        for pool in effects.changed:
            self.status_writes.touch((IPPOOLS, *pool))

    # -- writes ----------------------------------------------------------------------------

    async def patch(self, kind: str, body: Body, patch: Body) -> Body:
        """A merge patch of what the controller owns in `body` (metadata or spec), sent
        with `body`'s resourceVersion: 409 Conflict when the object changed since we
        read it (the watch will bring the new version, and the key comes back)."""
        m = meta(body)
        guarded = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": rv(body)}}
        updated = await self.kube.patch_object(
            *RESOURCES[kind][:2], m["namespace"], RESOURCES[kind][2], m["name"], guarded
        )
        self.store.remember(kind, updated, body)
        return updated

    async def patch_status(self, kind: str, body: Body, status: Body) -> Body:
        """A merge patch of the status: only the controller writes it, so the patch sets
        exactly the fields it names, whatever else happened to the object."""
        m = meta(body)
        updated = await self.kube.patch_status(
            *RESOURCES[kind][:2], m["namespace"], RESOURCES[kind][2], m["name"], {"status": status}
        )
        self.store.remember(kind, updated, body)
        return updated

    async def create(self, kind: str, body: Body) -> Body | None:
        """Create it; None when an object of that name exists already."""
        namespace = meta(body)["namespace"]
        try:
            created = await self.kube.create_object(
                *RESOURCES[kind][:2], namespace, RESOURCES[kind][2], body
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            return None
        self.store.remember(kind, created, None)
        return created

    async def delete(self, kind: str, body: Body) -> None:
        """Delete this very object (uid precondition: never a replacement of the same
        name); gone already is fine. The store keeps it: the watch brings its
        deletionTimestamp (finalizers run), then its deletion."""
        namespace, name = ref_of(body)
        try:
            await self.kube.delete_object(
                *RESOURCES[kind][:2], namespace, RESOURCES[kind][2], name, uid=uid(body) or None
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def ensure_finalizer(self, kind: str, body: Body) -> Body:
        finalizers = list(meta(body).get("finalizers") or [])
        if FINALIZER in finalizers:
            return body
        return await self.patch(kind, body, {"metadata": {"finalizers": [*finalizers, FINALIZER]}})

    async def drop_finalizers(self, kind: str, body: Body) -> None:
        finalizers = list(meta(body).get("finalizers") or [])
        mine = (FINALIZER, *UPSTREAM_FINALIZERS)
        kept = [f for f in finalizers if f not in mine]
        if kept == finalizers:
            return
        try:
            await self.patch(kind, body, {"metadata": {"finalizers": kept}})
        except ApiError as exc:
            if not exc.not_found:
                raise

"""The controller's reconcilers: what to do for one IPPool, VirtualMachineNetworkConfig or
VirtualMachine, given the cached objects and the IPAM.

Watches (kopf) only feed `observe`, which caches the object and queues its key; workers
take keys from one work queue and reconcile them. All IPAM changes are synchronous, so
no two reconciles can hand out one address; API writes happen after the IPAM decision
and are idempotent (merge patches computed from the IPAM), so a crash between the two
loses nothing that a restart does not rebuild.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

from pydantic import ValidationError

from vmdhcp.api import (
    GROUP,
    VERSION,
    IPPool,
    NetworkConfigState,
    VirtualMachineNetworkConfig,
    split_network_name,
)
from vmdhcp.api.constants import (
    AGENT_LABEL_VALUE,
    ANNOTATION_DHCP_POOL,
    ANNOTATION_HOLD_AGENT_UPGRADE,
    EXCLUDED_MARK,
    KUBEVIRT_GROUP,
    KUBEVIRT_VERSION,
    LABEL_CLUSTER_NETWORK,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    LABEL_VM_DHCP_CONTROLLER,
    LABEL_VM_NAME,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    RESERVED_MARK,
    VM_PLURAL,
)
from vmdhcp.controller.conditions import OK, error, set_condition
from vmdhcp.controller.config import ControllerConfig, parse_image
from vmdhcp.controller.manifests import (
    agent_pod,
    agent_pod_name,
    nics_from_vm,
    pod_image,
    pod_is_ready,
    vm_networks,
)
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.controller.workqueue import WorkQueue
from vmdhcp.ipam import DesignationError, Ipam, IpamError, Pool
from vmdhcp.k8s import ApiError, Kube
from vmdhcp.mac import InvalidMac, normalize_mac
from vmdhcp.validation.errors import Operation
from vmdhcp.validation.errors import ValidationError as ValidationFailure
from vmdhcp.validation.ippool import ippool_problems
from vmdhcp.validation.mutate import ippool_defaults
from vmdhcp.validation.view import Snapshot, network_key

log = logging.getLogger("vmdhcp.controller")

FINALIZER = f"{GROUP}/vm-dhcp-controller"
UPSTREAM_FINALIZERS = (
    "wrangler.cattle.io/vm-dhcp-ippool-controller",
    "wrangler.cattle.io/vm-dhcp-vmnetcfg-controller",
)
IPPOOLS, VMNETCFGS, VMS, NADS, PODS = "ippool", "vmnetcfg", "vm", "nad", "pod"
RESOURCES: dict[str, tuple[str, str, str]] = {
    IPPOOLS: (GROUP, VERSION, "ippools"),
    VMNETCFGS: (GROUP, VERSION, "virtualmachinenetworkconfigs"),
    VMS: (KUBEVIRT_GROUP, KUBEVIRT_VERSION, VM_PLURAL),
    NADS: (NAD_GROUP, NAD_VERSION, NAD_PLURAL),
}
"""(group, version, plural) of the custom resources the controller watches."""
RETRY_SECONDS = 10.0

Key = tuple[str, str, str]  # (kind, namespace, name)
Body = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(body: Body) -> dict[str, Any]:
    meta: dict[str, Any] = body.get("metadata") or {}
    return meta


def _rv(body: Body | None) -> int:
    try:
        return int(_meta(body or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        kube: Kube,
        metrics: ControllerMetrics,
        now: Callable[[], str] = _now,
    ) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.now = now
        self.ipam = Ipam()
        self.objects: dict[str, dict[tuple[str, str], Body]] = {
            kind: {} for kind in (IPPOOLS, VMNETCFGS, VMS, NADS, PODS)
        }
        self.pool_of_network: dict[str, tuple[str, str]] = {}
        self.owners: dict[tuple[str, str], tuple[str, str]] = {}
        """(network, mac) -> the vmnetcfg holding that MAC's address on that network."""
        self.waiting: dict[str, set[tuple[str, str]]] = {}
        """network -> vmnetcfgs to retry when the network's pool appears or frees addresses."""
        self.queue: WorkQueue[Key] = WorkQueue()
        self.rebuilt = False
        self._tombstones: dict[tuple[str, str, str], int] = {}
        self._shapes: dict[str, tuple[object, ...]] = {}
        """network -> the spec fields its IPAM pool was built from."""
        """(kind, namespace, name) -> resourceVersion of the deletion the watch reported."""
        self.conflicts: dict[tuple[str, str], list[str]] = {}
        """Per IPPool, the claims the last IPAM build of it could not honour."""
        self._events = EventRecorder(kube)

    # -- intake ----------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Body) -> None:
        """Cache what a watch delivered and queue what it affects."""
        meta = _meta(body)
        ref = (meta.get("namespace") or "", meta.get("name") or "")
        cache = self.objects[kind]
        if event_type == "DELETED":
            cache.pop(ref, None)
            self._tombstones[(kind, *ref)] = _rv(body)
        elif _rv(body) >= _rv(cache.get(ref)):
            cache[ref] = body
            self._tombstones.pop((kind, *ref), None)
        if kind == PODS:
            labels = meta.get("labels") or {}
            pool = (labels.get(LABEL_IPPOOL_NAMESPACE), labels.get(LABEL_IPPOOL_NAME))
            if pool[0] and pool[1]:
                self.queue.add((IPPOOLS, pool[0], pool[1]))
        elif kind == NADS:
            pool_ref = self.pool_of_network.get(f"{ref[0]}/{ref[1]}")
            if pool_ref is not None:
                self.queue.add((IPPOOLS, *pool_ref))
            if ANNOTATION_DHCP_POOL in (meta.get("annotations") or {}):
                self.queue.add((NADS, *ref))
        else:
            self.queue.add((kind, *ref))

    def _remember(self, kind: str, body: Body) -> None:
        """Cache an object a write returned, unless the watch already brought a newer one."""
        meta = _meta(body)
        ref = (meta.get("namespace") or "", meta.get("name") or "")
        if _rv(body) <= self._tombstones.get((kind, *ref), -1):
            return  # the watch already said this version is gone
        if _rv(body) >= _rv(self.objects[kind].get(ref)):
            self.objects[kind][ref] = body

    # -- resynchronisation -----------------------------------------------------------------

    async def _list(self, kind: str) -> Body:
        if kind == PODS:
            selector = f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}"
            return await self.kube.list_pods(self.config.agent_namespace, selector)
        return await self.kube.list_objects(*RESOURCES[kind])

    async def resync(self) -> int:
        """Relist every watched kind and correct the cache from the lists; returns how many
        corrections it made.

        After a watch expires (410 Gone) kopf relists, but it reports nothing for objects
        that went meanwhile: the cache would keep them, and their addresses, until a
        restart. An object the cache holds at a resourceVersion the list has passed, and
        that the list no longer has, was deleted: it goes through the same path as a
        watched deletion. An object newer in the list than in the cache is observed too.
        """
        corrections = 0
        for kind in (IPPOOLS, VMNETCFGS, VMS, NADS, PODS):
            try:
                listing = await self._list(kind)
            except ApiError as exc:
                if exc.not_found:  # that API is not installed (no KubeVirt, no Multus)
                    continue
                raise
            corrections += self.correct(kind, listing)
        return corrections

    def correct(self, kind: str, listing: Body, initial: bool = False) -> int:
        """Bring the cache of `kind` in line with a fresh list of it (see `resync`). An
        `initial` list (a watch's first) fills the cache: nothing in it is a correction."""
        if initial:
            for body in listing.get("items") or []:
                self.observe(kind, None, body)
            return 0
        corrections = 0
        snapshot = _rv(listing)
        cache = self.objects[kind]
        present: set[tuple[str, str]] = set()
        for body in listing.get("items") or []:
            meta = _meta(body)
            ref = (meta.get("namespace") or "", meta.get("name") or "")
            present.add(ref)
            cached = cache.get(ref)
            if _rv(cached) > snapshot or _rv(body) <= self._tombstones.get((kind, *ref), -1):
                # the watch got here first (a newer version, or the deletion): the cache is
                # ahead of the list, which must not take it back
                continue
            if cached is not None and _meta(cached).get("uid") != meta.get("uid"):
                # deleted and created again under the same name while unwatched
                log.warning("resync: %s %s/%s was replaced unwatched", kind, *ref)
                self.metrics.resync_corrections.labels("deleted").inc()
                self.observe(kind, "DELETED", cached)
                corrections += 1
            if _rv(body) > _rv(cache.get(ref)):
                log.info("resync: %s %s/%s changed unwatched", kind, *ref)
                self.metrics.resync_corrections.labels("modified").inc()
                self.observe(kind, "MODIFIED", body)
                corrections += 1
        for ref, body in list(cache.items()):
            if ref not in present and _rv(body) <= snapshot:
                log.warning("resync: %s %s/%s was deleted unwatched", kind, *ref)
                self.metrics.resync_corrections.labels("deleted").inc()
                self.observe(kind, "DELETED", body)
                corrections += 1
        return corrections

    async def resync_every(self, seconds: float) -> None:
        """Resync forever, `seconds` apart; a failed round is logged and retried next time."""
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

    # -- start-up --------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Load every IPPool and vmnetcfg and rebuild the IPAM before any allocation.

        vmnetcfg statuses go first (each is what one VM holds), then IPPool statuses;
        every claim that cannot be honoured is reported, never resolved silently.
        """
        began = time.monotonic()
        pools = (await self.kube.list_objects(GROUP, VERSION, "ippools")).get("items", [])
        cfgs = (await self.kube.list_objects(GROUP, VERSION, "virtualmachinenetworkconfigs")).get(
            "items", []
        )
        for body in pools:
            self._remember(IPPOOLS, body)
        for body in cfgs:
            self._remember(VMNETCFGS, body)
        for ref, body in sorted(self.objects[IPPOOLS].items()):
            if not _meta(body).get("deletionTimestamp"):
                self._build_pool(ref, body)
        self.rebuilt = True
        log.info(
            "ipam rebuilt from %d ippools and %d vmnetcfgs (%d allocations) in %.2fs",
            len(pools),
            len(cfgs),
            sum(self.ipam.pool(n).used for n in self.ipam),
            time.monotonic() - began,
        )

    def _claims_of_vmnetcfgs(self, network: str) -> list[tuple[str, str, tuple[str, str]]]:
        claims = []
        for ref, body in sorted(self.objects[VMNETCFGS].items()):
            if _meta(body).get("deletionTimestamp"):
                continue
            for entry in (body.get("status") or {}).get("networkConfigs") or []:
                if entry.get("state") != NetworkConfigState.ALLOCATED:
                    continue
                if network_key(entry.get("networkName") or "") != network:
                    continue
                if entry.get("allocatedIPAddress") and entry.get("macAddress"):
                    claims.append((entry["allocatedIPAddress"], entry["macAddress"], ref))
        return claims

    def _reshape_pool(
        self,
        ref: tuple[str, str],
        body: Body,
        network: str,
        config: Any,
        shape: tuple[object, ...],
    ) -> str | None:
        try:
            pool = config.to_pool(network)
        except IpamError as exc:
            return str(exc)
        old = self.ipam.pool(network)
        claims = [(str(ip), mac) for ip, mac in old.allocations().items()]
        conflicts = [f"after a spec change: {c.message}" for c in pool.restore(claims)]
        self.ipam.replace(network, pool)
        self._shapes[network] = shape
        for (net, mac), owner in list(self.owners.items()):
            if net == network and pool.lookup(mac) is None:
                del self.owners[(net, mac)]
                self.queue.add((VMNETCFGS, *owner))  # it gets another address
        self.conflicts[ref] = conflicts
        for message in conflicts:
            log.warning("ippool %s/%s: allocation conflict: %s", *ref, message)
            self._events.post(body, "IPPool", "AllocationConflict", message, warning=True)
        log.info("ippool %s/%s: pool rebuilt after a spec change", *ref)
        return None

    def _macs_named_on(self, network: str) -> set[str | None]:
        """MACs that some vmnetcfg's spec or status names on `network`."""
        named: set[str | None] = set()
        for body in self.objects[VMNETCFGS].values():
            entries = [
                *((body.get("spec") or {}).get("networkConfigs") or []),
                *((body.get("status") or {}).get("networkConfigs") or []),
            ]
            for entry in entries:
                if network_key(entry.get("networkName") or "") == network:
                    named.add(_mac_or_none(entry.get("macAddress")))
        return named

    def _build_pool(self, ref: tuple[str, str], body: Body) -> str | None:
        """Create the IPAM pool of an IPPool and restore its allocations; returns an error."""
        try:
            pool_obj = IPPool.model_validate(body)
        except ValidationError as exc:
            return f"invalid ippool: {exc.errors()[0]['msg']}"
        config = pool_obj.spec.ipv4_config
        if config is None:
            return "spec.ipv4Config is missing"
        network = network_key(pool_obj.spec.network_name)
        holder = self.pool_of_network.get(network)
        if holder is not None and holder != ref:
            return f"network {network} is already served by ippool {holder[0]}/{holder[1]}"
        shape = (
            config.cidr,
            config.pool.start,
            config.pool.end,
            config.server_ip,
            config.router,
            tuple(config.pool.exclude or ()),
        )
        if network in self.ipam:
            if self._shapes.get(network) == shape:
                return None
            # router and exclude may be added to a live pool (the CRD allows it): rebuild
            # the pool and carry the allocations over, reporting what no longer fits
            return self._reshape_pool(ref, body, network, config, shape)
        # The webhook's rules, for pools that reached us without it (webhook down, or
        # created before it existed). The NAD and other pools are judged elsewhere.
        problems = ippool_problems(pool_obj, _SPEC_ONLY, service_cidr=self.config.service_cidr)
        if problems:
            meta = _meta(body)
            return str(
                ValidationFailure(
                    Operation.CREATE,
                    "IPPool",
                    meta.get("namespace", ""),
                    meta.get("name", ""),
                    problems,
                )
            )
        try:
            pool = config.to_pool(network)
        except IpamError as exc:
            return str(exc)
        conflicts: list[str] = []
        for address, mac, owner in self._claims_of_vmnetcfgs(network):
            found = pool.restore([(address, mac)])
            if found:
                conflicts.extend(f"vmnetcfg {owner[0]}/{owner[1]}: {c.message}" for c in found)
            else:
                self.owners[(network, normalize_mac(mac))] = owner
        allocated = ((body.get("status") or {}).get("ipv4") or {}).get("allocated") or {}
        named = self._macs_named_on(network)
        for address, mac in sorted(allocated.items()):
            if mac not in (EXCLUDED_MARK, RESERVED_MARK) and _mac_or_none(mac) not in named:
                # no vmnetcfg asks for this MAC any more (it went while we were away)
                conflicts.append(
                    f"ippool status: ip {address} of mac {mac} belongs to no "
                    "VirtualMachineNetworkConfig; released"
                )
                continue
            found = pool.restore([(address, mac)])
            conflicts.extend(f"ippool status: {c.message}" for c in found)
        self.ipam.add(network, pool)
        self._shapes[network] = shape
        self.pool_of_network[network] = ref
        self.conflicts[ref] = conflicts
        for message in conflicts:
            log.warning("ippool %s/%s: allocation conflict: %s", *ref, message)
            self._events.post(body, "IPPool", "AllocationConflict", message, warning=True)
        for cfg in self.waiting.pop(network, set()):
            self.queue.add((VMNETCFGS, *cfg))
        for vm_ref in list(self.objects[VMS]):
            self.queue.add((VMS, *vm_ref))
        return None

    # -- workers ---------------------------------------------------------------------------

    async def run_workers(self, count: int) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        handlers = {
            IPPOOLS: self.reconcile_ippool,
            VMNETCFGS: self.reconcile_vmnetcfg,
            VMS: self.reconcile_vm,
            NADS: self.reconcile_nad,
        }
        while True:
            key = await self.queue.get()
            kind, namespace, name = key
            try:
                await handlers[kind]((namespace, name))
            except ApiError as exc:
                level = logging.DEBUG if exc.conflict else logging.WARNING
                log.log(level, "%s %s/%s: %s; retrying", kind, namespace, name, exc)
                self.queue.add_after(key, 1.0 if exc.conflict else RETRY_SECONDS)
            except Exception:  # the worker's boundary: a bug must not stop the controller
                log.exception("%s %s/%s: reconcile failed; retrying", kind, namespace, name)
                self.queue.add_after(key, RETRY_SECONDS)
            finally:
                self.queue.done(key)

    # -- finalizers ------------------------------------------------------------------------

    async def _ensure_finalizer(self, plural: str, kind: str, body: Body) -> Body:
        meta = _meta(body)
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return body
        patch = {
            "metadata": {
                "finalizers": [*finalizers, FINALIZER],
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        updated = await self.kube.patch_object(
            GROUP, VERSION, meta["namespace"], plural, meta["name"], patch
        )
        self._remember(kind, updated)
        return updated

    async def _drop_finalizers(self, plural: str, body: Body) -> None:
        meta = _meta(body)
        finalizers = list(meta.get("finalizers") or [])
        mine = (FINALIZER, *UPSTREAM_FINALIZERS)
        kept = [f for f in finalizers if f not in mine]
        if kept == finalizers:
            return
        patch = {"metadata": {"finalizers": kept, "resourceVersion": meta.get("resourceVersion")}}
        try:
            await self.kube.patch_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], patch
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

    # -- IPPool ----------------------------------------------------------------------------

    async def reconcile_ippool(self, ref: tuple[str, str]) -> None:
        body = self.objects[IPPOOLS].get(ref)
        if body is None:
            self._forget_pool(ref)
            return
        meta = _meta(body)
        network = network_key((body.get("spec") or {}).get("networkName") or "")
        if meta.get("deletionTimestamp"):
            # by name, not from the cache: right after a start the pod and NAD lists may
            # not have arrived yet, and a forgotten agent pod would serve forever
            await self._delete_agent(ref, body, by_name=True)
            await self._unlabel_nad(ref, network, read=True)
            self._forget_pool(ref)
            await self._drop_finalizers("ippools", body)
            return
        body = await self._ensure_finalizer("ippools", IPPOOLS, body)
        status: Body = dict(body.get("status") or {})
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        now = self.now()
        paused = bool((body.get("spec") or {}).get("paused"))
        disabled = f"ippool {ref[0]}/{ref[1]} was administratively disabled"

        problem = self._build_pool(ref, body)
        if problem is None:
            cache_ready = OK if not paused else error(disabled)
        else:
            cache_ready = error(problem)
            log.warning("ippool %s/%s cannot be served: %s", *ref, problem)
        conditions = set_condition(conditions, "CacheReady", *cache_ready, now=now)
        conditions = set_condition(conditions, "Stopped", paused, now=now)
        found = self.conflicts.get(ref)
        had = any(c.get("type") == "Conflicts" for c in conditions)
        if found is not None and (found or had):
            # what the last rebuild could not honour (upstream has no such condition; it
            # resolves conflicts silently); the first claim won, the others were re-allocated
            summary = f"{len(found)} at rebuild: " + "; ".join(found[:5]) if found else ""
            conditions = set_condition(
                conditions,
                "Conflicts",
                bool(found),
                "RestoreConflict" if found else "",
                summary[:1024],
                now=now,
            )

        agent_ref = status.get("agentPodRef")
        if paused:
            await self._delete_agent(ref, body)
            agent_ref = None
            registered = agent_ready = error(disabled)
        elif problem is not None:
            # a pool we cannot serve gets no agent: a second pool on a network would be a
            # second DHCP server on it, and it must not take over the NAD's link labels
            await self._delete_agent(ref, body)
            agent_ref = None
            registered = agent_ready = error(problem)
        elif self.config.no_agent:
            registered = agent_ready = OK
        else:
            await self._label_nad(ref, network)
            registered, agent_ready, agent_ref = await self._ensure_agent(ref, body, network)
        conditions = set_condition(conditions, "Registered", *registered, now=now)
        conditions = set_condition(conditions, "AgentReady", *agent_ready, now=now)

        patch: Body = {}
        if conditions != (status.get("conditions") or []):
            patch["conditions"] = conditions
        if agent_ref != status.get("agentPodRef"):
            patch["agentPodRef"] = agent_ref
        if problem is None and self.pool_of_network.get(network) == ref:
            snapshot = self.ipam.snapshot(network)
            desired = snapshot.status_allocated()
            current_ipv4 = status.get("ipv4") or {}
            current = current_ipv4.get("allocated") or {}
            changes: dict[str, str | None] = {
                ip: mac for ip, mac in desired.items() if current.get(ip) != mac
            }
            changes.update({ip: None for ip in current if ip not in desired})
            if (
                changes
                or current_ipv4.get("used") != snapshot.used
                or current_ipv4.get("available") != snapshot.available
            ):
                patch["ipv4"] = {
                    "allocated": changes,
                    "used": snapshot.used,
                    "available": snapshot.available,
                }
                patch["lastUpdate"] = now
            self.metrics.set_pool(
                f"{ref[0]}/{ref[1]}",
                str(snapshot.network),
                network,
                snapshot.used,
                snapshot.available,
            )
        if patch:
            updated = await self.kube.patch_status(
                GROUP, VERSION, ref[0], "ippools", ref[1], {"status": patch}
            )
            self._remember(IPPOOLS, updated)

    def _forget_pool(self, ref: tuple[str, str]) -> None:
        for network, holder in list(self.pool_of_network.items()):
            if holder != ref:
                continue
            del self.pool_of_network[network]
            self._shapes.pop(network, None)
            self.conflicts.pop(ref, None)
            self.ipam.remove(network)
            for (net, _mac), cfg in list(self.owners.items()):
                if net == network:
                    del self.owners[(net, _mac)]
                    self.queue.add((VMNETCFGS, *cfg))
        self.metrics.remove_pool(f"{ref[0]}/{ref[1]}")

    async def _label_nad(self, ref: tuple[str, str], network: str) -> None:
        nad_ref = split_network_name(network)
        nad = self.objects[NADS].get(nad_ref)
        if nad is None:
            return
        labels = _meta(nad).get("labels") or {}
        if labels.get(LABEL_IPPOOL_NAMESPACE) == ref[0] and labels.get(LABEL_IPPOOL_NAME) == ref[1]:
            return
        patch = {
            "metadata": {"labels": {LABEL_IPPOOL_NAMESPACE: ref[0], LABEL_IPPOOL_NAME: ref[1]}}
        }
        updated = await self.kube.patch_object(
            NAD_GROUP, NAD_VERSION, nad_ref[0], NAD_PLURAL, nad_ref[1], patch
        )
        self._remember(NADS, updated)

    async def _unlabel_nad(self, ref: tuple[str, str], network: str, read: bool = False) -> None:
        """Remove the link labels from the NAD, if they still point at this pool
        (upstream leaves them behind)."""
        nad_ref = split_network_name(network)
        nad = self.objects[NADS].get(nad_ref)
        if nad is None and read:
            try:
                nad = await self.kube.get_object(
                    NAD_GROUP, NAD_VERSION, nad_ref[0], NAD_PLURAL, nad_ref[1]
                )
            except ApiError as exc:
                if not exc.not_found:
                    raise
                return
        labels = _meta(nad or {}).get("labels") or {}
        if labels.get(LABEL_IPPOOL_NAMESPACE) != ref[0] or labels.get(LABEL_IPPOOL_NAME) != ref[1]:
            return
        patch = {"metadata": {"labels": {LABEL_IPPOOL_NAMESPACE: None, LABEL_IPPOOL_NAME: None}}}
        try:
            await self.kube.patch_object(
                NAD_GROUP, NAD_VERSION, nad_ref[0], NAD_PLURAL, nad_ref[1], patch
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def _delete_agent(self, ref: tuple[str, str], body: Body, by_name: bool = False) -> None:
        if self.config.no_agent:
            return
        name = agent_pod_name(*ref)
        pod_ref = (self.config.agent_namespace, name)
        pod = self.objects[PODS].get(pod_ref)
        if pod is None and not by_name:
            return
        if pod is not None and _meta(pod).get("deletionTimestamp"):
            return
        try:
            await self.kube.delete_pod(*pod_ref)
        except ApiError as exc:
            if not exc.not_found:
                raise
        self.objects[PODS].pop(pod_ref, None)

    async def _ensure_agent(
        self, ref: tuple[str, str], body: Body, network: str
    ) -> tuple[tuple[bool, str, str], tuple[bool, str, str], dict[str, Any] | None]:
        status = body.get("status") or {}
        agent_ref: dict[str, Any] | None = status.get("agentPodRef")
        nad_namespace, nad_name = split_network_name(network)
        nad = self.objects[NADS].get((nad_namespace, nad_name))
        not_deployed = error(f"agent for ippool {ref[0]}/{ref[1]} is not deployed")
        if nad is None:
            missing = f'network-attachment-definitions.k8s.cni.cncf.io "{nad_name}" not found'
            return error(missing), not_deployed, agent_ref
        cluster_network = (_meta(nad).get("labels") or {}).get(LABEL_CLUSTER_NETWORK)
        if not cluster_network:
            return (
                error(f"could not find clusternetwork for nad {network}"),
                not_deployed,
                agent_ref,
            )
        image = str(self.config.agent_image)
        annotations = _meta(body).get("annotations") or {}
        if ANNOTATION_HOLD_AGENT_UPGRADE in annotations and agent_ref and agent_ref.get("image"):
            image = agent_ref["image"]
        name = agent_pod_name(*ref)
        pod_ref = (self.config.agent_namespace, name)
        pod = self.objects[PODS].get(pod_ref)
        if pod is not None:
            if _meta(pod).get("deletionTimestamp"):
                message = f"agent pod {name} marked for deletion"
                self.queue.add_after((IPPOOLS, *ref), RETRY_SECONDS)
                return error(message), error(message), agent_ref
            if pod_image(pod) != image:
                await self.kube.delete_pod(*pod_ref, uid=_meta(pod).get("uid"))
                self.objects[PODS].pop(pod_ref, None)
                self._events.post(
                    body,
                    "IPPool",
                    "AgentRollout",
                    f"agent pod {name}: image {pod_image(pod)} replaced by {image}",
                )
                purged = error(f"agent pod {name} obsolete and purged")
                self.queue.add_after((IPPOOLS, *ref), 1.0)
                return OK, purged, {**(agent_ref or {}), "image": image}
            agent_ref = {
                "namespace": pod_ref[0],
                "name": name,
                "image": image,
                "uid": _meta(pod).get("uid"),
            }
            ready = OK if pod_is_ready(pod) else error(f"agent pod {name} not ready")
            return OK, ready, agent_ref
        manifest = agent_pod(
            pool_namespace=ref[0],
            pool_name=ref[1],
            network_name=network,
            server_ip=((body.get("spec") or {}).get("ipv4Config") or {}).get("serverIP", ""),
            cidr=((body.get("spec") or {}).get("ipv4Config") or {}).get("cidr", ""),
            cluster_network=cluster_network,
            agent_namespace=self.config.agent_namespace,
            service_account=self.config.agent_service_account,
            image=parse_image(image),
            dry_run=self.config.no_dhcp,
        )
        try:
            created = await self.kube.create_pod(self.config.agent_namespace, manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = await self.kube.read_pod(*pod_ref)  # adopt it (upstream loses the uid)
        self._remember(PODS, created)
        agent_ref = {
            "namespace": pod_ref[0],
            "name": name,
            "image": image,
            "uid": _meta(created).get("uid"),
        }
        ready = OK if pod_is_ready(created) else error(f"agent pod {name} not ready")
        return OK, ready, agent_ref

    # -- VirtualMachineNetworkConfig -------------------------------------------------------

    async def reconcile_vmnetcfg(self, ref: tuple[str, str]) -> None:
        body = self.objects[VMNETCFGS].get(ref)
        name = f"{ref[0]}/{ref[1]}"
        if body is None:
            self._release_all(ref)
            self.metrics.set_vmnetcfg(name, [])
            return
        if _meta(body).get("deletionTimestamp"):
            self._release_all(ref)
            self.metrics.set_vmnetcfg(name, [])
            await self._drop_finalizers("virtualmachinenetworkconfigs", body)
            return
        body = await self._ensure_finalizer("virtualmachinenetworkconfigs", VMNETCFGS, body)
        status: Body = body.get("status") or {}
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        now = self.now()
        previous = {
            (network_key(e.get("networkName") or ""), e.get("macAddress") or ""): e
            for e in status.get("networkConfigs") or []
        }
        try:
            cfg = VirtualMachineNetworkConfig.model_validate(body)
            wanted = [
                (network_key(nc.network_name), nc.mac, nc.ip_address)
                for nc in cfg.spec.network_configs or []
            ]
        except (ValidationError, InvalidMac) as exc:
            message = str(exc).splitlines()[0]
            conditions = set_condition(conditions, "Allocated", *error(message), now=now)
            await self._write_vmnetcfg_status(ref, status, conditions, status.get("networkConfigs"))
            return
        paused = bool(cfg.spec.paused)
        entries: list[dict[str, str]] = []
        problems: list[str] = []
        # what this vmnetcfg held but no longer asks for (or everything, when paused)
        keep = set() if paused else {(net, mac) for net, mac, _ in wanted}
        for (network, mac), owner in list(self.owners.items()):
            if owner == ref and (network, mac) not in keep:
                self._release(network, mac)
        if paused:
            for entry in status.get("networkConfigs") or []:
                entries.append({**entry, "state": NetworkConfigState.PENDING.value})
            disabled = f"vmnetcfg {name} was administratively disabled"
            conditions = set_condition(conditions, "Allocated", *error(disabled), now=now)
            conditions = set_condition(conditions, "Disabled", True, now=now)
            conditions = set_condition(conditions, "InSynced", True, now=now)
            await self._write_vmnetcfg_status(ref, status, conditions, entries)
            self.metrics.set_vmnetcfg(name, [])
            return
        for network, mac, static in wanted:
            entry = self._allocate_nic(ref, network, mac, static, previous, problems)
            if entry is not None:
                entries.append(entry)
        if not wanted:
            problems.append(f"no network configs found for vmnetcfg {name}")
        allocated = error("; ".join(problems)) if problems else OK
        conditions = set_condition(conditions, "Allocated", *allocated, now=now)
        conditions = set_condition(conditions, "Disabled", False, now=now)
        conditions = set_condition(conditions, "InSynced", True, now=now)
        await self._write_vmnetcfg_status(ref, status, conditions, entries)
        self.metrics.set_vmnetcfg(
            name,
            [
                (e["networkName"], e["macAddress"], e["allocatedIPAddress"], e["state"])
                for e in entries
            ],
        )
        if problems:
            self._events.post(
                body,
                "VirtualMachineNetworkConfig",
                "AllocationFailed",
                "; ".join(problems),
                warning=True,
            )
            self.queue.add_after((VMNETCFGS, *ref), RETRY_SECONDS * 3)

    def _allocate_nic(
        self,
        ref: tuple[str, str],
        network: str,
        mac: str,
        static: str | None,
        previous: dict[tuple[str, str], dict[str, Any]],
        problems: list[str],
    ) -> dict[str, str] | None:
        pool_ref = self.pool_of_network.get(network)
        if pool_ref is None:
            problems.append(f"no ippool serves network {network}")
            self.waiting.setdefault(network, set()).add(ref)
            return None
        owner = self.owners.get((network, mac))
        if owner is not None and owner != ref:
            problems.append(
                f"mac {mac} on network {network} is already used by vmnetcfg {owner[0]}/{owner[1]}"
            )
            return None
        pool = self.ipam.pool(network)
        before = pool.lookup(mac)
        designated: str | None = static
        if designated is None and before is None:
            # resume after a pause, or a status that outlived our memory: same address again
            recorded = previous.get((network, mac), {}).get("allocatedIPAddress")
            if recorded and _free_for(pool, recorded, mac):
                designated = recorded
        try:
            address = pool.allocate(mac, designated)
        except (DesignationError, IpamError) as exc:
            problems.append(str(exc))
            self.waiting.setdefault(network, set()).add(ref)
            return None
        self.owners[(network, mac)] = ref
        if address != before:
            self.queue.add_after((IPPOOLS, *pool_ref), self.config.status_flush_seconds)
            body = self.objects[VMNETCFGS].get(ref)
            if body is not None:
                self._events.post(
                    body,
                    "VirtualMachineNetworkConfig",
                    "Allocated",
                    f"allocated {address} to {mac} on network {network}",
                )
        return {
            "allocatedIPAddress": str(address),
            "macAddress": mac,
            "networkName": network,
            "state": NetworkConfigState.ALLOCATED.value,
        }

    def _release(self, network: str, mac: str) -> None:
        self.owners.pop((network, mac), None)
        if network not in self.ipam:
            return
        if self.ipam.pool(network).release(mac) is None:
            return
        pool_ref = self.pool_of_network.get(network)
        if pool_ref is not None:
            self.queue.add_after((IPPOOLS, *pool_ref), self.config.status_flush_seconds)
        for waiting in self.waiting.pop(network, set()):
            self.queue.add((VMNETCFGS, *waiting))

    def _release_all(self, ref: tuple[str, str]) -> None:
        for (network, mac), owner in list(self.owners.items()):
            if owner == ref:
                self._release(network, mac)
        for waiting in self.waiting.values():
            waiting.discard(ref)

    async def _write_vmnetcfg_status(
        self,
        ref: tuple[str, str],
        status: Body,
        conditions: list[dict[str, Any]],
        entries: list[dict[str, str]] | None,
    ) -> None:
        patch: Body = {}
        if conditions != (status.get("conditions") or []):
            patch["conditions"] = conditions
        if entries is not None and entries != (status.get("networkConfigs") or []):
            patch["networkConfigs"] = entries
        if patch:
            updated = await self.kube.patch_status(
                GROUP, VERSION, ref[0], "virtualmachinenetworkconfigs", ref[1], {"status": patch}
            )
            self._remember(VMNETCFGS, updated)

    # -- VirtualMachine --------------------------------------------------------------------

    async def _delete_vmnetcfg(self, ref: tuple[str, str]) -> None:
        """Delete it (its finalizer releases its addresses); gone already is fine."""
        try:
            await self.kube.delete_object(
                GROUP, VERSION, ref[0], "virtualmachinenetworkconfigs", ref[1]
            )
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def reconcile_vm(self, ref: tuple[str, str]) -> None:
        vm = self.objects[VMS].get(ref)
        existing = self.objects[VMNETCFGS].get(ref)
        if vm is None or _meta(vm).get("deletionTimestamp"):
            # The garbage collector does this through the owner reference on a real
            # cluster; doing it here too keeps addresses from leaking where it does not run.
            if existing is not None and _owned_by(existing, vm, ref[1]):
                await self._delete_vmnetcfg(ref)
            return
        nics, warnings = nics_from_vm(vm)
        for warning in warnings:
            log.warning("vm %s/%s: %s", *ref, warning)
        managed = [nic for nic in nics if nic.network_name in self.pool_of_network]
        current = ((existing or {}).get("spec") or {}).get("networkConfigs") or []
        if not managed:
            configured = {network_key(c.get("networkName") or "") for c in current}
            if existing is None or not _owned_by(existing, vm, ref[1]):
                log.debug("no effective network configs found for vm %s/%s, skipping", *ref)
            elif configured & vm_networks(vm):
                # the VM is still on the network (its pool is gone, or its NIC lost its MAC):
                # keep the vmnetcfg, and a user's ipAddress in it, and the addresses in use
                log.info(
                    "vm %s/%s: no NIC with a MAC on a network with a pool; keeping its vmnetcfg",
                    *ref,
                )
            else:
                # the VM left every network its vmnetcfg names (upstream keeps the vmnetcfg
                # and its addresses until the VM is deleted)
                log.info("vm %s/%s left its managed networks: deleting its vmnetcfg", *ref)
                await self._delete_vmnetcfg(ref)
            return
        kept_ips = {
            (network_key(c.get("networkName") or ""), _mac_or_none(c.get("macAddress"))): c.get(
                "ipAddress"
            )
            for c in current
        }
        desired = []
        for nic in managed:
            entry = nic.wire()
            if "ipAddress" not in entry and kept_ips.get((nic.network_name, nic.mac_address)):
                entry["ipAddress"] = str(kept_ips[(nic.network_name, nic.mac_address)])
            desired.append(entry)
        if existing is None:
            meta = _meta(vm)
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "VirtualMachineNetworkConfig",
                "metadata": {
                    "name": ref[1],
                    "namespace": ref[0],
                    "labels": {LABEL_VM_NAME: ref[1]},
                    "finalizers": [FINALIZER],
                    "ownerReferences": [
                        {
                            "apiVersion": f"{KUBEVIRT_GROUP}/{KUBEVIRT_VERSION}",
                            "kind": "VirtualMachine",
                            "name": meta.get("name"),
                            "uid": meta.get("uid"),
                        }
                    ],
                },
                "spec": {"vmName": ref[1], "networkConfigs": desired},
            }
            try:
                created = await self.kube.create_object(
                    GROUP, VERSION, ref[0], "virtualmachinenetworkconfigs", body
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                return
            self._remember(VMNETCFGS, created)
            self.queue.add((VMNETCFGS, *ref))
        elif current != desired:
            updated = await self.kube.patch_object(
                GROUP,
                VERSION,
                ref[0],
                "virtualmachinenetworkconfigs",
                ref[1],
                {"spec": {"networkConfigs": desired}},
            )
            self._remember(VMNETCFGS, updated)
            self.queue.add((VMNETCFGS, *ref))

    # -- NetworkAttachmentDefinition: a pool along with the VM network -----------------------

    async def reconcile_nad(self, ref: tuple[str, str]) -> None:
        """A NAD annotated `network.harvesterhci.io/dhcp-pool: {<ipv4Config fields>}` gets an
        IPPool of its own namespace and name, owned by the NAD, with the webhook's defaults
        for missing fields; later annotation changes update the pool's mutable options."""
        nad = self.objects[NADS].get(ref)
        if nad is None or _meta(nad).get("deletionTimestamp"):
            return
        meta = _meta(nad)
        raw = (meta.get("annotations") or {}).get(ANNOTATION_DHCP_POOL)
        if not raw:
            return
        try:
            config = json.loads(raw)
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
            body: Body = {"spec": {"ipv4Config": config}}
            for op in ippool_defaults(body):
                _apply_add(body, op["path"], op["value"])
        except ValueError as exc:
            message = f"annotation {ANNOTATION_DHCP_POOL} cannot make an IPPool: {exc}"
            log.warning("nad %s/%s: %s", *ref, message)
            self._events.post(
                nad, "NetworkAttachmentDefinition", "InvalidDHCPPool", message, warning=True
            )
            return
        spec = {"networkName": f"{ref[0]}/{ref[1]}", "ipv4Config": body["spec"]["ipv4Config"]}
        existing = self.objects[IPPOOLS].get(ref)
        if existing is None:
            pool = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "IPPool",
                "metadata": {
                    "name": ref[1],
                    "namespace": ref[0],
                    "ownerReferences": [
                        {
                            "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}",
                            "kind": "NetworkAttachmentDefinition",
                            "name": ref[1],
                            "uid": meta.get("uid"),
                        }
                    ],
                },
                "spec": spec,
            }
            try:
                created = await self.kube.create_object(GROUP, VERSION, ref[0], "ippools", pool)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                return
            self._remember(IPPOOLS, created)
            self._events.post(
                nad,
                "NetworkAttachmentDefinition",
                "IPPoolCreated",
                f"created ippool {ref[0]}/{ref[1]}",
            )
            return
        owners = _meta(existing).get("ownerReferences") or []
        if not any(o.get("uid") == meta.get("uid") for o in owners):
            return  # a pool someone else made: not ours to change
        current = (existing.get("spec") or {}).get("ipv4Config") or {}
        mutable = ("dns", "domainName", "domainSearch", "ntp", "leaseTime")
        changes = {
            k: spec["ipv4Config"].get(k)
            for k in mutable
            if spec["ipv4Config"].get(k) != current.get(k)
        }
        if changes:
            updated = await self.kube.patch_object(
                GROUP, VERSION, ref[0], "ippools", ref[1], {"spec": {"ipv4Config": changes}}
            )
            self._remember(IPPOOLS, updated)

    # -- views for the HTTP API ------------------------------------------------------------

    def ipam_dump(self, network: str, limit: int = 1 << 16) -> dict[str, str] | None:
        """Upstream's /ipams shape: every allocatable address -> "true"/"false"."""
        if network not in self.ipam:
            return None
        pool = self.ipam.pool(network)
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
        if network not in self.ipam:
            return None
        return {mac: str(ip) for ip, mac in self.ipam.pool(network).allocations().items()}


class _SpecOnlyView(Snapshot):
    """A view in which every NAD exists and no other pool or vmnetcfg does: what is left
    of the validators is the pool's own spec."""

    def nad_labels(self, namespace: str, name: str) -> dict[str, str]:
        return {}


_SPEC_ONLY = _SpecOnlyView()


def _apply_add(body: Body, path: str, value: Any) -> None:
    """Apply one JSON-patch `add` to nested dicts (the defaults' paths are all objects)."""
    *parents, last = path.strip("/").split("/")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _free_for(pool: Pool, address: str, mac: str) -> bool:
    try:
        owner = pool.owner(address)
    except ValueError:
        return False
    return owner in (None, mac)


def _mac_or_none(value: str | None) -> str | None:
    try:
        return normalize_mac(value or "")
    except InvalidMac:
        return None


def _owned_by(cfg: Body, vm: Body | None, vm_name: str) -> bool:
    meta = _meta(cfg)
    if vm is not None:
        uid = _meta(vm).get("uid")
        if any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
            return True
    return any(
        o.get("kind") == "VirtualMachine" and o.get("name") == vm_name
        for o in meta.get("ownerReferences") or []
    )


class EventRecorder:
    """Kubernetes Events about our objects; best effort, fire and forget."""

    def __init__(self, kube: Kube, component: str = "vm-dhcp-controller") -> None:
        self.kube = kube
        self.component = component
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[tuple[str, str, str, str], float] = {}
        self._last_failure = -3600.0

    def post(self, body: Body, kind: str, reason: str, message: str, warning: bool = False) -> None:
        meta = _meta(body)
        key = (kind, meta.get("namespace", ""), meta.get("name", ""), reason + message)
        now = time.monotonic()
        if now - self._recent.get(key, -3600.0) < 300:
            return
        if len(self._recent) > 10_000:  # messages carry addresses: bound the memory
            self._recent = {k: t for k, t in self._recent.items() if now - t < 300}
        self._recent[key] = now
        stamp = _now()
        event = {
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion") or f"{GROUP}/{VERSION}",
                "kind": kind,
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send(meta.get("namespace") or "default", event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, event: Body) -> None:
        try:
            await self.kube.create_event(namespace, event)
        except ApiError as exc:
            now = time.monotonic()
            if now - self._last_failure > 60:  # a refused Event must be visible, not noisy
                self._last_failure = now
                log.warning("cannot post event %s: %s", event["reason"], exc)

"""The webhook's picture of the cluster: IPPools, VirtualMachineNetworkConfigs and the labels
of NetworkAttachmentDefinitions, each kept by its own list-then-watch (`vmdhcp.watching`:
watch from the listing's resourceVersion, resume after a break from the last one seen,
bookmarks included, relist only on 410) and indexed the way the rules look things up.

Only what the rules read is kept: a NAD's two `ippool-*` labels; an IPPool's name, spec and
status as the model reads them (`status.ipv4.allocated` is what a static address is checked
against); a vmnetcfg's name and, per NIC, the network, MAC and static address as written
and as the rules compare them. The objects' other fields (managedFields, annotations, the
vmnetcfg's status) are dropped as each event arrives.

The watch threads write under one lock; the admission handlers read under it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic

from vmdhcp import k8s
from vmdhcp.api import GROUP, VERSION, IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import (
    IPPOOL_PLURAL,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    VMNETCFG_PLURAL,
)
from vmdhcp.validation import network_key
from vmdhcp.validation.vmnetcfg import mac_key, static_key
from vmdhcp.watching import list_then_watch
from vmdhcp.webhook.lookups import paged_lister, plain, translated

logger = logging.getLogger(__name__)

Body = dict[str, Any]
Ref = tuple[str, str]
"""(namespace, name)"""
V = TypeVar("V")

WATCH_SECONDS = 30
"""The server ends each watch after this long and the next resumes where it ended; a watch
that ends so (or brings any event or bookmark) proves the cache current."""
NO_LABELS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Nic:
    """One `spec.networkConfigs[]` entry: as written, and as the rules compare it."""

    network_name: str
    mac_address: str
    ip_address: str | None
    network: str
    """`network_key(network_name)`"""
    mac: str | None
    """`mac_key(mac_address)`: None when it is not a MAC"""
    ip: str | None
    """`static_key(ip_address)`: None when no particular address is asked for"""


@dataclass(frozen=True, slots=True)
class Pool:
    pool: IPPool
    network: str


def ref_of(body: Mapping[str, Any]) -> Ref:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _slim(body: Mapping[str, Any], *fields: str) -> Body:
    """The object with metadata reduced to its name and namespace, and only `fields`."""
    namespace, name = ref_of(body)
    slim: Body = {"metadata": {"name": name, "namespace": namespace}}
    slim.update((f, body[f]) for f in fields if f in body)
    return slim


def _readable(model: type[Any], body: Mapping[str, Any], *fields: str) -> Any:
    """The parsed object, or None (with a warning) when the model cannot read it: such an
    object is left out, as a listing the models cannot read always was."""
    try:
        return model.model_validate(_slim(body, *fields))
    except pydantic.ValidationError as exc:
        namespace, name = ref_of(body)
        logger.warning(
            "Ignoring unreadable %s %s/%s: %s",
            model.__name__,
            namespace,
            name,
            exc.errors()[0].get("msg"),
        )
        return None


def parse_nad(body: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (body.get("metadata") or {}).get("labels") or {}
    kept = {
        key: sys.intern(str(labels[key]))
        for key in (LABEL_IPPOOL_NAMESPACE, LABEL_IPPOOL_NAME)
        if key in labels
    }
    return kept or NO_LABELS


def parse_pool(body: Mapping[str, Any]) -> Pool | None:
    pool: IPPool | None = _readable(IPPool, body, "spec", "status")
    if pool is None:
        return None
    return Pool(pool, sys.intern(network_key(pool.spec.network_name)))


def _text(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def parse_vmnetcfg(body: Mapping[str, Any]) -> tuple[Nic, ...] | None:
    cfg: VirtualMachineNetworkConfig | None = _readable(
        VirtualMachineNetworkConfig, body, "spec", "status"
    )
    if cfg is None:
        return None
    return tuple(
        Nic(
            network_name=sys.intern(nc.network_name),
            mac_address=sys.intern(nc.mac_address),
            ip_address=_text(nc.ip_address),
            network=sys.intern(network_key(nc.network_name)),
            mac=_text(mac_key(nc.mac_address)),
            ip=_text(static_key(nc.ip_address)),
        )
        for nc in cfg.spec.network_configs or ()
    )


def pool_keys(pool: Pool) -> Iterable[tuple[str, object]]:
    yield "network", pool.network


def nic_keys(nics: tuple[Nic, ...]) -> Iterable[tuple[str, object]]:
    for nic in nics:
        yield "network", nic.network
        if nic.mac is not None:
            yield "mac", (nic.network, nic.mac)
        if nic.ip is not None:
            yield "ip", (nic.network, nic.ip)


def no_keys(_: object) -> Iterable[tuple[str, object]]:
    return ()


def list_order(ref: Ref) -> str:
    """The order of a listing (etcd's key order, `<namespace>/<name>`)."""
    return f"{ref[0]}/{ref[1]}"


class Table(Generic[V]):
    """Rows by (namespace, name), and the refs under each index key of a row."""

    def __init__(self, keys: Callable[[V], Iterable[tuple[str, object]]]) -> None:
        self.keys = keys
        self.rows: dict[Ref, V] = {}
        self.index: dict[tuple[str, object], set[Ref]] = {}

    def put(self, ref: Ref, row: V) -> None:
        if self.rows.get(ref) == row:
            return
        self.remove(ref)
        self.rows[ref] = row
        for key in self.keys(row):
            self.index.setdefault(key, set()).add(ref)

    def remove(self, ref: Ref) -> None:
        row = self.rows.pop(ref, None)
        if row is None:
            return
        for key in self.keys(row):
            refs = self.index.get(key)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self.index[key]

    def find(self, kind: str, key: object) -> list[Ref]:
        return sorted(self.index.get((kind, key), ()), key=list_order)


class Feed(Generic[V]):
    """One resource's list-then-watch into a `Table`, in a thread."""

    def __init__(
        self,
        caches: Caches,
        name: str,
        resource: tuple[str, str, str],
        parse: Callable[[Mapping[str, Any]], V | None],
        keys: Callable[[V], Iterable[tuple[str, object]]],
        watch_seconds: int,
    ) -> None:
        self.caches = caches
        self.name = name
        self.parse = parse
        self.table: Table[V] = Table(keys)
        self.list_once = translated(paged_lister(caches.kube, *resource))
        self.watch_from = k8s.custom_object_watcher(caches.kube, *resource, watch_seconds)
        self.listed = False
        self.failing_since: float | None = None
        self.failure = ""
        self.thread = threading.Thread(target=self._run, name=f"watch {name}", daemon=True)

    def _run(self) -> None:
        list_then_watch(
            self.list_once,
            self._watch,
            on_list=self._on_list,
            on_event=self._on_event,
            on_failure=self._on_failure,
            stop=self.caches.stopping,
        )

    def _alive(self) -> None:
        if self.failing_since is not None:
            logger.info("%s: watching again", self.name)
        self.failing_since = None

    def _watch(self, version: str) -> Iterator[tuple[str, Body]]:
        try:
            for event in self.watch_from(version):
                self._alive()  # bookmarks too: the stream is current
                yield event
        except Exception as exc:
            raise plain(exc) from exc
        self._alive()  # ended by the server's timeout, not broken

    def _on_list(self, listing: Body, first: bool) -> None:
        table: Table[V] = Table(self.table.keys)
        for body in listing["items"]:
            row = self.parse(body)
            if row is not None:
                table.put(ref_of(body), row)
        with self.caches.lock:
            self.table = table
        count = len(table.rows)
        self._alive()
        logger.info("%s: %s %d", self.name, "listed" if first else "listed again (410)", count)
        if first:
            self.listed = True
            self.caches.listed()

    def _on_event(self, kind: str, body: Body) -> None:
        ref = ref_of(body)
        row = None if kind == "DELETED" else self.parse(body)
        with self.caches.lock:
            if row is None:
                self.table.remove(ref)
            else:
                self.table.put(ref, row)

    def _on_failure(self, reason: str, retry_in: float) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.failure = reason
        logger.warning(
            "%s: list or watch failed (%s); retrying in %.1fs", self.name, reason, retry_in
        )


class Caches:
    """The three feeds, their readiness and their staleness."""

    def __init__(self, kube: k8s.Kube, watch_seconds: int = WATCH_SECONDS) -> None:
        self.kube = kube
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.nads = Feed(
            self, "NADs", (NAD_GROUP, NAD_VERSION, NAD_PLURAL), parse_nad, no_keys, watch_seconds
        )
        self.ippools = Feed(
            self, "IPPools", (GROUP, VERSION, IPPOOL_PLURAL), parse_pool, pool_keys, watch_seconds
        )
        self.vmnetcfgs = Feed(
            self,
            "vmnetcfgs",
            (GROUP, VERSION, VMNETCFG_PLURAL),
            parse_vmnetcfg,
            nic_keys,
            watch_seconds,
        )
        self.feeds: tuple[Feed[Any], ...] = (self.nads, self.ippools, self.vmnetcfgs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filled: asyncio.Event | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._filled = asyncio.Event()
        for feed in self.feeds:
            feed.thread.start()

    def stop(self) -> None:
        """The threads end at their next event or watch timeout (they are daemons)."""
        self.stopping.set()

    def listed(self) -> None:
        """A feed's first listing is in (called from its thread)."""
        if self._loop is not None and self._filled is not None and self.filled:
            self._loop.call_soon_threadsafe(self._filled.set)

    @property
    def filled(self) -> bool:
        return all(feed.listed for feed in self.feeds)

    async def wait_filled(self) -> None:
        assert self._filled is not None, "start() first"
        await self._filled.wait()

    def problem(self, max_stale: float) -> str | None:
        """Why the caches cannot be answered from: a first listing missing, or a watch that
        has failed for longer than `max_stale` seconds (0: never too stale)."""
        missing = [feed.name for feed in self.feeds if not feed.listed]
        if missing:
            return f"the webhook has not yet listed {', '.join(missing)}"
        now = time.monotonic()
        for feed in self.feeds:
            since = feed.failing_since
            if max_stale and since is not None and now - since > max_stale:
                return (
                    f"the webhook's watch of {feed.name} has failed for {now - since:.0f} s "
                    f"({feed.failure})"
                )
        return None

    def sizes(self) -> dict[str, int]:
        return {feed.name: len(feed.table.rows) for feed in self.feeds}

"""What one admission sees: a `ClusterView` over the caches, narrowed to what the object
under review can collide with, and, for a refusal, the same lookups read live.

The rules ask a view for every vmnetcfg on a network and scan them for the MAC or static
address under review; this view hands them only the vmnetcfgs that hold one of those (the
others could not match), and an IPPool whose `status.ipv4.allocated` holds only the
addresses under review. The rules' answers are the same; their cost no longer grows with
the network.

Every lookup is recorded, so that a refusal can be checked against the API server: the
NADs, IPPools and vmnetcfgs it rests on are read again (GET, a consistent read) and the
rules judged once more on those (`confirm`). A cache that is a moment behind can therefore
make the webhook accept what it should refuse (the controller is the guard there, as it is
for two admissions at once), but never refuse what it should accept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vmdhcp import k8s
from vmdhcp.api import GROUP, VERSION, IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import (
    IPPOOL_PLURAL,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    VMNETCFG_PLURAL,
)
from vmdhcp.api.models import NetworkConfig, ObjectMeta, VirtualMachineNetworkConfigSpec
from vmdhcp.validation import network_key
from vmdhcp.validation.vmnetcfg import mac_key, static_key
from vmdhcp.webhook.caches import Caches, Nic, Ref, list_order, parse_pool, parse_vmnetcfg
from vmdhcp.webhook.lookups import get_object, nad_labels

logger = logging.getLogger(__name__)

CONFIRM_LIMIT = 16
"""Objects named by one refusal that are read again; past these the cache's word stands
(an IPPool DELETE refused for many vmnetcfgs names them all)."""


def as_vmnetcfg(ref: Ref, nics: Iterable[Nic]) -> VirtualMachineNetworkConfig:
    """A cached vmnetcfg as the rules read one (name, namespace, NICs; nothing else)."""
    return VirtualMachineNetworkConfig.model_construct(
        metadata=ObjectMeta.model_construct(namespace=ref[0], name=ref[1]),
        spec=VirtualMachineNetworkConfigSpec.model_construct(
            network_configs=[
                NetworkConfig.model_construct(
                    network_name=n.network_name, mac_address=n.mac_address, ip_address=n.ip_address
                )
                for n in nics
            ]
        ),
    )


def _only(pool: IPPool, addresses: set[str]) -> IPPool:
    """`pool` with `status.ipv4.allocated` cut down to `addresses` (canonical dotted quads,
    the only text the rules' address parser reads as those addresses)."""
    status = pool.status
    ipv4 = status.ipv4 if status else None
    if status is None or ipv4 is None or not ipv4.allocated:
        return pool
    kept = {ip: ipv4.allocated[ip] for ip in addresses if ip in ipv4.allocated}
    ipv4 = ipv4.model_copy(update={"allocated": kept})
    return pool.model_copy(update={"status": status.model_copy(update={"ipv4": ipv4})})


class CachedView:
    """A `ClusterView` for one admission. `cfgs` are the vmnetcfgs under review (new and
    old): only vmnetcfgs sharing a (network, MAC) or (network, static address) with them are
    returned by `vmnetcfgs_on_network`, unless `every_user` (an IPPool DELETE, which names
    every vmnetcfg on the pool's network)."""

    def __init__(
        self,
        caches: Caches,
        cfgs: Iterable[VirtualMachineNetworkConfig] = (),
        *,
        every_user: bool = False,
    ) -> None:
        self.caches = caches
        self.every_user = every_user
        self.macs: set[tuple[str, str]] = set()
        self.ips: set[tuple[str, str]] = set()
        for cfg in cfgs:
            for nc in cfg.spec.network_configs or ():
                key = network_key(nc.network_name)
                mac, ip = mac_key(nc.mac_address), static_key(nc.ip_address)
                if mac is not None:
                    self.macs.add((key, mac))
                if ip is not None:
                    self.ips.add((key, ip))
        self.addresses = {ip for _, ip in self.ips}
        self.nads_seen: set[Ref] = set()
        self.pools_seen: set[Ref] = set()
        self.cfgs_seen: dict[Ref, VirtualMachineNetworkConfig] = {}
        self.on_network: dict[str, list[Ref]] = {}

    def nad_labels(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.nads_seen.add((namespace, name))
        with self.caches.lock:
            return self.caches.nads.table.rows.get((namespace, name))

    def ippool(self, namespace: str, name: str) -> IPPool | None:
        self.pools_seen.add((namespace, name))
        with self.caches.lock:
            found = self.caches.ippools.table.rows.get((namespace, name))
        return None if found is None else _only(found.pool, self.addresses)

    def ippools_on_network(self, network: str) -> Sequence[IPPool]:
        table = self.caches.ippools.table
        with self.caches.lock:
            refs = table.find("network", network)
            pools = [table.rows[ref].pool for ref in refs]
        self.pools_seen.update(refs)
        return pools

    def vmnetcfgs_on_network(self, network: str) -> Sequence[VirtualMachineNetworkConfig]:
        table = self.caches.vmnetcfgs.table
        with self.caches.lock:
            if self.every_user:
                refs = table.find("network", network)
            else:
                found: set[Ref] = set()
                for key, mac in self.macs:
                    if key == network:
                        found.update(table.index.get(("mac", (key, mac)), ()))
                for key, ip in self.ips:
                    if key == network:
                        found.update(table.index.get(("ip", (key, ip)), ()))
                refs = sorted(found, key=list_order)
            rows = [(ref, table.rows[ref]) for ref in refs]
        # an IPPool DELETE reads only the names (and may name thousands): no NICs for it
        models = [as_vmnetcfg(ref, () if self.every_user else nics) for ref, nics in rows]
        self.cfgs_seen.update(zip(refs, models, strict=True))
        self.on_network[network] = refs
        return models


class LiveView:
    """A `ClusterView` over what `confirm` read again: the NADs and IPPools the cached view
    was asked about, as they are now, and of the vmnetcfgs it named, those read again that
    are still on the network, plus any past CONFIRM_LIMIT as the cache has them."""

    def __init__(
        self,
        asked: CachedView,
        nads: Mapping[Ref, Mapping[str, str]],
        pools: Iterable[IPPool],
        cfgs: Mapping[Ref, VirtualMachineNetworkConfig | None],
    ) -> None:
        self.asked = asked
        self.nads = nads
        self.pools = {(p.metadata.namespace, p.metadata.name): p for p in pools}
        self.cfgs = cfgs

    def nad_labels(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.nads.get((namespace, name))

    def ippool(self, namespace: str, name: str) -> IPPool | None:
        return self.pools.get((namespace, name))

    def ippools_on_network(self, network: str) -> Sequence[IPPool]:
        return [p for p in self.pools.values() if network_key(p.spec.network_name) == network]

    def vmnetcfgs_on_network(self, network: str) -> Sequence[VirtualMachineNetworkConfig]:
        found = []
        for ref in self.asked.on_network.get(network, ()):
            if ref not in self.cfgs:
                found.append(self.asked.cfgs_seen[ref])
            elif (cfg := self.cfgs[ref]) is not None and any(
                network_key(nc.network_name) == network for nc in cfg.spec.network_configs or ()
            ):
                found.append(cfg)
        return found


async def _read(kube: k8s.Kube, plural: str, ref: Ref) -> dict[str, Any] | None:
    return await get_object(kube, GROUP, VERSION, plural, ref[0], ref[1])


async def confirm(kube: k8s.Kube, view: CachedView) -> LiveView | None:
    """The objects `view` was asked about, read from the API server: a view to judge a
    refusal again on, or None when the API server could not be asked (the cache's word
    stands)."""
    nad_refs = sorted(view.nads_seen)
    pool_refs = sorted(view.pools_seen)
    checked = list(view.cfgs_seen)[:CONFIRM_LIMIT]
    try:
        nads, fetched, cfgs = await asyncio.gather(
            asyncio.gather(*(nad_labels(kube, ns, name) for ns, name in nad_refs)),
            asyncio.gather(*(_read(kube, IPPOOL_PLURAL, ref) for ref in pool_refs)),
            asyncio.gather(*(_read(kube, VMNETCFG_PLURAL, ref) for ref in checked)),
        )
        found = {ref: ls for ref, ls in zip(nad_refs, nads, strict=True) if ls is not None}
        named = {
            (labels.get(LABEL_IPPOOL_NAMESPACE), labels.get(LABEL_IPPOOL_NAME))
            for labels in found.values()
        }
        # a NAD that now names another pool than the cache said
        later = sorted({(ns, name) for ns, name in named if ns and name} - set(pool_refs))
        fetched += await asyncio.gather(*(_read(kube, IPPOOL_PLURAL, ref) for ref in later))
    except k8s.ApiError as exc:
        logger.warning("Could not read the objects behind a refusal again: %s", exc)
        return None
    pools = [p.pool for body in fetched if body and (p := parse_pool(body)) is not None]
    live: dict[Ref, VirtualMachineNetworkConfig | None] = {}
    for ref, body in zip(checked, cfgs, strict=True):
        nics = parse_vmnetcfg(body) if body else None
        live[ref] = None if nics is None else as_vmnetcfg(ref, nics)
    return LiveView(view, found, pools, live)

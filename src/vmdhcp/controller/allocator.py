"""Who holds which address, for every pool the controller serves (pure, no I/O).

One `Allocator` keeps the IPAM pools by network, which IPPool serves each network, which
vmnetcfg owns each (network, MAC), the vmnetcfgs waiting for a pool or a free address,
and the conflicts the last build of each pool could not honour. Every method is
synchronous, so no two reconciles can hand out one address; each returns `Effects`, what
the caller must do next (reconcile a vmnetcfg again, write a pool's status), instead of
doing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vmdhcp.api.constants import EXCLUDED_MARK, RESERVED_MARK
from vmdhcp.api.models import IPv4Config
from vmdhcp.ipam import DesignationError, Ipam, IpamError, Pool
from vmdhcp.mac import InvalidMac, normalize_mac

Ref = tuple[str, str]  # (namespace, name)
Shape = tuple[object, ...]


@dataclass
class Effects:
    retry: set[Ref] = field(default_factory=set)
    """vmnetcfgs to reconcile again (they lost an address, or may now get one)."""
    changed: set[Ref] = field(default_factory=set)
    """IPPools whose allocations changed: their status needs writing."""
    conflicts: list[str] = field(default_factory=list)
    """Claims a pool build could not honour (first claim won), for logs and Events."""

    def merge(self, other: Effects) -> Effects:
        self.retry |= other.retry
        self.changed |= other.changed
        self.conflicts += other.conflicts
        return self


@dataclass(frozen=True)
class Claim:
    """An address a vmnetcfg's status says it holds."""

    address: str
    mac: str
    owner: Ref


def shape_of(config: IPv4Config) -> Shape:
    """The spec fields an IPAM pool is built from: a change to any of them reshapes it."""
    return (
        config.cidr,
        config.pool.start,
        config.pool.end,
        config.server_ip,
        config.router,
        tuple(config.pool.exclude or ()),
    )


def mac_or_none(value: str | None) -> str | None:
    try:
        return normalize_mac(value or "")
    except InvalidMac:
        return None


class Allocator:
    def __init__(self) -> None:
        self.ipam = Ipam()
        self.pool_of_network: dict[str, Ref] = {}
        self.owners: dict[tuple[str, str], Ref] = {}
        """(network, mac) -> the vmnetcfg holding that MAC's address on that network."""
        self.waiting: dict[str, set[Ref]] = {}
        """network -> vmnetcfgs to retry when its pool appears or frees addresses."""
        self.conflicts: dict[Ref, list[str]] = {}
        self._shapes: dict[str, Shape] = {}

    # -- queries ---------------------------------------------------------------------------

    def serves(self, network: str) -> bool:
        return network in self.pool_of_network

    def holder(self, network: str) -> Ref | None:
        return self.pool_of_network.get(network)

    def built(self, network: str, config: IPv4Config) -> bool:
        """The pool of `network` exists and was built from this very spec."""
        return network in self.ipam and self._shapes.get(network) == shape_of(config)

    def address_of(self, owner: Ref, network: str, mac: str) -> IPv4Address | None:
        """The address `owner` holds for `mac` on `network`, if any."""
        if self.owners.get((network, mac)) != owner:
            return None
        return self.ipam.pool(network).lookup(mac)

    def held_by(self, owner: Ref) -> list[tuple[str, str]]:
        return [key for key, who in self.owners.items() if who == owner]

    def allocations(self) -> int:
        return sum(self.ipam.pool(n).used for n in self.ipam)

    # -- pools -----------------------------------------------------------------------------

    def build(
        self,
        ref: Ref,
        network: str,
        config: IPv4Config,
        claims: Iterable[Claim],
        pool_status: dict[str, str],
        named_macs: Mapping[str | None, Ref],
    ) -> tuple[str | None, Effects]:
        """Serve `network` from IPPool `ref`: create its pool and restore what the
        vmnetcfgs' statuses claim, then what the pool's own status lists, owned by the
        vmnetcfg that names its MAC (`named_macs`; a MAC none names is released); or
        reshape a pool whose spec changed, keeping every allocation that still fits.
        Returns a problem (not served) or the effects."""
        holder = self.pool_of_network.get(network)
        if holder is not None and holder != ref:
            return (
                f"network {network} is already served by ippool {holder[0]}/{holder[1]}",
                Effects(),
            )
        if network in self.ipam:
            if self._shapes.get(network) == shape_of(config):
                return None, Effects()
            return self._reshape(ref, network, config)
        try:
            pool = config.to_pool(network)
        except IpamError as exc:
            return str(exc), Effects()
        effects = Effects(changed={ref})
        for claim in claims:
            found = pool.restore([(claim.address, claim.mac)])
            if found:
                effects.conflicts.extend(
                    f"vmnetcfg {claim.owner[0]}/{claim.owner[1]}: {c.message}" for c in found
                )
            else:
                self.owners[(network, normalize_mac(claim.mac))] = claim.owner
        for address, mac in sorted(pool_status.items()):
            if mac in (EXCLUDED_MARK, RESERVED_MARK):
                continue
            owner = named_macs.get(mac_or_none(mac))
            if owner is None:
                effects.conflicts.append(
                    f"ippool status: ip {address} of mac {mac} belongs to no "
                    "VirtualMachineNetworkConfig; released"
                )
                continue
            found = pool.restore([(address, mac)])
            effects.conflicts.extend(f"ippool status: {c.message}" for c in found)
            if not found:
                self.owners.setdefault((network, normalize_mac(mac)), owner)
        self.ipam.add(network, pool)
        self._shapes[network] = shape_of(config)
        self.pool_of_network[network] = ref
        self.conflicts[ref] = list(effects.conflicts)
        effects.retry |= self.waiting.pop(network, set())
        return None, effects

    def _reshape(self, ref: Ref, network: str, config: IPv4Config) -> tuple[str | None, Effects]:
        try:
            pool = config.to_pool(network)
        except IpamError as exc:
            return str(exc), Effects()
        old = self.ipam.pool(network)
        claims = [(str(ip), mac) for ip, mac in old.allocations().items()]
        effects = Effects(changed={ref})
        effects.conflicts = [f"after a spec change: {c.message}" for c in pool.restore(claims)]
        self.ipam.replace(network, pool)
        self._shapes[network] = shape_of(config)
        for (net, mac), owner in list(self.owners.items()):
            if net == network and pool.lookup(mac) is None:
                del self.owners[(net, mac)]
                effects.retry.add(owner)  # it gets another address
        self.conflicts[ref] = list(effects.conflicts)
        effects.retry |= self.waiting.pop(network, set())
        return None, effects

    def forget_pool(self, ref: Ref) -> Effects:
        """IPPool `ref` is gone: its network is no longer served; its owners lose their
        addresses (and will wait for a new pool)."""
        effects = Effects()
        for network, holder in list(self.pool_of_network.items()):
            if holder != ref:
                continue
            del self.pool_of_network[network]
            self._shapes.pop(network, None)
            self.ipam.remove(network)
            for (net, mac), owner in list(self.owners.items()):
                if net == network:
                    del self.owners[(net, mac)]
                    effects.retry.add(owner)
        self.conflicts.pop(ref, None)
        return effects

    # -- addresses -------------------------------------------------------------------------

    def allocate(
        self,
        owner: Ref,
        network: str,
        mac: str,
        static: str | None,
        recorded: str | None,
    ) -> tuple[IPv4Address | str, bool, Effects]:
        """Give `owner` an address for `mac` on `network`: its `static` one if asked,
        else the one it already holds, else the `recorded` one of its status if free,
        else the lowest free. Returns (address, newly allocated, effects), or (problem,
        False, effects) when it cannot; a vmnetcfg that cannot is retried when the pool
        appears or frees an address."""
        pool_ref = self.pool_of_network.get(network)
        if pool_ref is None:
            self.waiting.setdefault(network, set()).add(owner)
            return f"no ippool serves network {network}", False, Effects()
        holder = self.owners.get((network, mac))
        if holder is not None and holder != owner:
            return (
                f"mac {mac} on network {network} is already used by vmnetcfg "
                f"{holder[0]}/{holder[1]}",
                False,
                Effects(),
            )
        pool = self.ipam.pool(network)
        before = pool.lookup(mac)
        designated = static
        if designated is None and before is None and recorded and _free_for(pool, recorded, mac):
            designated = recorded  # resume after a pause, or a status that outlived us
        try:
            address = pool.allocate(mac, designated)
        except (DesignationError, IpamError) as exc:
            self.waiting.setdefault(network, set()).add(owner)
            return str(exc), False, Effects()
        self.owners[(network, mac)] = owner
        if address == before:
            return address, False, Effects()
        return address, True, Effects(changed={pool_ref})

    def release(self, network: str, mac: str) -> Effects:
        self.owners.pop((network, mac), None)
        if network not in self.ipam or self.ipam.pool(network).release(mac) is None:
            return Effects()
        effects = Effects(retry=self.waiting.pop(network, set()))
        pool_ref = self.pool_of_network.get(network)
        if pool_ref is not None:
            effects.changed.add(pool_ref)
        return effects

    def release_all(self, owner: Ref, keep: set[tuple[str, str]] | None = None) -> Effects:
        """Release what `owner` holds, but the (network, mac) pairs in `keep`."""
        effects = Effects()
        for network, mac in self.held_by(owner):
            if keep is None or (network, mac) not in keep:
                effects.merge(self.release(network, mac))
        if keep is None:
            for waiting in self.waiting.values():
                waiting.discard(owner)
        effects.retry.discard(owner)
        return effects


def _free_for(pool: Pool, address: str, mac: str) -> bool:
    try:
        return pool.owner(address) in (None, mac)
    except ValueError:
        return False

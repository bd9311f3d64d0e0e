"""Who holds which address, for every pool the controller serves (pure, no I/O).

One `Allocator` keeps the IPAM pools by network, which IPPool serves each network, which
vmnetcfg owns each (network, MAC), the vmnetcfgs waiting for a pool or a free address,
and the conflicts the last build of each pool could not honour. Every method is
synchronous, so no two reconciles can hand out one address; each returns `Effects`, what
the caller must do next (reconcile a vmnetcfg again, write a pool's status), instead of
doing it.

Addresses a client declined (DHCPDECLINE: another host answers for them) are set aside per
network until a time on the caller's monotonic clock: the pool is rebuilt with them
excluded, so nobody gets them, and `status` marks them `DECLINED` (counted as used).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vmdhcp.api.constants import DECLINED_MARK, EXCLUDED_MARK, RESERVED_MARK
from vmdhcp.api.models import IPv4Config
from vmdhcp.ipam import DesignationError, Ipam, IpamError, Pool, PoolSnapshot
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
    pinned: bool = False
    """The vmnetcfg's spec pins it (`ipAddress`): a DECLINED mark does not move it."""


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
        self.aside: dict[str, dict[IPv4Address, float]] = {}
        """network -> addresses set aside because a client declined them -> until when (the
        caller's monotonic clock)."""
        self._shapes: dict[str, Shape] = {}
        self._configs: dict[str, IPv4Config] = {}

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

    def status(self, network: str) -> tuple[PoolSnapshot, dict[str, str], int, int]:
        """The pool's snapshot and its status: `allocated` (MACs, then the marks, set-aside
        addresses `DECLINED`), `used` (allocations and set-aside addresses) and `available`
        (what can still be given), so that used + available is the pool's capacity."""
        snapshot = self.ipam.snapshot(network)
        allocated = snapshot.status_allocated()
        aside = self.aside.get(network, {})
        for address in sorted(aside):
            allocated[str(address)] = DECLINED_MARK
        return snapshot, allocated, snapshot.used + len(aside), snapshot.available

    def next_expiry(self, network: str) -> float | None:
        """When the first set-aside address of `network` goes back to the pool."""
        return min(self.aside.get(network, {}).values(), default=None)

    # -- pools -----------------------------------------------------------------------------

    def build(
        self,
        ref: Ref,
        network: str,
        config: IPv4Config,
        claims: Iterable[Claim],
        pool_status: dict[str, str],
        named_macs: Mapping[str | None, Ref],
        aside_until: float = 0.0,
    ) -> tuple[str | None, Effects]:
        """Serve `network` from IPPool `ref`: create its pool and restore what the
        vmnetcfgs' statuses claim, then what the pool's own status lists, owned by the
        vmnetcfg that names its MAC (`named_macs`; a MAC none names is released); or
        reshape a pool whose spec changed, keeping every allocation that still fits.
        `DECLINED` addresses are set aside until `aside_until`; the mark beats a claim that
        is not pinned (its vmnetcfg is retried: it gets what the pool's status gives its
        MAC, or another). Returns a problem (not served) or the effects."""
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
        set_aside = {_address_or_none(a) for a, m in pool_status.items() if m == DECLINED_MARK}
        for claim in claims:
            if not claim.pinned and _address_or_none(claim.address) in set_aside - {None}:
                # a crash between a decline's pool and vmnetcfg status writes: the mark wins
                effects.retry.add(claim.owner)
                effects.conflicts.append(
                    f"vmnetcfg {claim.owner[0]}/{claim.owner[1]}: ip {claim.address} of mac "
                    f"{claim.mac} is DECLINED in the ippool status: it gets another address"
                )
                continue
            found = pool.restore([(claim.address, claim.mac)])
            if found:
                effects.conflicts.extend(
                    f"vmnetcfg {claim.owner[0]}/{claim.owner[1]}: {c.message}" for c in found
                )
            else:
                self.owners[(network, normalize_mac(claim.mac))] = claim.owner
        declined: list[str] = []
        for address, mac in sorted(pool_status.items()):
            if mac == DECLINED_MARK:
                declined.append(address)
                continue
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
        self._configs[network] = config
        self.pool_of_network[network] = ref
        aside = self.aside.setdefault(network, {})
        for text in declined:
            marked = _address_or_none(text)
            if marked is None or pool.owner(marked) is not None:
                continue  # a pinned claim on it won: it is that VM's now
            aside[marked] = aside_until
        self._rebuild(network)
        self.conflicts[ref] = list(effects.conflicts)
        effects.retry |= self.waiting.pop(network, set())
        return None, effects

    def _reshape(self, ref: Ref, network: str, config: IPv4Config) -> tuple[str | None, Effects]:
        try:
            pool = _pool_of(config, network, self.aside.setdefault(network, {}))
        except IpamError as exc:
            return str(exc), Effects()
        self._configs[network] = config
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
            self._configs.pop(network, None)
            self.aside.pop(network, None)
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
        aside = self.aside.get(network, {})
        if (
            designated is None
            and before is None
            and recorded
            and _free_for(pool, recorded, mac)
            and _address_or_none(recorded) not in aside
        ):
            designated = recorded  # resume after a pause, or a status that outlived us
        try:
            address = pool.allocate(mac, designated)
        except (DesignationError, IpamError) as exc:
            self.waiting.setdefault(network, set()).add(owner)
            if static is not None and _address_or_none(static) in aside:
                return (
                    f"designated ip {static} is set aside: a client declined it, another host "
                    "answers for it on the network",
                    False,
                    Effects(),
                )
            return str(exc), False, Effects()
        self.owners[(network, mac)] = owner
        if address == before:
            return address, False, Effects()
        return address, True, Effects(changed={pool_ref})

    def decline(
        self, owner: Ref, network: str, mac: str, address: str, until: float
    ) -> tuple[IPv4Address | str | None, Effects]:
        """`mac` of `owner` declined `address`: set it aside until `until` and give the MAC
        another address. Returns None (and does nothing) unless `owner` holds exactly that
        address for that MAC; else the new address, or why there is none (the vmnetcfg then
        waits for a free address)."""
        pool_ref = self.pool_of_network.get(network)
        declined = _address_or_none(address)
        held = self.address_of(owner, network, mac)
        if pool_ref is None or declined is None or held != declined:
            return None, Effects()
        self.ipam.pool(network).release(mac)
        self.aside.setdefault(network, {})[declined] = until
        self._rebuild(network)
        got, _, effects = self.allocate(owner, network, mac, None, None)
        if isinstance(got, str):
            del self.owners[(network, mac)]  # it waits, holding nothing
        effects.changed.add(pool_ref)
        return got, effects

    def expire(self, network: str, now: float) -> Effects:
        """Set-aside addresses of `network` whose time is up go back to the pool."""
        aside = self.aside.get(network, {})
        due = [address for address, until in aside.items() if until <= now]
        pool_ref = self.pool_of_network.get(network)
        if not due or pool_ref is None:
            return Effects()
        for address in due:
            del aside[address]
        self._rebuild(network)
        return Effects(retry=self.waiting.pop(network, set()), changed={pool_ref})

    def _rebuild(self, network: str) -> None:
        """The pool of `network` again, from its spec and set-aside addresses, with every
        allocation (a set-aside address is never one: it was released or free)."""
        config = self._configs[network]
        old = self.ipam.pool(network)
        aside = self.aside.setdefault(network, {})
        pool = _pool_of(config, network, aside)
        pool.restore([(str(ip), mac) for ip, mac in old.allocations().items()])
        self.ipam.replace(network, pool)

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


def _address_or_none(text: str | None) -> IPv4Address | None:
    try:
        return IPv4Address((text or "").strip())
    except ValueError:
        return None


def _pool_of(config: IPv4Config, network: str, aside: dict[IPv4Address, float]) -> Pool:
    """The IPAM pool of `config`, with the set-aside addresses of its range excluded too;
    `aside` loses those that are not (out of the range, or excluded by the spec anyway)."""
    pool = config.to_pool(network)
    blocked = pool.excluded | pool.reserved
    extra = [a for a in aside if pool.start <= a <= pool.end and a not in blocked]
    for address in set(aside).difference(extra):
        del aside[address]
    if not extra:
        return pool
    return Pool(
        pool.network,
        pool.start,
        pool.end,
        server=pool.server,
        router=pool.router,
        excluded=[*pool.excluded, *extra],
        name=network,
    )


def _free_for(pool: Pool, address: str, mac: str) -> bool:
    try:
        return pool.owner(address) in (None, mac)
    except ValueError:
        return False

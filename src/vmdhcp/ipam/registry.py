"""The controller's IPAM: one Pool per network, keyed by the network's namespaced name
(`<nad-namespace>/<nad-name>`), as upstream keys its IPAM and MAC caches."""

from collections.abc import Iterator
from ipaddress import IPv4Address

from vmdhcp.ipam.errors import UnknownNetwork
from vmdhcp.ipam.pool import Pool, PoolSnapshot


class Ipam:
    """Pools by network name. Replacing a network's pool is explicit (`replace`)."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}

    def __contains__(self, network: object) -> bool:
        return network in self._pools

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._pools))

    def __len__(self) -> int:
        return len(self._pools)

    def add(self, network: str, pool: Pool) -> Pool:
        """Register `pool` for `network`; a network already present keeps its pool."""
        pool.name = network
        return self._pools.setdefault(network, pool)

    def replace(self, network: str, pool: Pool) -> None:
        pool.name = network
        self._pools[network] = pool

    def remove(self, network: str) -> Pool | None:
        return self._pools.pop(network, None)

    def pool(self, network: str) -> Pool:
        try:
            return self._pools[network]
        except KeyError:
            raise UnknownNetwork(network) from None

    def allocate(
        self, network: str, mac: str, designated: str | IPv4Address | None = None
    ) -> IPv4Address:
        return self.pool(network).allocate(mac, designated)

    def release(self, network: str, mac: str) -> IPv4Address | None:
        return self.pool(network).release(mac)

    def release_address(self, network: str, address: str | IPv4Address) -> str:
        return self.pool(network).release_address(address)

    def used(self, network: str) -> int:
        return self.pool(network).used

    def available(self, network: str) -> int:
        return self.pool(network).available

    def snapshot(self, network: str) -> PoolSnapshot:
        return self.pool(network).snapshot()

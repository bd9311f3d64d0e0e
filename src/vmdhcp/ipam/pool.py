"""One IPv4 pool: a CIDR, a start-end range, reserved and excluded addresses, and the
MAC-to-address allocations made from it.

Pure and synchronous. Memory grows with the number of allocations, not with the size of
the range: addresses are integer offsets from `start`, allocations live in two dicts,
and the lowest free address comes from a min-heap of released offsets below a
high-water mark plus a forward scan above it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from types import MappingProxyType

from vmdhcp.ipam.errors import (
    AddressInUse,
    DesignationError,
    InvalidPool,
    PoolExhausted,
    ReleaseError,
)
from vmdhcp.mac import InvalidMac, normalize_mac

EXCLUDED = "EXCLUDED"
RESERVED = "RESERVED"

_FIELD = "spec.ipv4Config"


def _ipv4_to_int(text: str) -> int | None:
    """Dotted-quad text to an integer, or None; the stdlib parser is 10x slower."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    number = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3:
            return None
        if len(part) > 1 and part[0] == "0":  # the stdlib refuses leading zeros too
            return None
        octet = int(part)
        if octet > 255:
            return None
        number = number << 8 | octet
    return number


def _parse_address(value: str | IPv4Address, field: str) -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    try:
        return IPv4Address(value.strip())
    except (AddressValueError, ValueError, AttributeError):
        raise InvalidPool(field, f"{value!r} is not a valid IPv4 address") from None


def _parse_network(value: str | IPv4Network) -> IPv4Network:
    if isinstance(value, IPv4Network):
        return value
    try:
        return IPv4Network(value.strip(), strict=False)
    except (AddressValueError, NetmaskValueError, ValueError, AttributeError):
        raise InvalidPool(f"{_FIELD}.cidr", f"invalid CIDR address: {value}") from None


class ConflictReason(StrEnum):
    INVALID_ADDRESS = "InvalidAddress"
    INVALID_MAC = "InvalidMAC"
    OUTSIDE_RANGE = "OutsideRange"
    NOT_ALLOCATABLE = "NotAllocatable"
    ADDRESS_CLAIMED = "AddressClaimed"
    MAC_CLAIMED = "MACClaimed"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A recorded allocation that `restore` refused, and why. Never resolved silently."""

    address: str
    mac: str
    reason: ConflictReason
    message: str


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """An immutable view of a pool at one moment, for status, metrics and dumps."""

    network: IPv4Network
    start: IPv4Address
    end: IPv4Address
    reserved: frozenset[IPv4Address]
    excluded: frozenset[IPv4Address]
    allocations: Mapping[IPv4Address, str]
    used: int
    available: int

    def status_allocated(self) -> dict[str, str]:
        """`status.ipv4.allocated` as upstream writes it: MACs, then the marks."""
        marks: dict[str, str] = {}
        for address in sorted(self.allocations):
            marks[str(address)] = self.allocations[address]
        for address in sorted(self.excluded):
            marks[str(address)] = EXCLUDED
        for address in sorted(self.reserved):
            marks[str(address)] = RESERVED
        return marks


class Pool:
    """Allocations of one network. Not thread-safe; every method is await-free."""

    __slots__ = (
        "_blocked",
        "_by_mac",
        "_by_offset",
        "_capacity",
        "_first",
        "_free_below",
        "_high_water",
        "_size",
        "end",
        "excluded",
        "name",
        "network",
        "reserved",
        "router",
        "server",
        "start",
    )

    def __init__(
        self,
        network: IPv4Network,
        start: IPv4Address,
        end: IPv4Address,
        *,
        server: IPv4Address | None = None,
        router: IPv4Address | None = None,
        excluded: Iterable[IPv4Address] = (),
        name: str = "",
    ) -> None:
        _check_range(network, start, end)
        self.name = name
        self.network = network
        self.start = start
        self.end = end
        self.server = server
        self.router = router
        self._first = int(start)
        self._size = int(end) - int(start) + 1
        self.excluded = frozenset(excluded)
        self.reserved = frozenset(
            a for a in (server, router) if a is not None and start <= a <= end
        )
        self._blocked = frozenset(
            int(a) - self._first for a in self.reserved | self.excluded if start <= a <= end
        )
        self._capacity = self._size - len(self._blocked)
        self._by_offset: dict[int, str] = {}
        self._by_mac: dict[str, int] = {}
        self._free_below: list[int] = []  # released offsets below _high_water (lazy heap)
        self._high_water = 0  # every offset below it is allocated, blocked or in the heap

    @classmethod
    def from_spec(
        cls,
        cidr: str | IPv4Network,
        start: str | IPv4Address,
        end: str | IPv4Address,
        *,
        server: str | IPv4Address | None = None,
        router: str | IPv4Address | None = None,
        exclude: Iterable[str | IPv4Address] = (),
        name: str = "",
    ) -> Pool:
        """Build a pool from IPPool spec values, with field paths in every error."""
        network = _parse_network(cidr)
        start_ip = _parse_address(start, f"{_FIELD}.pool.start")
        end_ip = _parse_address(end, f"{_FIELD}.pool.end")
        server_ip = _parse_address(server, f"{_FIELD}.serverIP") if server else None
        router_ip = _parse_address(router, f"{_FIELD}.router") if router else None
        excluded = [
            _parse_address(value, f"{_FIELD}.pool.exclude[{i}]") for i, value in enumerate(exclude)
        ]
        return cls(
            network,
            start_ip,
            end_ip,
            server=server_ip,
            router=router_ip,
            excluded=excluded,
            name=name,
        )

    # -- queries -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Addresses from start to end inclusive."""
        return self._size

    @property
    def capacity(self) -> int:
        """Addresses that can be allocated: the range minus reserved and excluded."""
        return self._capacity

    @property
    def used(self) -> int:
        return len(self._by_offset)

    @property
    def available(self) -> int:
        return self._capacity - len(self._by_offset)

    def lookup(self, mac: str) -> IPv4Address | None:
        """The address allocated to `mac`, if any."""
        offset = self._by_mac.get(normalize_mac(mac))
        return None if offset is None else IPv4Address(self._first + offset)

    def owner(self, address: str | IPv4Address) -> str | None:
        """The MAC holding `address`, if any."""
        offset = int(IPv4Address(address)) - self._first
        return self._by_offset.get(offset)

    def allocations(self) -> dict[IPv4Address, str]:
        first = self._first
        return {IPv4Address(first + o): mac for o, mac in sorted(self._by_offset.items())}

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            network=self.network,
            start=self.start,
            end=self.end,
            reserved=self.reserved,
            excluded=self.excluded,
            allocations=MappingProxyType(self.allocations()),
            used=self.used,
            available=self.available,
        )

    # -- changes -------------------------------------------------------------------------

    def allocate(self, mac: str, designated: str | IPv4Address | None = None) -> IPv4Address:
        """Give `mac` an address and return it.

        Idempotent per MAC. With `designated` (a static address), that address or an error
        saying why not; a MAC that holds another address moves to the designated one only
        once the designated one is known to be free. Without it, the MAC keeps what it has,
        or gets the lowest free address.
        """
        mac = normalize_mac(mac)
        current = self._by_mac.get(mac)
        if designated is not None and designated != "" and designated != "0.0.0.0":
            offset = self._check_designated(designated, mac)
            if current == offset:
                return IPv4Address(self._first + offset)
            if current is not None:
                self._forget(current, mac)
            self._take(offset, mac)
            return IPv4Address(self._first + offset)
        if current is not None:
            return IPv4Address(self._first + current)
        offset = self._lowest_free()
        self._take(offset, mac)
        return IPv4Address(self._first + offset)

    def release(self, mac: str) -> IPv4Address | None:
        """Free the address of `mac`; returns it, or None when the MAC had none."""
        mac = normalize_mac(mac)
        offset = self._by_mac.get(mac)
        if offset is None:
            return None
        self._forget(offset, mac)
        return IPv4Address(self._first + offset)

    def release_address(self, address: str | IPv4Address) -> str:
        """Free `address` whoever holds it; returns the MAC that held it."""
        if address in ("", None):
            raise ReleaseError("designated ip is empty")
        try:
            ip = IPv4Address(address)
        except ValueError:
            raise ReleaseError(f"to-be-deallocated ip {address} is not a valid address") from None
        offset = int(ip) - self._first
        if not 0 <= offset < self._size or offset in self._blocked:
            raise ReleaseError(
                f"to-be-deallocated ip {ip} was not found in network {self.name} ipam"
            )
        mac = self._by_offset.get(offset)
        if mac is None:
            raise ReleaseError(f"to-be-deallocated ip {ip} was not allocated")
        self._forget(offset, mac)
        return mac

    def restore(self, claims: Iterable[tuple[str, str]]) -> list[Conflict]:
        """Re-apply recorded `(address, mac)` allocations, e.g. `status.ipv4.allocated`.

        The marks EXCLUDED and RESERVED are skipped. A claim that cannot be honoured is
        returned as a Conflict and changes nothing; the first claim on an address or a
        MAC wins, so the result does not depend on anything but the input order.
        """
        conflicts: list[Conflict] = []
        for raw_address, raw_mac in claims:
            if raw_mac in (EXCLUDED, RESERVED):
                continue
            conflict = self._restore_one(raw_address, raw_mac)
            if conflict is not None:
                conflicts.append(conflict)
        return conflicts

    # -- internals -----------------------------------------------------------------------

    def _restore_one(self, raw_address: str, raw_mac: str) -> Conflict | None:
        def conflict(reason: ConflictReason, message: str) -> Conflict:
            return Conflict(raw_address, raw_mac, reason, message)

        try:
            mac = normalize_mac(raw_mac)
        except InvalidMac as exc:
            return conflict(ConflictReason.INVALID_MAC, str(exc))
        number = _ipv4_to_int(raw_address)
        if number is None:
            return conflict(
                ConflictReason.INVALID_ADDRESS, f"{raw_address!r} is not a valid IPv4 address"
            )
        offset = number - self._first
        ip = raw_address
        if not 0 <= offset < self._size:
            return conflict(
                ConflictReason.OUTSIDE_RANGE,
                f"ip {ip} of mac {mac} is outside the pool range {self.start}-{self.end}",
            )
        if offset in self._blocked:
            what = "reserved" if ip in self.reserved else "excluded"
            return conflict(
                ConflictReason.NOT_ALLOCATABLE, f"ip {ip} of mac {mac} is {what} in the pool"
            )
        holder = self._by_offset.get(offset)
        if holder == mac:
            return None
        if holder is not None:
            return conflict(
                ConflictReason.ADDRESS_CLAIMED,
                f"ip {ip} is claimed by mac {mac} but already allocated to mac {holder}",
            )
        held = self._by_mac.get(mac)
        if held is not None:
            return conflict(
                ConflictReason.MAC_CLAIMED,
                f"mac {mac} claims ip {ip} but already holds ip {IPv4Address(self._first + held)}",
            )
        self._take(offset, mac)
        return None

    def _check_designated(self, designated: str | IPv4Address, mac: str) -> int:
        try:
            ip = IPv4Address(designated)
        except ValueError:
            raise DesignationError(
                str(designated), f"designated ip {designated} is not a valid IPv4 address"
            ) from None
        net = self.network
        if ip not in net:
            raise DesignationError(str(ip), f"designated ip {ip} is not in subnet {net}")
        if net.prefixlen <= 30 and ip == net.broadcast_address:
            raise DesignationError(
                str(ip), f"designated ip {ip} equals broadcast ip address {net.broadcast_address}"
            )
        if net.prefixlen <= 30 and ip == net.network_address:
            raise DesignationError(
                str(ip), f"designated ip {ip} equals network ip address {net.network_address}"
            )
        offset = int(ip) - self._first
        if not 0 <= offset < self._size:
            raise DesignationError(
                str(ip), f"designated ip {ip} is outside the pool range {self.start}-{self.end}"
            )
        if ip == self.server:
            raise DesignationError(str(ip), f"designated ip {ip} is reserved for the DHCP server")
        if ip == self.router:
            raise DesignationError(str(ip), f"designated ip {ip} is reserved for the router")
        if offset in self._blocked:
            raise DesignationError(str(ip), f"designated ip {ip} is excluded from the pool")
        holder = self._by_offset.get(offset)
        if holder is not None and holder != mac:
            raise AddressInUse(ip, holder)
        return offset

    def _lowest_free(self) -> int:
        heap = self._free_below
        taken = self._by_offset
        while heap:
            offset = heapq.heappop(heap)
            if offset not in taken:
                return offset
        blocked = self._blocked
        offset = self._high_water
        size = self._size
        while offset < size and (offset in taken or offset in blocked):
            offset += 1
        if offset >= size:
            self._high_water = size
            raise PoolExhausted(self.name)
        self._high_water = offset + 1
        return offset

    def _take(self, offset: int, mac: str) -> None:
        self._by_offset[offset] = mac
        self._by_mac[mac] = offset

    def _forget(self, offset: int, mac: str) -> None:
        del self._by_offset[offset]
        del self._by_mac[mac]
        if offset < self._high_water:
            heapq.heappush(self._free_below, offset)


def _check_range(network: IPv4Network, start: IPv4Address, end: IPv4Address) -> None:
    """Upstream's range checks and messages, plus network and broadcast addresses.

    On /31 and /32 every address is usable (RFC 3021), so only longer prefixes refuse
    the network and broadcast addresses.
    """
    pool = f"{_FIELD}.pool"
    if start not in network:
        raise InvalidPool(
            f"{pool}.start", f"start ip address {start} is not within subnet {network} range"
        )
    if end not in network:
        raise InvalidPool(
            f"{pool}.end", f"end ip address {end} is not within subnet {network} range"
        )
    if end < start:
        raise InvalidPool(
            f"{pool}.end", f"end ip address {end} is less than start ip address {start}"
        )
    if network.prefixlen > 30:
        return
    broadcast, network_address = network.broadcast_address, network.network_address
    if end == broadcast:
        raise InvalidPool(
            f"{pool}.end", f"end ip address {end} equals broadcast ip address {broadcast}"
        )
    if start == broadcast:
        raise InvalidPool(
            f"{pool}.start", f"start ip address {start} equals broadcast ip address {broadcast}"
        )
    if start == network_address:
        raise InvalidPool(
            f"{pool}.start",
            f"start ip address {start} equals network ip address {network_address}",
        )

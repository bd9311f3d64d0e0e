"""What one agent serves, derived from one IPPool object (pure; no I/O).

The IPPool's `spec.ipv4Config` becomes one `ServerConfig` (pool-wide options) and its
`status.ipv4.allocated` becomes the lease table (MAC -> address). A new IPPool version
is a new `PoolState`, swapped in whole, so a change of DNS, domain, NTP, lease time or
router reaches every client at its next message, and a MAC change moves the lease.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Network

from vmdhcp.agent.replies import DEFAULT_CAPACITY, ReplyMemo
from vmdhcp.api.constants import MARKS
from vmdhcp.api.models import IPPool
from vmdhcp.dhcp import InvalidConfig, Lease, ServerConfig
from vmdhcp.errors import VmdhcpError
from vmdhcp.mac import InvalidMac, normalize_mac


class PoolStateError(VmdhcpError, ValueError):
    """An IPPool that cannot be served at all (the agent keeps what it served before)."""


@dataclass(frozen=True)
class PoolState:
    """An immutable snapshot: the options every client gets and the static leases."""

    config: ServerConfig
    leases: Mapping[str, Lease]
    problems: tuple[str, ...] = ()
    """Allocations that were skipped, with the reason (bad MAC, bad address, duplicates)."""
    ntp_entries: tuple[str, ...] = field(default=())
    replies: ReplyMemo = field(default_factory=ReplyMemo, compare=False, repr=False)
    """Replies computed from this state, for requests that repeat (see `ReplyMemo`)."""

    def withholding(self, macs: Collection[str]) -> PoolState:
        """This state without the leases of `macs` (each declined its address: it is not
        offered that address again), with a memo of its own (no remembered OFFER of it)."""
        if not any(mac in self.leases for mac in macs):
            return self
        leases = {mac: lease for mac, lease in self.leases.items() if mac not in macs}
        return replace(self, leases=leases, replies=ReplyMemo(self.replies.capacity))

    def describe(self) -> str:
        c = self.config
        return (
            f"server={c.server_ip} subnet={c.subnet} router={c.router} "
            f"dns={','.join(map(str, c.dns_servers)) or '-'} leases={len(self.leases)} "
            f"lease_time={c.effective_lease_time}"
        )

    def lease_dump(self) -> dict[str, str]:
        """`/leases` in upstream's shape: MAC -> JSON string of upstream's DHCPLease."""
        c = self.config
        mask = base64.b64encode(c.subnet.netmask.packed).decode("ascii")
        common = {
            "ServerIP": str(c.server_ip),
            "SubnetMask": mask,
            "Router": str(c.router) if c.router is not None else "",
            "DNS": [str(a) for a in c.dns_servers],
            "DomainName": c.domain_name or "",
            "DomainSearch": list(c.domain_search),
            "NTP": [str(a) for a in c.ntp_servers],
            "LeaseTime": c.effective_lease_time,
        }
        dump = {}
        for mac, lease in sorted(self.leases.items()):
            record = {"ServerIP": common["ServerIP"], "ClientIP": str(lease.address)}
            record.update((k, v) for k, v in common.items() if k != "ServerIP")
            dump[mac] = json.dumps(record, separators=(",", ":"))
        return dump


def _address(value: str, what: str) -> IPv4Address:
    try:
        return IPv4Address(value.strip())
    except (AddressValueError, ValueError) as exc:
        raise PoolStateError(f"{what}: {value!r} is not an IPv4 address") from exc


def ntp_hostnames(pool: IPPool) -> tuple[str, ...]:
    """NTP entries of the pool that are host names, not addresses (to resolve first)."""
    config = pool.spec.ipv4_config
    names = []
    for entry in (config.ntp if config else None) or ():
        try:
            IPv4Address(entry.strip())
        except ValueError:
            names.append(entry.strip())
    return tuple(names)


def build_state(
    pool: IPPool,
    resolved_ntp: Mapping[str, tuple[IPv4Address, ...]] | None = None,
    reply_cache_size: int = DEFAULT_CAPACITY,
    ntp_errors: Mapping[str, str] | None = None,
) -> PoolState:
    """Derive what to serve from `pool`.

    `resolved_ntp` maps NTP host names to their IPv4 addresses (resolved by the caller,
    as upstream does from the agent pod); unresolved names are dropped with a problem,
    which says why when `ntp_errors` (name -> the resolver's error) does.
    """
    config = pool.spec.ipv4_config
    if config is None:
        raise PoolStateError("spec.ipv4Config is missing")
    try:
        subnet = IPv4Network(config.cidr.strip(), strict=False)
    except ValueError as exc:
        raise PoolStateError(f"spec.ipv4Config.cidr: {config.cidr!r} is not a CIDR") from exc
    problems: list[str] = []
    ntp: list[IPv4Address] = []
    for entry in config.ntp or ():
        try:
            ntp.append(IPv4Address(entry.strip()))
        except ValueError:
            found = (resolved_ntp or {}).get(entry.strip(), ())
            if not found:
                why = (ntp_errors or {}).get(entry.strip())
                problems.append(
                    f"ntp server {entry!r} did not resolve to an IPv4 address"
                    + (f" ({why})" if why else "")
                )
            ntp.extend(found)
    try:
        server_config = ServerConfig(
            server_ip=_address(config.server_ip, "spec.ipv4Config.serverIP"),
            subnet=subnet,
            router=_address(config.router, "spec.ipv4Config.router") if config.router else None,
            dns_servers=tuple(_address(d, "spec.ipv4Config.dns") for d in config.dns or ()),
            domain_name=config.domain_name or None,
            domain_search=tuple(config.domain_search or ()),
            ntp_servers=tuple(dict.fromkeys(ntp)),
            lease_time=config.lease_time if config.lease_time and config.lease_time > 0 else None,
        )
    except InvalidConfig as exc:
        raise PoolStateError(str(exc)) from exc
    leases, lease_problems = _leases(pool)
    return PoolState(
        config=server_config,
        leases=leases,
        problems=tuple(problems + lease_problems),
        ntp_entries=tuple(config.ntp or ()),
        replies=ReplyMemo(reply_cache_size),
    )


def _leases(pool: IPPool) -> tuple[dict[str, Lease], list[str]]:
    allocated = (pool.status.ipv4.allocated if pool.status and pool.status.ipv4 else None) or {}
    leases: dict[str, Lease] = {}
    owners: dict[IPv4Address, str] = {}
    problems: list[str] = []
    claims = []
    for raw_ip, raw_mac in allocated.items():
        if raw_mac in MARKS:  # EXCLUDED, RESERVED, DECLINED: nobody's
            continue
        try:
            address = IPv4Address(raw_ip.strip())
            mac = normalize_mac(raw_mac)
        except (ValueError, InvalidMac) as exc:
            problems.append(f"allocation {raw_ip} -> {raw_mac} skipped: {exc}")
            continue
        claims.append((address, mac))
    for address, mac in sorted(claims):  # deterministic: the lowest address wins
        if mac in leases:
            problems.append(
                f"mac {mac} is allocated both {leases[mac].address} and {address}; "
                f"serving {leases[mac].address}"
            )
            continue
        if address in owners:
            problems.append(f"address {address} is allocated to {owners[address]} and {mac}")
            continue
        leases[mac] = Lease(address=address)
        owners[address] = mac
    return leases, problems

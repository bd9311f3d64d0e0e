"""What the responder serves: per-client `Lease`s and the pool-wide `ServerConfig`.

Leases carry only what differs per client (address, host name). Everything the pool says to
every client lives once in `ServerConfig`, so an IPPool change is one new `ServerConfig` and
applies to every client at once (upstream bakes pool options into each lease and never updates
them: harvester/harvester#7015).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Final

from vmdhcp.dhcp.classless_routes import StaticRoute, encode_classless_routes
from vmdhcp.dhcp.constants import DEFAULT_LEASE_TIME, INFINITE_LEASE_TIME, OptionCode
from vmdhcp.dhcp.domain_search import encode_domain_search
from vmdhcp.dhcp.errors import InvalidConfig, InvalidOption
from vmdhcp.dhcp.options import encode_ip, encode_ips, encode_text, encode_u16, encode_u32
from vmdhcp.dhcp.policy import OptionPlan, plan_options

__all__ = ["Lease", "ServerConfig"]

_MIN_MTU: Final = 68  # RFC 2132 section 5.1


@dataclass(frozen=True, slots=True)
class Lease:
    """A static reservation: the client with this MAC gets `address`."""

    address: IPv4Address
    """The address handed out (yiaddr)."""
    hostname: str | None = None
    """Sent as option 12 when set; the VM name is a good choice."""

    def __post_init__(self) -> None:
        if self.hostname is not None:
            try:
                encode_text(self.hostname)
            except InvalidOption as exc:
                raise InvalidConfig(f"lease {self.address}: host name: {exc}") from exc


@dataclass(frozen=True)
class ServerConfig:
    """Pool-wide settings, validated and encoded once at construction.

    Every option value is checked here, so a bad pool fails when the agent loads it, not on
    the first packet. `encoded` holds the wire bytes the responder copies into replies.
    """

    server_ip: IPv4Address
    """Our address: option 54 (server identifier) and the address clients SELECT us by."""
    subnet: IPv4Network
    """The served network; gives option 1 (subnet mask) and the default for option 28."""
    router: IPv4Address | None = None
    """Option 3. None sends no option 3 at all (never an empty one)."""
    dns_servers: tuple[IPv4Address, ...] = ()
    """Option 6."""
    domain_name: str | None = None
    """Option 15."""
    domain_search: tuple[str, ...] = ()
    """Option 119 (RFC 3397), compressed."""
    ntp_servers: tuple[IPv4Address, ...] = ()
    """Option 42; addresses only (resolve names before building the config)."""
    lease_time: int | None = None
    """Option 51 in seconds; None means `DEFAULT_LEASE_TIME`, one year, as upstream."""
    mtu: int | None = None
    """Option 26."""
    classless_routes: tuple[StaticRoute, ...] = ()
    """Option 121 (RFC 3442). When a router is set and no route is a default route, a
    `0.0.0.0/0 via router` route is added: RFC 3442 clients ignore option 3 once they get
    option 121, and RFC 3442 section 3 tells servers to repeat the default route in it."""
    broadcast_address: IPv4Address | None = None
    """Option 28; None derives it from `subnet` (and sends none for /31 and /32)."""
    next_server: IPv4Address | None = None
    """`siaddr` of OFFER and ACK (RFC 2131: the next boot server). None writes 0.0.0.0: we
    serve no boot files, and option 54, not siaddr, identifies the server."""

    # Derived in __post_init__, not arguments (plain attributes: read on every packet).
    encoded: Mapping[int, bytes] = field(init=False, repr=False, compare=False)
    """Wire value of every option this pool sends, by code (51, 58 and 59 included)."""
    plan: OptionPlan = field(init=False, repr=False, compare=False)
    """The same options, split, ordered and sized for the responder (`vmdhcp.dhcp.policy`)."""
    server_id: bytes = field(init=False, repr=False, compare=False)
    """Option 54 as on the wire, to compare with a client's option 54 without decoding it."""
    not_relays: frozenset[IPv4Address] = field(init=False, repr=False, compare=False)
    """Addresses of the subnet no relay agent can have (giaddr): its network and broadcast
    addresses, and this server's."""

    def __post_init__(self) -> None:
        try:
            encoded = self._encode()
        except InvalidOption as exc:
            raise InvalidConfig(f"pool option cannot be encoded: {exc}") from exc
        # A frozen dataclass sets its derived fields through object.__setattr__.
        object.__setattr__(self, "encoded", MappingProxyType(encoded))
        object.__setattr__(self, "plan", plan_options(encoded))
        object.__setattr__(self, "server_id", encoded[OptionCode.SERVER_IDENTIFIER])
        reserved = {self.server_ip}
        if self.subnet.prefixlen < 31:
            reserved |= {self.subnet.network_address, self.subnet.broadcast_address}
        object.__setattr__(self, "not_relays", frozenset(reserved))

    @property
    def effective_lease_time(self) -> int:
        """`lease_time`, or `DEFAULT_LEASE_TIME` when the pool sets none."""
        return DEFAULT_LEASE_TIME if self.lease_time is None else self.lease_time

    def _encode(self) -> dict[int, bytes]:
        lease = self.effective_lease_time
        if not 0 < lease <= INFINITE_LEASE_TIME:
            raise InvalidConfig(f"lease time {lease} is not in 1..{INFINITE_LEASE_TIME}")
        if self.mtu is not None and not _MIN_MTU <= self.mtu <= 0xFFFF:
            raise InvalidConfig(f"MTU {self.mtu} is not in {_MIN_MTU}..65535")
        out: dict[int, bytes] = {
            OptionCode.SERVER_IDENTIFIER: encode_ip(self.server_ip),
            OptionCode.LEASE_TIME: encode_u32(lease),
            OptionCode.SUBNET_MASK: encode_ip(self.subnet.netmask),
        }
        if lease != INFINITE_LEASE_TIME:
            # RFC 2131 section 4.4.5 defaults; an infinite lease is never renewed.
            out[OptionCode.RENEWAL_TIME] = encode_u32(lease // 2)
            out[OptionCode.REBINDING_TIME] = encode_u32(lease * 7 // 8)
        if self.router is not None:
            out[OptionCode.ROUTER] = encode_ip(self.router)
        if self.dns_servers:
            out[OptionCode.DOMAIN_NAME_SERVER] = encode_ips(self.dns_servers)
        if self.domain_name:
            out[OptionCode.DOMAIN_NAME] = encode_text(self.domain_name)
        if self.domain_search:
            out[OptionCode.DOMAIN_SEARCH] = encode_domain_search(self.domain_search)
        if self.ntp_servers:
            out[OptionCode.NTP_SERVERS] = encode_ips(self.ntp_servers)
        if self.mtu is not None:
            out[OptionCode.INTERFACE_MTU] = encode_u16(self.mtu)
        broadcast = self.broadcast_address
        if broadcast is None and self.subnet.prefixlen < 31:
            broadcast = self.subnet.broadcast_address
        if broadcast is not None:
            out[OptionCode.BROADCAST_ADDRESS] = encode_ip(broadcast)
        if self.classless_routes:
            routes = self.classless_routes
            if self.router is not None and not any(r.destination.prefixlen == 0 for r in routes):
                routes = (*routes, StaticRoute(IPv4Network("0.0.0.0/0"), self.router))
            out[OptionCode.CLASSLESS_STATIC_ROUTE] = encode_classless_routes(routes)
        return out

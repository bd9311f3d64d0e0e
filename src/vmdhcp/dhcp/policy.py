"""Which pool options go into which reply, and which give way first when a reply is too big.

`plan_options` turns a pool's encoded options into an `OptionPlan` once, when the
`ServerConfig` is built, so the per-packet work is a dict copy and a short loop.
"""

from collections.abc import Mapping
from typing import Final, NamedTuple

from vmdhcp.dhcp.constants import BOOTP_HEADER_SIZE, MAGIC_COOKIE, OptionCode
from vmdhcp.dhcp.options import encoded_size

__all__ = [
    "ALWAYS_SENT",
    "FROM_LEASE",
    "NOT_IN_INFORM",
    "OPTIONAL_BY_PRIORITY",
    "REPLY_FIXED_SIZE",
    "OptionPlan",
    "plan_options",
]

ALWAYS_SENT: Final[tuple[int, ...]] = tuple(
    int(code)
    for code in (
        OptionCode.SERVER_IDENTIFIER,
        OptionCode.LEASE_TIME,
        OptionCode.RENEWAL_TIME,
        OptionCode.REBINDING_TIME,
        OptionCode.SUBNET_MASK,
        OptionCode.ROUTER,
        OptionCode.DOMAIN_NAME_SERVER,
        OptionCode.DOMAIN_NAME,
    )
)
"""Pool options every OFFER and ACK carries when configured, whether the client's parameter
request list names them or not (Kea and dnsmasq do the same for 1, 3, 6, 15, 51, 54)."""

NOT_IN_INFORM: Final = frozenset(
    int(code)
    for code in (OptionCode.LEASE_TIME, OptionCode.RENEWAL_TIME, OptionCode.REBINDING_TIME)
)
"""An ACK to DHCPINFORM carries no lease time, T1 or T2 (RFC 2131 sections 3.4 and 4.3.5)."""

OPTIONAL_BY_PRIORITY: Final[tuple[int, ...]] = tuple(
    int(code)
    for code in (
        OptionCode.CLASSLESS_STATIC_ROUTE,
        OptionCode.INTERFACE_MTU,
        OptionCode.HOST_NAME,
        OptionCode.BROADCAST_ADDRESS,
        OptionCode.DOMAIN_SEARCH,
        OptionCode.NTP_SERVERS,
    )
)
"""Options sent when configured and requested in option 55 (all of them when the client sends
no option 55), most important first: when the reply would exceed the client's maximum message
size, options are left out from the end of this list."""

FROM_LEASE: Final = int(OptionCode.HOST_NAME)
"""The one optional option whose value comes from the lease, not the pool."""

REPLY_FIXED_SIZE: Final = BOOTP_HEADER_SIZE + len(MAGIC_COOKIE) + 3 + 1
"""Header, cookie, option 53 (3 bytes) and End: what every reply has besides its options."""


class OptionPlan(NamedTuple):
    """A pool's reply options, encoded and sized once."""

    lease: Mapping[int, bytes]
    """`ALWAYS_SENT` options of OFFER and ACK, in that order (option 53 excluded)."""
    lease_size: int
    """`REPLY_FIXED_SIZE` plus the wire size of `lease`."""
    inform: Mapping[int, bytes]
    """The same for an ACK to DHCPINFORM."""
    inform_size: int
    optional: tuple[tuple[int, bytes, int], ...]
    """(code, value, wire size) in `OPTIONAL_BY_PRIORITY` order; the host name entry has an
    empty value and size 0: the responder takes it from the lease."""


def plan_options(encoded: Mapping[int, bytes]) -> OptionPlan:
    lease = {code: encoded[code] for code in ALWAYS_SENT if code in encoded}
    inform = {code: value for code, value in lease.items() if code not in NOT_IN_INFORM}
    optional = tuple(
        (code, encoded[code], encoded_size(encoded[code])) if code != FROM_LEASE else (code, b"", 0)
        for code in OPTIONAL_BY_PRIORITY
        if code in encoded or code == FROM_LEASE
    )
    return OptionPlan(
        lease=lease,
        lease_size=REPLY_FIXED_SIZE + sum(encoded_size(value) for value in lease.values()),
        inform=inform,
        inform_size=REPLY_FIXED_SIZE + sum(encoded_size(value) for value in inform.values()),
        optional=optional,
    )

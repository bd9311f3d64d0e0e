"""Option 121, classless static routes (RFC 3442).

Each route is the prefix length, the significant octets of the destination
(`ceil(width / 8)` of them) and the 4-byte router: `10.17.0.0/16 via 10.0.0.1` is
`16 10 17 10 0 0 1`.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from vmdhcp.dhcp.constants import OptionCode
from vmdhcp.dhcp.errors import InvalidOption, MalformedOption

__all__ = ["StaticRoute", "decode_classless_routes", "encode_classless_routes"]

_CODE = OptionCode.CLASSLESS_STATIC_ROUTE


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """A route the client installs: `destination` via `router` (0.0.0.0 = on-link)."""

    destination: IPv4Network
    router: IPv4Address


def encode_classless_routes(routes: Iterable[StaticRoute]) -> bytes:
    out = bytearray()
    for route in routes:
        width = route.destination.prefixlen
        out.append(width)
        out += route.destination.network_address.packed[: (width + 7) // 8]
        out += route.router.packed
    if not out:
        raise InvalidOption("a classless static route option needs at least one route")
    return bytes(out)


def decode_classless_routes(value: bytes) -> tuple[StaticRoute, ...]:
    """The routes of an option 121 value. Destination bits beyond the prefix length are
    cleared, as RFC 3442 clients do. A width above 32 or a truncated route is malformed.
    """
    if not value:
        raise MalformedOption(_CODE, "empty classless static route list")
    routes: list[StaticRoute] = []
    pos, end = 0, len(value)
    while pos < end:
        width = value[pos]
        if width > 32:
            raise MalformedOption(_CODE, f"prefix length {width} at offset {pos}")
        significant = (width + 7) // 8
        stop = pos + 1 + significant + 4
        if stop > end:
            raise MalformedOption(_CODE, f"route at offset {pos} is truncated")
        prefix = value[pos + 1 : pos + 1 + significant].ljust(4, b"\x00")
        destination = IPv4Network((IPv4Address(prefix), width), strict=False)
        routes.append(StaticRoute(destination, IPv4Address(value[stop - 4 : stop])))
        pos = stop
    return tuple(routes)

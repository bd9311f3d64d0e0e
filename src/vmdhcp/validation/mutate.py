"""Defaults for a new IPPool: the server IP and the pool range, as upstream fills them in.

It works on the raw body, because defaulting runs before the API server checks the
schema: the fields it fills in may be missing, empty or wrong. Unlike upstream it answers
with JSON-patch `add` operations (valid whether the key exists or not; upstream's
`replace` of an absent key only works on lenient patch implementations) and refuses a
malformed start, end or server IP instead of silently replacing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from vmdhcp.api.constants import IPPOOL_KIND
from vmdhcp.validation.addresses import AddressError, parse_addr, parse_cidr
from vmdhcp.validation.errors import Operation, ValidationError

JsonPatchOp = dict[str, Any]

SERVER_IP_PATH = "/spec/ipv4Config/serverIP"
POOL_PATH = "/spec/ipv4Config/pool"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    """A field as text: absent, null or a non-string counts as empty (the schema check,
    which runs after defaulting, refuses wrong types)."""
    return value if isinstance(value, str) else ""


def _given(text: str) -> IPv4Address | None:
    """None when empty (to be defaulted); the address; AddressError when malformed."""
    return parse_addr(text) if text else None


def ippool_defaults(body: Mapping[str, Any]) -> list[JsonPatchOp]:
    """The JSON-patch operations that fill in a new IPPool; raises AddressError or
    ValueError with upstream's reason (`fail to assign ip for dhcp server`, `invalid pool
    range`, an address parse error)."""
    config = _mapping(_mapping(body.get("spec")).get("ipv4Config"))
    network = parse_cidr(_text(config.get("cidr")))
    pool = config.get("pool")
    pool_fields = _mapping(pool)

    # ensureServerIP: the lowest address that is not the router or excluded.
    server = _given(_text(config.get("serverIP")))
    try:
        router: IPv4Address | None = parse_addr(_text(config.get("router")))
    except AddressError:
        router = None  # upstream ignores it here; the validator reports it
    excludes = pool_fields.get("exclude")
    masked = {router} if router is not None else set()
    for entry in excludes if isinstance(excludes, list) else ():
        masked.add(parse_addr(_text(entry)))
    default_server: IPv4Address | None = None
    if server is None:
        # from network+1 up to, not including, the broadcast address (none on /31 and /32)
        for number in range(int(network.network_address) + 1, int(network.broadcast_address)):
            if IPv4Address(number) not in masked:
                default_server = IPv4Address(number)
                break
        if default_server is None:
            raise ValueError("fail to assign ip for dhcp server")

    # ensurePoolRange: the whole subnet between the network and broadcast addresses.
    start = _given(_text(pool_fields.get("start")))
    end = _given(_text(pool_fields.get("end")))
    first = int(network.network_address) + 1 if start is None else int(start)
    last = int(network.broadcast_address) - 1 if end is None else int(end)
    if first > last and (start is None or end is None):
        # an inverted range the user wrote in full is the validator's to report, with
        # every other problem of the pool; one the defaults produce is refused here
        raise ValueError("invalid pool range")
    new_start = IPv4Address(first) if start is None else None
    new_end = IPv4Address(last) if end is None else None

    ops: list[JsonPatchOp] = []
    if not isinstance(pool, Mapping):
        value = {"start": str(IPv4Address(first)), "end": str(IPv4Address(last))}
        ops.append({"op": "add", "path": POOL_PATH, "value": value})
    else:
        if new_start is not None:
            ops.append({"op": "add", "path": f"{POOL_PATH}/start", "value": str(new_start)})
        if new_end is not None:
            ops.append({"op": "add", "path": f"{POOL_PATH}/end", "value": str(new_end)})
    if default_server is not None:
        ops.append({"op": "add", "path": SERVER_IP_PATH, "value": str(default_server)})
    return ops


def mutate_ippool_create(body: Mapping[str, Any]) -> list[JsonPatchOp]:
    """`ippool_defaults`, with a refusal worded as upstream's: `cannot create IPPool
    ns/name because ...` (a ValidationError)."""
    try:
        return ippool_defaults(body)
    except ValueError as exc:  # AddressError is a ValueError
        meta = _mapping(body.get("metadata"))
        raise ValidationError(
            Operation.CREATE,
            IPPOOL_KIND,
            _text(meta.get("namespace")),
            _text(meta.get("name")),
            [str(exc)],
        ) from None

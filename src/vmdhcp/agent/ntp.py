"""NTP entries that are host names, resolved from the agent (as upstream does), with a
cache: answers for `ttl` seconds, failures for `failure_ttl` (then asked again)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from ipaddress import IPv4Address

log = logging.getLogger("vmdhcp.agent")

Cache = dict[str, tuple[float, tuple[IPv4Address, ...]]]
"""Host name -> (monotonic expiry, its addresses)."""


async def resolve_ntp(
    names: tuple[str, ...],
    cache: Cache,
    errors: dict[str, str],
    *,
    ttl: float,
    failure_ttl: float,
    resolve_seconds: float,
) -> dict[str, tuple[IPv4Address, ...]]:
    """The IPv4 addresses of each name (none for one that does not resolve; `errors` then
    says why, for the pool's problems)."""
    loop = asyncio.get_running_loop()
    now = time.monotonic()
    out: dict[str, tuple[IPv4Address, ...]] = {}
    for name in names:
        cached = cache.get(name)
        if cached is not None and cached[0] > now:
            out[name] = cached[1]
            continue
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_DGRAM),
                resolve_seconds,
            )
            addresses = tuple(sorted({IPv4Address(info[4][0]) for info in infos}))
            expires = now + ttl
            errors.pop(name, None)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: IDNA, ".."
            # warned about once, as a problem of the pool (see `Agent._log_problems`)
            errors[name] = str(exc) or "timeout"
            log.debug("ntp server %r does not resolve: %s", name, errors[name])
            addresses, expires = (), now + failure_ttl
        cache[name] = (expires, addresses)
        out[name] = addresses
    return out

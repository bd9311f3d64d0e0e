"""/readyz waits for the HTTPS port too: kopf binds it after the caches are filled, and a
pod Ready before it would let a rolling update retire the old webhook too soon."""

from __future__ import annotations

import socket

from vmdhcp.webhook.health import accepts


async def test_a_port_counts_only_once_something_listens_on_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        assert not await accepts(port)  # bound, not listening: refused
        probe.listen()
        assert await accepts(port)

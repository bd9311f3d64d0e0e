"""/healthz and /readyz over plain HTTP (`--http-port`), for the kubelet's probes.

/readyz answers 200 only once every cache has its first listing, no watch has been failing
for longer than `--max-stale-seconds`, and the HTTPS port accepts connections (kopf binds
it after the caches are filled: ready before that, a rolling update would retire the old
pod while the API server's calls to this one are refused); otherwise 503 with the reason, so the
Service never sends the API server to a webhook that would answer from an empty or lost
picture of the cluster. /healthz answers 200 while the process serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from vmdhcp.webhook.caches import Caches
from vmdhcp.webhook.config import WebhookConfig

logger = logging.getLogger(__name__)


async def accepts(port: int) -> bool:
    """Something listens on 127.0.0.1:`port` (answered within a second)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def build_app(caches: Caches, max_stale: float, https_port: int) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        problem = caches.problem(max_stale)
        sizes = json.dumps(caches.sizes())
        if problem is None and not await accepts(https_port):
            problem = f"not serving admission reviews on port {https_port} yet"
        if problem is not None:
            return web.Response(status=503, text=f"not ready: {problem}\n")
        return web.Response(text=f"ready: {sizes}\n")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


@asynccontextmanager
async def serving(config: WebhookConfig, caches: Caches) -> AsyncIterator[None]:
    """Serve the probes while inside (nothing when `--http-port` is 0)."""
    if not config.http_port:
        yield
        return
    runner = web.AppRunner(build_app(caches, config.max_stale, config.https_port), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.http_address, config.http_port).start()
        logger.info("Serving /healthz and /readyz on port %d", config.http_port)
        yield
    finally:
        await runner.cleanup()

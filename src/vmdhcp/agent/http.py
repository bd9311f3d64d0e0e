"""The agent's HTTP endpoints: /healthz, /readyz, /metrics and (opt-in) /leases."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from vmdhcp.agent.metrics import AgentMetrics


class AgentView(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str: ...

    def lease_dump(self) -> dict[str, str]: ...


AGENT = web.AppKey("agent", AgentView)
METRICS = web.AppKey("metrics", AgentMetrics)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    if agent.ready:
        return web.json_response({"ok": True})
    return web.json_response({"ok": False, "reason": agent.not_ready_reason}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def leases(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT].lease_dump())


def make_app(agent: AgentView, agent_metrics: AgentMetrics, cache_dump: bool) -> web.Application:
    app = web.Application()
    app[AGENT] = agent
    app[METRICS] = agent_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if cache_dump:
        app.router.add_get("/leases", leases)
    return app

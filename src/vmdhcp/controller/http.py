"""The controller's HTTP endpoints: /healthz, /readyz, /metrics, and (opt-in) upstream's
cache dumps /ipams/<network-namespace>/<network-name> and /caches/<...>.

A network no pool serves is a 404 with `{"error": "<upstream's message>"}` (upstream
answers 500 with the bare message)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from vmdhcp.controller.engine import Controller
from vmdhcp.controller.metrics import ControllerMetrics

CONTROLLER = web.AppKey("controller", Controller)
METRICS = web.AppKey("metrics", ControllerMetrics)
READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY]():
        return web.json_response({"ok": True})
    return web.json_response({"ok": False}, status=503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _unknown(what: str, network: str) -> web.Response:
    message = f"failed to list {what} of {network}: network {network} does not exist"
    return web.json_response({"error": message}, status=404)


async def ipams(request: web.Request) -> web.Response:
    network = request.match_info["network"]
    dump = request.app[CONTROLLER].ipam_dump(network)
    if dump is None:
        return _unknown("ipam", network)
    return web.json_response(dump)


async def caches(request: web.Request) -> web.Response:
    network = request.match_info["network"]
    dump = request.app[CONTROLLER].cache_dump(network)
    if dump is None:
        return _unknown("cache", network)
    return web.json_response(dump)


def make_app(
    controller: Controller, ready: Callable[[], bool], cache_dump: bool
) -> web.Application:
    app = web.Application()
    app[CONTROLLER] = controller
    app[METRICS] = controller.metrics
    app[READY] = ready
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if cache_dump:
        app.router.add_get("/ipams/{network:.*}", ipams)
        app.router.add_get("/caches/{network:.*}", caches)
    return app

"""The agent's HTTP endpoints: /healthz, /readyz, /metrics and (opt-in) /leases.

Served by the standard library's threading HTTP server on threads of its own. The agent
answers four GET paths for probes, scrapes and operators; importing aiohttp for that cost
11 MB of the 60 MB the agent may use with 10,000 leases (the controller and the webhook,
which need more of HTTP, keep aiohttp).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from vmdhcp.agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
REQUEST_TIMEOUT = 10.0
"""An idle or slow connection is closed after this many seconds."""
MAX_CONNECTIONS = 32
"""Connections served at once (a thread each); more are closed at once, so that a flood of
idle connections cannot pile up threads that compete with the packet thread."""


Route = Callable[[], tuple[HTTPStatus, str, bytes]]
"""A view: (status, content type, body)."""


class AgentView(Protocol):
    @property
    def health_problem(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def not_ready_reason(self) -> str: ...

    def lease_dump(self) -> dict[str, str]: ...


class HttpServer:
    """Listens on `host`:`port` once constructed (OSError if it cannot); `start()` serves."""

    def __init__(
        self, host: str, port: int, agent: AgentView, metrics: AgentMetrics, cache_dump: bool
    ) -> None:
        routes: dict[str, Route] = {
            "/healthz": lambda: _healthz(agent),
            "/readyz": lambda: _readyz(agent),
            "/metrics": lambda: (HTTPStatus.OK, CONTENT_TYPE_LATEST, metrics.render()),
        }
        if cache_dump:
            routes["/leases"] = lambda: (HTTPStatus.OK, JSON, _json(agent.lease_dump()))
        handler = type("AgentRequestHandler", (_Handler,), {"routes": routes})
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", kwargs={"poll_interval": 0.25}
        )
        self._thread.daemon = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=2)
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the listen backlog (5 by default drops SYNs of a burst)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _healthz(agent: AgentView) -> tuple[HTTPStatus, str, bytes]:
    problem = agent.health_problem
    if not problem:
        return HTTPStatus.OK, JSON, _json({"ok": True})
    return HTTPStatus.SERVICE_UNAVAILABLE, JSON, _json({"ok": False, "reason": problem})


def _readyz(agent: AgentView) -> tuple[HTTPStatus, str, bytes]:
    if agent.ready:
        return HTTPStatus.OK, JSON, _json({"ok": True})
    body = _json({"ok": False, "reason": agent.not_ready_reason})
    return HTTPStatus.SERVICE_UNAVAILABLE, JSON, body


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[Mapping[str, Route]] = {}
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, content_type = HTTPStatus.NOT_FOUND, JSON
            payload = _json({"error": "not found"})
        else:
            try:
                status, content_type, payload = route()
            except Exception:  # one broken view must not take the endpoint down
                log.exception("internal error serving %s", self.path)
                status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, JSON
                payload = _json({"error": "internal error"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes and scrapes would flood it."""

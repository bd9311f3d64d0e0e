"""Kubernetes Events about the objects the controller manages: best effort, fire and
forget, at most one per object, reason and message every five minutes (bodies and the
limit are `vmdhcp.events`', shared with the agent)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from vmdhcp.api import GROUP, VERSION
from vmdhcp.errors import ApiError
from vmdhcp.events import RepeatFilter, event_body
from vmdhcp.k8s import Kube

log = logging.getLogger("vmdhcp.controller")

Body = dict[str, Any]
REPEAT_SECONDS = 300.0


class EventRecorder:
    def __init__(self, kube: Kube, component: str = "vm-dhcp-controller") -> None:
        self.kube = kube
        self.component = component
        self._tasks: set[asyncio.Task[None]] = set()
        self._repeats = RepeatFilter(REPEAT_SECONDS)
        self._last_failure = -3600.0

    def post(self, body: Body, kind: str, reason: str, message: str, warning: bool = False) -> None:
        meta: dict[str, Any] = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
        if not self._repeats.allow((kind, namespace, name, reason, message)):
            return
        event = event_body(
            api_version=body.get("apiVersion") or f"{GROUP}/{VERSION}",
            kind=kind,
            namespace=namespace,
            name=name,
            uid=meta.get("uid"),
            reason=reason,
            message=message,
            warning=warning,
            component=self.component,
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send(namespace, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, event: Body) -> None:
        try:
            await self.kube.create_event(namespace, event)
        except ApiError as exc:
            now = time.monotonic()
            if now - self._last_failure > 60:  # a refused Event must be visible, not noisy
                self._last_failure = now
                log.warning("cannot post event %s: %s", event["reason"], exc)

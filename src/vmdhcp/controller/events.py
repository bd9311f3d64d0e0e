"""Kubernetes Events about the objects the controller manages: best effort, fire and
forget, at most one per object, reason and message every five minutes."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from vmdhcp.api import GROUP, VERSION
from vmdhcp.errors import ApiError
from vmdhcp.k8s import Kube

log = logging.getLogger("vmdhcp.controller")

Body = dict[str, Any]
REPEAT_SECONDS = 300.0
MEMORY = 10_000


class EventRecorder:
    def __init__(self, kube: Kube, component: str = "vm-dhcp-controller") -> None:
        self.kube = kube
        self.component = component
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[tuple[str, str, str, str], float] = {}
        self._last_failure = -3600.0

    def post(self, body: Body, kind: str, reason: str, message: str, warning: bool = False) -> None:
        meta: dict[str, Any] = body.get("metadata") or {}
        key = (kind, meta.get("namespace", ""), meta.get("name", ""), reason + message)
        now = time.monotonic()
        if now - self._recent.get(key, -3600.0) < REPEAT_SECONDS:
            return
        if len(self._recent) > MEMORY:  # messages carry addresses: bound the memory
            self._recent = {k: t for k, t in self._recent.items() if now - t < REPEAT_SECONDS}
        self._recent[key] = now
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion") or f"{GROUP}/{VERSION}",
                "kind": kind,
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send(meta.get("namespace") or "default", event))
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

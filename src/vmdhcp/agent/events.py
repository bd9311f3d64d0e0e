"""Kubernetes Events on the IPPool for what only the agent sees on the wire: a DECLINE
(another host answers ARP for the address: a conflict) and a RELEASE."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from vmdhcp.agent.kubeapi import Connection
from vmdhcp.api import API_VERSION
from vmdhcp.dhcp import Declined, Event, Released

log = logging.getLogger(__name__)


class EventPoster:
    """Posts core/v1 Events about one IPPool, at most one per (reason, MAC) a minute."""

    def __init__(self, api: Connection, namespace: str, name: str, component: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.component = component
        self.uid: str | None = None
        self._last: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: Event) -> None:
        if isinstance(event, Declined):
            reason, kind = "AddressDeclined", "Warning"
            message = (
                f"client {event.mac} declined {event.address}: the address is already in use "
                "on the network (DHCPDECLINE)"
            )
        else:
            assert isinstance(event, Released)
            reason, kind = "AddressReleased", "Normal"
            message = f"client {event.mac} released {event.address} (DHCPRELEASE)"
        key = (reason, event.mac)
        now = time.monotonic()
        if now - self._last.get(key, -3600.0) < 60:
            return
        self._last[key] = now
        task = asyncio.create_task(asyncio.to_thread(self._create, reason, kind, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _create(self, reason: str, kind: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "IPPool",
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
        }
        try:
            self.api.request("POST", f"/api/v1/namespaces/{self.namespace}/events", body=body)
        except Exception as exc:  # an Event is best effort; the log line already exists
            log.warning(
                "cannot post event %s on ippool %s/%s: %s",
                reason,
                self.namespace,
                self.name,
                str(exc).splitlines()[0] if str(exc) else exc,
            )

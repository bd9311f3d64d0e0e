"""Kubernetes Events on the IPPool for what only the agent sees on the wire: a DECLINE
(another host answers ARP for the address: a conflict), a RELEASE, and another DHCP server
answering on the pool's network (`RogueDHCPServer`)."""

from __future__ import annotations

import asyncio
import logging

from vmdhcp.agent.kubeapi import Connection
from vmdhcp.agent.rogue import RogueServer
from vmdhcp.api import API_VERSION
from vmdhcp.dhcp import Declined, Event, Released
from vmdhcp.events import RepeatFilter, event_body

log = logging.getLogger(__name__)

ROGUE_EVENT_SECONDS = 600.0
"""A foreign server still there is posted again at most this often (Events expire after an
hour; the condition and the metrics say it the whole time)."""


class EventPoster:
    """Posts core/v1 Events about one IPPool, at most one per (reason, MAC) a minute."""

    def __init__(self, api: Connection, namespace: str, name: str, component: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.component = component
        self.uid: str | None = None
        self._repeats = RepeatFilter(60.0)
        self._rogue_repeats = RepeatFilter(ROGUE_EVENT_SECONDS)
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
        if not self._repeats.allow((reason, event.mac)):
            return
        self._send(reason, kind, message)

    def post_rogue(self, server: RogueServer, present: bool) -> None:
        """Another DHCP server answers on the network (Warning `RogueDHCPServer`, at most
        once per server every ROGUE_EVENT_SECONDS), or is no longer seen (Normal
        `RogueDHCPServerGone`, as rarely)."""
        if not self._rogue_repeats.allow((present, server)):
            return
        if present:
            self._send(
                "RogueDHCPServer",
                "Warning",
                f"another DHCP server answers on this network: server identifier "
                f"{server.server_id}, MAC {server.mac}; VMs may take their addresses from it",
            )
        else:
            self._send(
                "RogueDHCPServerGone",
                "Normal",
                f"DHCP server {server.server_id} (MAC {server.mac}) no longer answers on this "
                "network",
            )

    def _send(self, reason: str, kind: str, message: str) -> None:
        task = asyncio.create_task(asyncio.to_thread(self._create, reason, kind, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _create(self, reason: str, kind: str, message: str) -> None:
        body = event_body(
            api_version=API_VERSION,
            kind="IPPool",
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            reason=reason,
            message=message,
            warning=kind == "Warning",
            component=self.component,
        )
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

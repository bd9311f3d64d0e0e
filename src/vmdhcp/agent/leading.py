"""Replicas of one pool's agent, exactly one serving (`--leader-election`).

Every replica loads the pool and keeps it hot; they contend for the Lease
`agent_lease_name(pool)` in their namespace with the control plane's election (skew-proof:
`vmdhcp.election`). The leader puts the pool's serverIP/prefix on the NIC, announces it,
and answers; a standby holds no address and answers nothing. The packet path asks the
elector for every request, so a leader that could not renew stops answering at its renew
deadline, and it removes the address then, before the Lease can pass (lease duration >
renew deadline): two agents never serve at once. SIGTERM releases the Lease at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from ipaddress import IPv4Interface

from vmdhcp.agent.kubeapi import Connection, LeaseApi
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.takeover import ServerAddress
from vmdhcp.agent.transport import interface_mac
from vmdhcp.api.constants import agent_lease_name
from vmdhcp.dhcp.leases import ServerConfig
from vmdhcp.election import LeaderElector
from vmdhcp.watching import list_then_watch

log = logging.getLogger("vmdhcp.agent")

LEASE_WATCH_SECONDS = 300


class Leadership:
    def __init__(
        self,
        nic: str,
        namespace: str,
        identity: str,
        pool: tuple[str, str],
        metrics: AgentMetrics,
        *,
        dry_run: bool = False,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.nic = nic
        self.namespace = namespace
        self.identity = identity
        self.lease = agent_lease_name(*pool)
        self.metrics = metrics
        self.dry_run = dry_run
        self.timings = (lease_duration, renew_deadline, retry_period)
        self.address = ServerAddress(nic)
        self.elector: LeaderElector | None = None
        self.config: ServerConfig | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        metrics.leader.set(0)

    def serving(self) -> bool:
        """Asked for every request: only a leader within its renew deadline answers."""
        return self.elector is not None and self.elector.is_leader()

    def start(self, connection: Connection) -> None:
        lease_duration, renew_deadline, retry_period = self.timings
        self.elector = LeaderElector(
            LeaseApi(connection),
            self.namespace,
            self.lease,
            self.identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )
        self._task = asyncio.create_task(
            self.elector.run(self._started, self._stopped), name="leadership"
        )
        loop = asyncio.get_running_loop()
        elector = self.elector
        self._watch = threading.Thread(
            target=self._watch_lease,
            args=(connection, lambda: loop.call_soon_threadsafe(elector.nudge)),
            name="lease-watch",
            daemon=True,
        )
        self._watch.start()

    def _watch_lease(self, connection: Connection, nudge: Callable[[], object]) -> None:
        """Every change of the Lease wakes the elector (a released Lease is taken at once,
        not at the next retry); reads only, by a watch."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        query = {"fieldSelector": f"metadata.name={self.lease}"}
        list_then_watch(
            lambda: connection.request("GET", path, query, timeout=15),
            lambda version: connection.watch(
                path, {**query, "resourceVersion": version}, LEASE_WATCH_SECONDS
            ),
            on_list=lambda listing, first: _ignore(nudge()),
            on_event=lambda kind, body: _ignore(nudge()),
            on_failure=lambda reason, retry_in: log.debug("lease watch: %s", reason),
            stop=self._stopping,
        )

    async def stop(self) -> None:
        """Stop answering, drop the address, release the Lease (SIGTERM)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def pool_changed(self, config: ServerConfig) -> None:
        """A new pool version: a leader follows a changed serverIP or subnet. A standby
        makes sure it does not hold the address (left by a killed process of its pod)."""
        self.config = config
        if self.serving():
            await self._hold()
        elif not self.dry_run and self.address.held is None:
            await self.address.clear(self._interface())

    async def _started(self) -> None:
        log.info("leading ippool agents (lease %s/%s): serving", self.namespace, self.lease)
        self.metrics.leader.set(1)
        self.metrics.leader_transitions.inc()
        await self._hold()

    async def _stopped(self) -> None:
        log.warning("no longer leading (lease %s/%s): not serving", self.namespace, self.lease)
        self.metrics.leader.set(0)
        self.metrics.leader_transitions.inc()
        if not self.dry_run:
            await self.address.drop()

    def _interface(self) -> IPv4Interface:
        assert self.config is not None
        return IPv4Interface(f"{self.config.server_ip}/{self.config.subnet.prefixlen}")

    async def _hold(self) -> None:
        if self.dry_run or self.config is None:
            return
        interface = self._interface()
        try:
            mac: bytes | None = interface_mac(self.nic)
        except OSError:
            mac = None
        await self.address.hold(interface, mac)


def _ignore(_: object) -> None:
    return None

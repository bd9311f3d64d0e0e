"""Replicas of one pool's agent, exactly one serving (`--leader-election`).

Every replica loads the pool and keeps it hot; they contend for the Lease
`agent_lease_name(pool)` in their namespace with the control plane's election (skew-proof:
`vmdhcp.election`). The leader puts the pool's serverIP/prefix on the NIC, announces it,
and answers; a standby holds no address and answers nothing. The packet path asks for
every request (`serving`): only a leader within its renew deadline that holds the address
answers. One lock orders every change of the address, and a keeper brings the NIC in line
with leadership every second, giving the address a lifetime that ends with this leader's
renew deadline (the kernel removes it then, even if this process is frozen): a leader that
could not renew stops answering and loses the address at its deadline, before the Lease can
pass (lease duration > renew deadline), so two agents never serve at once. A leader that
cannot put the address on its NIC fails its /healthz (the kubelet restarts it, and SIGTERM
hands the Lease over). SIGTERM drops the address, then releases the Lease.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from ipaddress import IPv4Interface
from typing import Any

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
KEEP_SECONDS = 1.0
HOLD_ATTEMPTS = 3
"""A leader that failed to put the address on its NIC this many times in a row is unwell."""
LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 12.0, 8.0, 2.0
"""The agents' election: a dead leader's successor serves within about 12 s of its last
renewal; renewals every 2 s are 0.5 Lease writes per pool per second."""


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
        lease_duration: float = LEASE_SECONDS,
        renew_deadline: float = RENEW_DEADLINE_SECONDS,
        retry_period: float = RETRY_SECONDS,
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
        self.problem = ""
        """Why this replica cannot take part any more (its /healthz then fails)."""
        self._lock = asyncio.Lock()
        self._cleared = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = threading.Event()
        metrics.leader.set(0)

    def serving(self) -> bool:
        """Asked for every request: a leader within its renew deadline, with its address."""
        elector = self.elector
        return (
            elector is not None
            and elector.is_leader()
            and (self.dry_run or self.address.held is not None)
        )

    def start(self, connection: Connection) -> None:
        lease_duration, renew_deadline, retry_period = self.timings
        elector = self.elector = LeaderElector(
            LeaseApi(connection),
            self.namespace,
            self.lease,
            self.identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )
        election = asyncio.create_task(elector.run(self._started, self._stopped), name="election")
        election.add_done_callback(self._ended)
        self._tasks = [election, asyncio.create_task(self._keep(), name="address-keeper")]
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._watch_lease, args=(connection, loop), name="lease-watch", daemon=True
        ).start()

    async def stop(self) -> None:
        """SIGTERM: stop answering and drop the address, then release the Lease."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            await self.address.drop()
            if self.config is not None and not self.dry_run:
                await self.address.clear(self._interface(self.config))

    async def pool_changed(self, config: ServerConfig) -> None:
        """A new pool version: a leader follows a changed serverIP or subnet."""
        self.config = config
        await self._converge()

    # -- keeping the address in line with leadership -----------------------------------------

    async def _started(self) -> None:
        log.info("leading ippool agents (lease %s/%s): serving", self.namespace, self.lease)
        self.metrics.leader.set(1)
        self.metrics.leader_transitions.inc()
        await self._converge()

    async def _stopped(self) -> None:
        log.warning("no longer leading (lease %s/%s): not serving", self.namespace, self.lease)
        self.metrics.leader.set(0)
        self.metrics.leader_transitions.inc()
        await self._converge()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(KEEP_SECONDS)
            try:
                await self._converge()
            except Exception:  # the keeper's boundary: try again next second
                log.exception("cannot keep the server address in line with leadership")

    async def _converge(self) -> None:
        if self.dry_run or self.config is None:
            return
        interface = self._interface(self.config)
        elector = self.elector
        async with self._lock:
            left = int(elector.time_left()) if elector is not None else 0
            if left >= 1:
                fresh = await self.address.hold(interface, left)
                if not elector or not elector.is_leader():  # the deadline passed meanwhile
                    await self.address.drop()
                elif fresh:
                    await self._announce(interface)
                if self.address.failures >= HOLD_ATTEMPTS and not self.problem:
                    self.problem = f"leading, but cannot put {interface} on {self.nic}"
                    log.error("%s", self.problem)
            elif self.address.held is not None:
                await self.address.drop()
            elif not self._cleared:
                await self.address.clear(interface)  # left by a killed process of this pod
                self._cleared = True

    @staticmethod
    def _interface(config: ServerConfig) -> IPv4Interface:
        return IPv4Interface(f"{config.server_ip}/{config.subnet.prefixlen}")

    async def _announce(self, interface: IPv4Interface) -> None:
        try:
            mac = interface_mac(self.nic)
        except OSError as exc:
            log.warning("cannot announce %s: no MAC for %s: %s", interface, self.nic, exc)
            return
        await self.address.announce(interface.ip, mac)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        self.problem = f"leader election stopped: {error!r}"
        log.error("%s", self.problem)

    # -- the Lease's changes wake the elector ------------------------------------------------

    def _watch_lease(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """A change of holder (a release, a takeover) wakes the elector: a released Lease
        is taken at once, not at the next retry. Reads only, by a watch."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        query = {"fieldSelector": f"metadata.name={self.lease}"}
        last: list[str | None] = [None]

        def seen(body: dict[str, Any]) -> None:
            holder = str((body.get("spec") or {}).get("holderIdentity") or "")
            if holder != last[0] and self.elector is not None and not self._stopping.is_set():
                last[0] = holder
                try:
                    loop.call_soon_threadsafe(self.elector.nudge)
                except RuntimeError:  # the loop closed: the agent is stopping
                    self._stopping.set()

        def listed(listing: dict[str, Any], first: bool) -> None:
            for item in listing.get("items") or []:
                seen(item)

        list_then_watch(
            lambda: connection.request("GET", path, query, timeout=15),
            lambda version: connection.watch(
                path, {**query, "resourceVersion": version}, LEASE_WATCH_SECONDS
            ),
            on_list=listed,
            on_event=lambda kind, body: seen(body),
            on_failure=lambda reason, retry_in: log.warning(
                "lease %s/%s: watch failed (%s); a released lease is noticed at the next "
                "retry instead",
                self.namespace,
                self.lease,
                reason,
            ),
            stop=self._stopping,
        )

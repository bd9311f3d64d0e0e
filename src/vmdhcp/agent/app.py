"""Composition of the agent: pool source -> PoolState -> responder -> sockets, plus HTTP.

The state is one immutable `PoolState` swapped whole on every IPPool version, so the
packet path reads one reference and never sees a half-applied change.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from ipaddress import IPv4Address

from vmdhcp.agent.config import AgentConfig
from vmdhcp.agent.declines import Declines, reporter_for
from vmdhcp.agent.events import EventPoster
from vmdhcp.agent.http import HttpServer
from vmdhcp.agent.kubeapi import Connection
from vmdhcp.agent.leading import Leadership
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.ntp import resolve_ntp
from vmdhcp.agent.replies import Outgoing, known, udp_address
from vmdhcp.agent.rogue_watch import RogueWatch, watch_rogues
from vmdhcp.agent.sources import FileSource, KubernetesSource
from vmdhcp.agent.state import PoolState, PoolStateError, build_state, ntp_hostnames
from vmdhcp.agent.transport import DhcpServer, TransportError, serve_udp
from vmdhcp.api import IPPool
from vmdhcp.dhcp import (
    ZERO_ADDRESS,
    Declined,
    Drop,
    Event,
    Ingress,
    MalformedPacket,
    MessageType,
    parse,
    respond,
    serialize,
)

log = logging.getLogger("vmdhcp.agent")

_ZERO = ZERO_ADDRESS
_ACK, _OFFER = MessageType.ACK, MessageType.OFFER
INGRESS_CACHE_SIZE = 1024
HEARTBEAT_LIMIT = 30.0
NTP_CACHE_SECONDS = 300.0
NTP_FAILURE_CACHE_SECONDS = 30.0
NTP_RESOLVE_TIMEOUT = 3.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        self.state: PoolState | None = None
        """What is served: `loaded` without the leases of MACs that declined them."""
        self.loaded: PoolState | None = None
        """The IPPool's last version as built."""
        self._state_lock = threading.Lock()
        """Orders the swaps of `state` (the event loop's, and the packet thread's on a
        DECLINE); the packet path reads `state` without it."""
        self.declines = Declines(self.metrics)
        self.protocol: DhcpServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: EventPoster | None = None
        self.trace = config.log_level == "TRACE"
        self._ntp_cache: dict[str, tuple[float, tuple[IPv4Address, ...]]] = {}
        self._ntp_errors: dict[str, str] = {}
        """NTP host name -> why it did not resolve last time (named in the warning)."""
        self._warned: frozenset[str] = frozenset()
        """The pool's problems already logged: each is logged once, not per pool version."""
        self.heartbeat = time.monotonic()
        """When the event loop last ran (see `health_problem`)."""
        self._ingress: dict[tuple[str, int], Ingress] = {}
        """Source (address, port) -> its Ingress; only the packet thread uses it."""
        self.leadership: Leadership | None = None
        """With --leader-election: answers only while it leads."""
        self.rogue: RogueWatch | None = None
        """With --rogue-check-interval > 0: looks for other DHCP servers while serving."""

    # -- health, readiness and views -----------------------------------------------------

    @property
    def health_problem(self) -> str:
        """Why /healthz fails (empty when healthy): the receive thread ended, or the event
        loop, which applies IPPool versions, has not run for HEARTBEAT_LIMIT seconds."""
        if self.protocol is not None and not self.protocol.receiving:
            return "dhcp receive thread stopped"
        if self.leadership is not None and self.leadership.problem:
            return self.leadership.problem
        stalled = time.monotonic() - self.heartbeat
        if stalled > HEARTBEAT_LIMIT:
            return f"event loop stalled for {stalled:.0f}s"
        return ""

    @property
    def ready(self) -> bool:
        socket_ok = self.config.dry_run or self.protocol is not None
        return socket_ok and self.state is not None

    @property
    def not_ready_reason(self) -> str:
        if not (self.config.dry_run or self.protocol is not None):
            return "dhcp socket not bound"
        if self.state is None:
            return f"ippool {self.config.ippool_ref} not loaded"
        return ""

    def lease_dump(self) -> dict[str, str]:
        return {} if self.state is None else self.state.lease_dump()

    def server_ip(self) -> IPv4Address | None:
        return None if self.state is None else self.state.config.server_ip

    def serving(self) -> bool:
        """Loaded, and the one that answers (the leader, or the only agent)."""
        return self.state is not None and (self.leadership is None or self.leadership.serving())

    # -- the packet path -----------------------------------------------------------------

    def handle(self, data: bytes, source: tuple[str, int]) -> Outgoing | None:
        """Decide what to answer to `data`, received from `source` (address, port)."""
        metrics = self.metrics
        state = self.state
        if self.leadership is not None and not self.leadership.serving():
            metrics.dropped_by_reason["standby"].inc()
            return None
        if state is not None and not self.trace:
            hit = state.replies.recall(data, source)
            if hit is not None:
                if hit[2] == _ACK:  # an ACK again (a retransmission): a DECLINE may follow
                    self.declines.acked(data[28:34], hit[0][0][16:20])
                metrics.reply_cache_hits.inc()
                metrics.received_by_type[hit[1]].inc()
                metrics.replies_by_type[hit[2]].inc()
                return hit[0]
            metrics.reply_cache_misses.inc()
        try:
            request = parse(data)
        except MalformedPacket as exc:
            metrics.received_other.inc()
            metrics.dropped_by_reason["malformed"].inc()
            if self.trace:
                log.debug("drop malformed packet from %s: %s", source[0], exc)
            return None
        request_type = request.message_type
        metrics.received_by_type.get(request_type or -1, metrics.received_other).inc()
        if state is None:
            metrics.dropped_by_reason["not_ready"].inc()
            return None
        ingress = self._ingress.get(source)
        if ingress is None:
            ingress = self._ingress_from(source)
        decision = respond(request, state.leases, state.config, ingress, time.time())
        if isinstance(decision, Drop):
            metrics.dropped_by_reason[decision.reason.value].inc()
            if self.trace:
                log.debug("%s -> drop %s", request.summary(), decision.reason.value)
            if decision.event is not None:
                self._report(decision.event, state)
            return None
        reply_type = decision.message_type
        if reply_type is _ACK:  # a DECLINE may follow
            self.declines.acked(decision.packet.chaddr, decision.packet.yiaddr.packed)
        metrics.replies_by_type[reply_type].inc()
        destination = decision.destination
        if self.trace:
            log.debug(
                "%s -> %s yiaddr=%s to %s",
                request.summary(),
                decision.message_type.name,
                decision.packet.yiaddr,
                destination,
            )
        outgoing = (serialize(decision.packet), destination, udp_address(destination))
        if not self.trace and (reply_type is _OFFER or known(request, state.leases)):
            assert request_type is not None  # a reply answers a known message type
            state.replies.remember(data, source, (outgoing, int(request_type), int(reply_type)))
        return outgoing

    def _ingress_from(self, source: tuple[str, int]) -> Ingress:
        """Parsing the address costs about 1.8 µs, a tenth of a reply: keep the Ingress of
        recent sources (relays, renewing clients); clients without an address all send from
        0.0.0.0:68."""
        if len(self._ingress) >= INGRESS_CACHE_SIZE:
            self._ingress.clear()
        address = source[0]
        ingress = Ingress(
            self.config.nic, _ZERO if address == "0.0.0.0" else IPv4Address(address), source[1]
        )
        self._ingress[source] = ingress
        return ingress

    def _report(self, event: Event, state: PoolState) -> None:
        if isinstance(event, Declined):  # logged, counted and perhaps honoured there
            if self.declines.declined(event, state.leases):
                self._serve_loaded()  # withheld at once, before the next packet
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self.declines.publish)
        else:
            log.info("client %s released %s", event.mac, event.address)
        if self.events is not None and self.loop is not None:
            # the packet thread hands Events to the event loop, which owns the poster
            self.loop.call_soon_threadsafe(self.events.post, event)

    # -- pool updates --------------------------------------------------------------------

    def _serve_loaded(self) -> None:
        """Serve the loaded pool without the leases of the MACs withheld now."""
        with self._state_lock:
            loaded = self.loaded
            self.state = None if loaded is None else loaded.withholding(self.declines.withheld())

    def refresh_declines(self) -> None:
        """The declined entries may have changed (the pool moved a MAC, a hold ran out, the
        lead changed): serve accordingly and tell the controller."""
        self.declines.resolve(None if self.loaded is None else self.loaded.leases)
        self._serve_loaded()
        self.declines.publish()

    async def apply(self, pool: IPPool | None) -> None:
        if pool is None:
            if self.state is not None:
                log.warning("ippool %s is gone: serving nothing", self.config.ippool_ref)
            with self._state_lock:
                self.state = self.loaded = None
            self.refresh_declines()
            self._warned = frozenset()
            self.metrics.leases.set(0)
            self.metrics.ready.set(0)
            return
        if self.events is not None:
            self.events.uid = pool.metadata.uid
        resolved = await self._resolve_ntp(ntp_hostnames(pool))
        try:
            state = build_state(
                pool, resolved, self.config.reply_cache_size, ntp_errors=self._ntp_errors
            )
        except PoolStateError as exc:
            self.metrics.reloads.labels("error").inc()
            log.error(
                "ippool %s cannot be served, keeping the previous leases: %s",
                self.config.ippool_ref,
                exc,
            )
            return
        previous, self.loaded = self.loaded, state
        self.refresh_declines()
        self.metrics.reloads.labels("ok").inc()
        self.metrics.leases.set(len(state.leases))
        self.metrics.ready.set(1 if self.ready else 0)
        self._log_problems(state.problems)
        if previous is None or previous.config != state.config or previous.leases != state.leases:
            log.info("serving ippool %s: %s", self.config.ippool_ref, state.describe())
        if self.leadership is not None:
            await self.leadership.pool_changed(state.config)

    def _log_problems(self, problems: tuple[str, ...]) -> None:
        """A warning when a problem appears, a line when it is gone; nothing while it stays
        (a pool gets a new version at every allocation)."""
        for problem in problems:
            if problem not in self._warned:
                log.warning("ippool %s: %s", self.config.ippool_ref, problem)
        for problem in sorted(self._warned.difference(problems)):
            log.info("ippool %s: no longer: %s", self.config.ippool_ref, problem)
        self._warned = frozenset(problems)

    async def _resolve_ntp(self, names: tuple[str, ...]) -> dict[str, tuple[IPv4Address, ...]]:
        return await resolve_ntp(
            names,
            self._ntp_cache,
            self._ntp_errors,
            ttl=NTP_CACHE_SECONDS,
            failure_ttl=NTP_FAILURE_CACHE_SECONDS,
            resolve_seconds=NTP_RESOLVE_TIMEOUT,
        )


async def run(config: AgentConfig) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code."""
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    agent.loop = loop
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if not config.dry_run:
        try:
            agent.protocol = serve_udp(config.nic, agent.handle, agent.metrics, agent.server_ip)
        except TransportError as exc:
            log.error("%s", exc)
            return 1
        log.info("dhcp server listening on %s udp/67", config.nic)
        if config.rogue_check_interval > 0:
            agent.rogue = watch_rogues(
                config,
                agent.metrics,
                loop,
                serving=agent.serving,
                server_id=agent.server_ip,
                pool_macs=lambda: {} if agent.state is None else agent.state.leases,
            )
    else:
        log.info("dry run: no dhcp socket")

    try:
        http = HttpServer(
            config.http_host, config.http_port, agent, agent.metrics, config.enable_cache_dump_api
        )
    except OSError as exc:
        log.error(
            "cannot serve http on %s:%d: %s",
            config.http_host,
            config.http_port,
            exc.strerror or exc,
        )
        if agent.protocol is not None:
            agent.protocol.close()
        return 1
    http.start()

    source: FileSource | KubernetesSource
    if config.ippool_file is not None:
        source = FileSource(
            config.ippool_file,
            agent.apply,
            config.file_poll_interval,
            on_error=agent.metrics.reloads.labels("error").inc,
        )
    else:
        assert config.ippool_namespace is not None
        assert config.ippool_name is not None
        source = KubernetesSource(
            config.ippool_namespace,
            config.ippool_name,
            agent.apply,
            config.kubeconfig,
            config.kubecontext,
        )
    if isinstance(source, KubernetesSource):
        component = config.name or "vm-dhcp-agent"
        if config.leader_election:
            agent.leadership = Leadership(
                config.nic,
                config.namespace,
                config.identity,
                (source.namespace, source.name),
                agent.metrics,
                dry_run=config.dry_run,
            )
        else:
            agent.metrics.leader.set(1)

        def attach_client(api: Connection) -> None:
            events = agent.events = EventPoster(api, source.namespace, source.name, component)
            if agent.leadership is not None:
                agent.leadership.start(api)
            reporter = agent.declines.reporter = reporter_for(config, api, events, agent.leadership)
            if agent.rogue is not None:
                agent.rogue.attach(events, reporter)

        source.on_client = attach_client
    else:
        agent.metrics.leader.set(1)

    async def beat() -> None:
        while True:
            agent.heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    heartbeat = asyncio.create_task(beat(), name="heartbeat")
    declines = asyncio.create_task(
        agent.declines.run(agent.serving, agent.refresh_declines), name="declines"
    )
    source_task = asyncio.create_task(source.run(), name="ippool-source")
    stop_task = asyncio.create_task(stop.wait())
    rc = 0
    done, _ = await asyncio.wait({source_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if source_task in done:
        log.error("ippool source failed: %s", source_task.exception())
        rc = 1
    # Stop answering first (a leader drops its address and releases the Lease, so that a
    # standby takes over at once), then stop reading the pool, then the HTTP server.
    if agent.leadership is not None:
        await agent.leadership.stop()
    if agent.rogue is not None:
        await agent.rogue.close()
    if agent.protocol is not None:
        agent.protocol.close()
    for task in (source_task, stop_task, heartbeat, declines):
        task.cancel()
    if isinstance(source, KubernetesSource):
        source.stop()
    await asyncio.gather(source_task, stop_task, heartbeat, declines, return_exceptions=True)
    if agent.declines.reporter is not None:
        await agent.declines.reporter.writer.close()
    http.close()
    log.info("stopped")
    return rc

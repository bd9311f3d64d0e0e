"""Rogue DHCP server detection, the edge: the packet socket, the probe timer, and what a
sighting turns into (metrics, Events, the report to the controller). The decisions are in
`rogue.py`.

Only the serving agent looks (a standby holds no address and reports nothing; without
leader election the one agent serves). Every `--rogue-check-interval` seconds (jittered by
+-10%) it sends a DHCPDISCOVER from its probe MAC with the broadcast flag, as a whole
Ethernet frame on an AF_PACKET socket: from 0.0.0.0:68 like a client, and never seen by
its own server socket (frames sent on a packet socket do not enter the local IP stack).

Foreign answers arrive on the same packet socket, bound to IPv4 on the NIC with a classic
BPF filter that lets through only UDP to port 68 that arrived (not what this host sent: its
own replies never reach the thread). A UDP socket on port 68 would see broadcast answers
only, and every broadcast reply of the agent's own server looped back; the packet socket
also sees unicast answers to MACs the bridge floods (a server that ignores the broadcast
flag and answers the probe MAC at layer 2). The server's packet path is not touched: a
thread of its own blocks on this socket (with a one-second timeout, to notice `close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Container
from ipaddress import IPv4Address

from vmdhcp.agent.config import AgentConfig
from vmdhcp.agent.events import EventPoster
from vmdhcp.agent.frames import udp_frame
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.report import ReportedServer, Reporter, utc_stamp
from vmdhcp.agent.rogue import (
    PROBE_XIDS,
    WINDOW_INTERVALS,
    HandOffGate,
    RogueServer,
    RogueTracker,
    TokenBucket,
    classify,
    jittered,
    probe_mac,
    probe_payload,
)
from vmdhcp.agent.transport import interface_mac
from vmdhcp.dhcp import CLIENT_PORT, SERVER_PORT, ZERO_ADDRESS

log = logging.getLogger("vmdhcp.agent")

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23
BROADCAST_MAC = b"\xff" * 6
BROADCAST_IP = IPv4Address("255.255.255.255")
FIRST_PROBE_SECONDS = 2.0
"""The first probe goes out within this long of the start (or the interval, if shorter)."""
RECEIVE_TIMEOUT = 1.0
EVENT_RATE, EVENT_BURST = 1 / 30, 8
"""Events about servers seen, all servers together: 8 at once, then one in 30 s."""
FRAME_BUFFER = 9216

# Classic BPF (struct sock_filter: code, jt, jf, k): accept IPv4 UDP to port 68, unfragmented,
# that arrived (packet type below PACKET_OUTGOING: not sent by this host, not looped back).
_REJECT = 12
FILTER = (
    (0x28, 0, 0, 0xFFFFF004),  # 0: ldh [pkttype] (SKF_AD_OFF + SKF_AD_PKTTYPE)
    (0x35, _REJECT - 2, 0, 4),  # 1: jge #PACKET_OUTGOING -> reject
    (0x28, 0, 0, 12),  # 2: ldh [12] (EtherType)
    (0x15, 0, _REJECT - 4, ETH_P_IP),  # 3: jeq #IPv4, else reject
    (0x30, 0, 0, 23),  # 4: ldb [23] (IP protocol)
    (0x15, 0, _REJECT - 6, 17),  # 5: jeq #UDP, else reject
    (0x28, 0, 0, 20),  # 6: ldh [20] (flags, fragment offset)
    (0x45, _REJECT - 8, 0, 0x1FFF),  # 7: jset #offset -> reject (a later fragment)
    (0xB1, 0, 0, 14),  # 8: ldxb 4*([14]&0xf) (IP header length)
    (0x48, 0, 0, 16),  # 9: ldh [x+16] (UDP destination port)
    (0x15, 0, _REJECT - 11, CLIENT_PORT),  # 10: jeq #68, else reject
    (0x06, 0, 0, 0x40000),  # 11: accept
    (0x06, 0, 0, 0),  # 12: reject
)


def open_packet_socket(nic: str) -> socket.socket:
    """An AF_PACKET socket on `nic` for IPv4 frames, the filter attached before it is bound
    (so that nothing unfiltered is ever queued)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in FILTER))
        fprog = struct.pack("HL", len(FILTER), ctypes.addressof(program))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        # Linux >= 4.20: the server's own replies are not even handed to this socket (no
        # copy per reply for the filter to drop); older kernels rely on the filter alone
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((nic, ETH_P_IP))
        sock.settimeout(RECEIVE_TIMEOUT)
    except OSError:
        sock.close()
        raise
    return sock


class RogueWatch:
    def __init__(
        self,
        nic: str,
        interval: float,
        metrics: AgentMetrics,
        *,
        serving: Callable[[], bool],
        server_id: Callable[[], IPv4Address | None],
        pool_macs: Callable[[], Container[str]],
    ) -> None:
        self.nic = nic
        self.interval = interval
        self.metrics = metrics
        self.serving = serving
        self.server_id = server_id
        self.pool_macs = pool_macs
        self.tracker = RogueTracker(WINDOW_INTERVALS * interval)
        self.gate = HandOffGate()
        """The receive thread's: which sightings reach the event loop at all."""
        self.event_budget = TokenBucket(EVENT_RATE, EVENT_BURST)
        self.events: EventPoster | None = None
        self.reporter: Reporter | None = None
        """The report to the controller (Kubernetes mode, with a namespace)."""
        self.sock: socket.socket | None = None
        self._src_mac = b""
        self._probe = probe_mac(secrets.token_bytes, ())
        self._xids: tuple[int, ...] = ()
        self._own: IPv4Address | None = None
        self._active = False
        """Serving at the last tick: the receive thread looks at frames only then."""
        self._shown: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def probe_mac(self) -> str:
        return self._probe.hex(":")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket and start looking; raises OSError when the socket cannot be
        opened (no NET_RAW)."""
        self._src_mac = interface_mac(self.nic)
        self.sock = open_packet_socket(self.nic)
        self._loop = loop
        self._thread = threading.Thread(target=self._receive, name="rogue-check", daemon=True)
        self._thread.start()
        self._task = loop.create_task(self._run(), name="rogue-check")

    def attach(self, events: EventPoster | None, reporter: Reporter | None) -> None:
        """Kubernetes mode: post Events on the pool and report to the controller (a Lease
        in the agent's namespace, see `report`) what the check finds."""
        self.events = events
        self.reporter = reporter
        if reporter is not None:
            reporter.rogue_checking = True  # its report says the check runs, and what it saw

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, RECEIVE_TIMEOUT * 2)
        if self.sock is not None:
            self.sock.close()

    # -- the receive thread ------------------------------------------------------------------

    def _receive(self) -> None:
        assert self.sock is not None
        assert self._loop is not None
        recv, tallies, loop, gate = (
            self.sock.recv,
            self.metrics.rogue_frames,
            self._loop,
            self.gate,
        )
        while not self._stop.is_set():
            try:
                frame = recv(FRAME_BUFFER)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                log.debug("rogue check: receive error on %s: %s", self.nic, exc)
                time.sleep(RECEIVE_TIMEOUT)  # a broken socket must not spin
                continue
            if not self._active:
                continue  # a standby reports nothing
            result, server = classify(frame, self._own, self._probe, self._xids)
            tallies[result].inc()
            if server is not None and gate.admit(server, time.monotonic()):
                try:
                    loop.call_soon_threadsafe(self._seen, server)
                except RuntimeError:  # the loop closed: the agent is stopping
                    return

    # -- the event loop's side ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = min(self.interval, FIRST_PROBE_SECONDS) * (0.5 + 0.5 * random.random())
        while True:
            await asyncio.sleep(delay)
            delay = jittered(self.interval, random.random())
            try:
                await self._tick()
            except Exception:  # the check's boundary: the server goes on, the check too
                log.exception("rogue dhcp server check failed; trying again next interval")

    async def _tick(self) -> None:
        if not self.serving():
            if self._active:
                self._active = False
                self.tracker.clear()
                self._show()  # the serving agent reports, not a standby (nor the report)
                if self.reporter is not None:
                    self.reporter.stand_down()
            return
        self._own = self.server_id()
        if not self._active:
            await self._resume()
            self._active = True
        gone = self.tracker.expire(time.monotonic())
        for server in gone:
            log.info("dhcp server %s no longer seen on %s", server.describe(), self.nic)
            if self.events is not None:
                self.events.post_rogue(server, present=False)
        if gone:
            self._publish()
        self._send_probe()

    async def _resume(self) -> None:
        """Serving starts: begin from the pool's report, as if its servers had just been
        seen (a new leader does not clear what the previous one found; they are forgotten
        within the window unless seen again)."""
        if self.reporter is None:
            return
        stored = await self.reporter.resume()
        if stored is None:
            return
        now = time.monotonic()
        for server in stored.rogue_servers:
            self.tracker.seen(RogueServer(server.server_id, server.mac), now, server.since)
        self._show()

    def _send_probe(self) -> None:
        if self.sock is None:
            return
        if self.probe_mac in self.pool_macs():
            self._probe = probe_mac(secrets.token_bytes, self.pool_macs())
        xid = secrets.randbits(32)
        self._xids = (*self._xids[-(PROBE_XIDS - 1) :], xid)
        frame = udp_frame(
            src_mac=self._src_mac,
            dst_mac=BROADCAST_MAC,
            src_ip=ZERO_ADDRESS,
            dst_ip=BROADCAST_IP,
            src_port=CLIENT_PORT,
            dst_port=SERVER_PORT,
            payload=probe_payload(self._probe, xid),
        )
        try:
            self.sock.send(frame)
        except OSError as exc:
            log.warning("cannot send the rogue dhcp server probe on %s: %s", self.nic, exc)
            return
        self.metrics.rogue_probes.inc()

    def _seen(self, server: RogueServer) -> None:
        if not self._active:
            return
        now = time.monotonic()
        new = self.tracker.seen(server, now, utc_stamp())
        # only a server the tracker keeps, and few at all (the poster also lets one through
        # per server in 10 min): forged answers cannot turn into a stream of API writes
        if self.events is not None and server in self.tracker and self.event_budget.take(now):
            self.events.post_rogue(server, present=True)
        if not new:
            return
        log.warning(
            "another dhcp server answers on %s: server identifier %s, mac %s",
            self.nic,
            server.server_id,
            server.mac,
        )
        self._publish()

    def _publish(self) -> None:
        self._show()
        if self.reporter is None:
            return
        self.reporter.set_rogue_servers(
            tuple(ReportedServer(s.server_id, s.mac, since) for s, since in self.tracker.servers())
        )

    def _show(self) -> None:
        """The metrics: the count, and one info series per server (gone ones removed)."""
        current = {(s.server_id, s.mac) for s, _ in self.tracker.servers()}
        info = self.metrics.rogue_server_info
        for labels in self._shown - current:
            with contextlib.suppress(KeyError):
                info.remove(*labels)
        for labels in current:
            info.labels(*labels).set(1)
        self._shown = current
        self.metrics.rogue_servers.set(len(current))


def watch_rogues(
    config: AgentConfig,
    metrics: AgentMetrics,
    loop: asyncio.AbstractEventLoop,
    *,
    serving: Callable[[], bool],
    server_id: Callable[[], IPv4Address | None],
    pool_macs: Callable[[], Container[str]],
) -> RogueWatch | None:
    """Look for other DHCP servers while serving; without a packet socket (no NET_RAW) the
    agent serves all the same, and says that it does not look."""
    rogue = RogueWatch(
        config.nic,
        config.rogue_check_interval,
        metrics,
        serving=serving,
        server_id=server_id,
        pool_macs=pool_macs,
    )
    try:
        rogue.start(loop)
    except OSError as exc:
        log.warning("no rogue dhcp server check on %s: %s", config.nic, exc.strerror or exc)
        return None
    log.info(
        "checking for other dhcp servers on %s every %gs (probe mac %s)",
        config.nic,
        config.rogue_check_interval,
        rogue.probe_mac,
    )
    return rogue

"""Sockets of the DHCP server: one UDP socket on 0.0.0.0:67 bound to the VM network
interface for receiving and for relay, ciaddr and broadcast replies, and one AF_PACKET
socket for replies unicast at layer 2 to a client that has no address yet.

No protocol logic lives here: the `handler` turns a datagram into a decision.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from vmdhcp.agent.frames import udp_frame
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.replies import Outgoing
from vmdhcp.dhcp import CLIENT_PORT, SERVER_PORT, ZERO_ADDRESS, Destination, L2Unicast
from vmdhcp.mac import mac_to_bytes

log = logging.getLogger(__name__)


RECEIVE_BUFFER = 4096
"""Larger than any DHCP message a client may send (RFC 2131 allows up to the link MTU)."""

Handler = Callable[[bytes, tuple[str, int]], Outgoing | None]
"""(datagram, (source address, source port)) -> what to send, or None for silence."""


class TransportError(OSError):
    """The DHCP socket cannot be opened (missing interface, port taken, no privilege)."""


def interface_mac(nic: str) -> bytes:
    text = Path(f"/sys/class/net/{nic}/address").read_text().strip()
    return mac_to_bytes(text)


def open_udp_socket(nic: str, port: int = SERVER_PORT) -> socket.socket:
    try:
        socket.if_nametoindex(nic)
    except OSError:
        raise TransportError(f"interface {nic} not found") from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, nic.encode())
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {nic} udp/{port}: {exc.strerror or exc}") from None
    return sock


class DhcpServer:
    """Receive, decide (through `handler`), send; count what happened.

    The receive loop is a thread blocked in recvfrom() on a blocking socket, not an
    asyncio protocol: one system call per packet, where the event loop costs an epoll
    wake-up and its machinery, and a socket timeout costs a poll() before every read.
    `close()` wakes the thread with shutdown(). `handler` must be thread-safe: the agent's
    reads one immutable state reference and counters that only this thread writes.
    """

    def __init__(
        self,
        sock: socket.socket,
        nic: str,
        handler: Handler,
        metrics: AgentMetrics,
        server_ip: Callable[[], IPv4Address | None],
    ) -> None:
        self.sock = sock
        self.nic = nic
        self.handler = handler
        self.metrics = metrics
        self.server_ip = server_ip
        self._raw: socket.socket | None = None
        self._src_mac = b""
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"dhcp-{nic}", daemon=True)
        try:
            # protocol 0: a send-only packet socket; with ETH_P_IP the kernel would copy
            # every incoming IP packet into a queue nobody reads
            self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self._raw.bind((nic, 0))
            self._src_mac = interface_mac(nic)
        except OSError as exc:
            log.warning(
                "no layer-2 socket on %s (%s): clients without the broadcast flag get "
                "broadcast replies instead",
                nic,
                exc,
            )
            if self._raw is not None:
                self._raw.close()
            self._raw = None

    def start(self) -> None:
        self._thread.start()

    @property
    def receiving(self) -> bool:
        """The receive thread is running (false before start and after close)."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop answering: wake the loop, let it end, then close the sockets."""
        self._closed.set()
        with contextlib.suppress(OSError):  # ENOTCONN for UDP, after waking the reader
            self.sock.shutdown(socket.SHUT_RD)
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _loop(self) -> None:
        recvfrom = self.sock.recvfrom
        closed = self._closed.is_set
        handle = self.handler
        sendto = self.sock.sendto
        clock = time.perf_counter
        observe = self.metrics.reply_seconds.observe
        while True:
            try:
                data, source = recvfrom(RECEIVE_BUFFER)
            except OSError as exc:
                if closed():
                    return
                log.debug("receive error on %s: %s", self.nic, exc)
                continue
            if closed():
                return
            began = clock()
            try:
                outgoing = handle(data, source)
            except Exception:  # the per-packet boundary: log, count, keep serving
                log.exception("internal error while handling a packet from %s", source[0])
                self.metrics.dropped_by_reason["internal_error"].inc()
                continue
            if outgoing is None:
                continue
            payload, destination, address = outgoing
            try:
                if address is not None:
                    sendto(payload, address)
                else:
                    self._send_l2(payload, destination)
            except OSError as exc:
                self.metrics.send_errors.inc()
                log.warning("cannot send reply to %s: %s", destination, exc)
                continue
            observe(clock() - began)

    def _send_l2(self, payload: bytes, destination: Destination) -> None:
        raw = self._raw  # once: close() may clear it meanwhile
        if raw is None or not isinstance(destination, L2Unicast):
            self.sock.sendto(payload, ("255.255.255.255", CLIENT_PORT))
            return
        frame = udp_frame(
            src_mac=self._src_mac,
            dst_mac=mac_to_bytes(destination.mac),
            src_ip=self.server_ip() or ZERO_ADDRESS,
            dst_ip=destination.address,
            src_port=SERVER_PORT,
            dst_port=CLIENT_PORT,
            payload=payload,
        )
        raw.send(frame)


def serve_udp(
    nic: str, handler: Handler, metrics: AgentMetrics, server_ip: Callable[[], IPv4Address | None]
) -> DhcpServer:
    """Open the sockets and start receiving; raises TransportError on failure."""
    server = DhcpServer(open_udp_socket(nic), nic, handler, metrics, server_ip)
    server.start()
    return server

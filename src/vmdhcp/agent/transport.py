"""Sockets of the DHCP server: one UDP socket on 0.0.0.0:67 bound to the VM network
interface for receiving and for relay, ciaddr and broadcast replies, and one AF_PACKET
socket for replies unicast at layer 2 to a client that has no address yet.

No protocol logic lives here: the `handler` turns a datagram into a decision.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from vmdhcp.agent.frames import udp_frame
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.dhcp import (
    CLIENT_PORT,
    SERVER_PORT,
    Broadcast,
    Destination,
    Ingress,
    L2Unicast,
    Relay,
    Unicast,
)
from vmdhcp.mac import mac_to_bytes

log = logging.getLogger(__name__)
_ZERO = IPv4Address(0)


Handler = Callable[[bytes, Ingress], tuple[bytes, Destination] | None]


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

    The receive loop is a thread blocked in recvfrom(), not an asyncio protocol: one
    system call per packet instead of an epoll wake-up plus the event loop's machinery,
    which was a measurable share of the CPU per DORA. `handler` must be thread-safe: the
    agent's reads one immutable state reference and thread-safe counters.
    """

    POLL_SECONDS = 0.2
    """How often the loop looks up from recvfrom() to notice `close()`."""

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
        self.sock.settimeout(self.POLL_SECONDS)
        self._thread.start()

    def close(self) -> None:
        """Stop answering: the loop ends within POLL_SECONDS, then the sockets close."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _loop(self) -> None:
        recvfrom = self.sock.recvfrom
        closed = self._closed.is_set
        while not closed():
            try:
                data, addr = recvfrom(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                if closed():
                    return
                log.debug("receive error on %s: %s", self.nic, exc)
                continue
            self.datagram_received(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        began = time.perf_counter()
        source = addr[0]
        # clients without an address send from 0.0.0.0: skip the address parser for them
        ip = _ZERO if source == "0.0.0.0" else IPv4Address(source)
        ingress = Ingress(self.nic, ip, addr[1])
        try:
            outcome = self.handler(data, ingress)
        except Exception:  # the per-packet boundary: log, count, keep serving
            log.exception("internal error while handling a packet from %s", source)
            self.metrics.dropped_by_reason["internal_error"].inc()
            return
        if outcome is None:
            return
        payload, destination = outcome
        if self._send(payload, destination):
            self.metrics.reply_seconds.observe(time.perf_counter() - began)

    def _send(self, payload: bytes, destination: Destination) -> bool:
        try:
            if isinstance(destination, Relay):
                self.sock.sendto(payload, (str(destination.address), SERVER_PORT))
            elif isinstance(destination, Unicast):
                self.sock.sendto(payload, (str(destination.address), CLIENT_PORT))
            elif isinstance(destination, L2Unicast) and self._raw is not None:
                self._send_l2(payload, destination)
            else:
                assert isinstance(destination, Broadcast | L2Unicast)
                self.sock.sendto(payload, ("255.255.255.255", CLIENT_PORT))
        except OSError as exc:
            self.metrics.send_errors.inc()
            log.warning("cannot send reply to %s: %s", destination, exc)
            return False
        return True

    def _send_l2(self, payload: bytes, destination: L2Unicast) -> None:
        assert self._raw is not None
        frame = udp_frame(
            src_mac=self._src_mac,
            dst_mac=mac_to_bytes(destination.mac),
            src_ip=self.server_ip() or _ZERO,
            dst_ip=destination.address,
            src_port=SERVER_PORT,
            dst_port=CLIENT_PORT,
            payload=payload,
        )
        self._raw.send(frame)


def serve_udp(
    nic: str, handler: Handler, metrics: AgentMetrics, server_ip: Callable[[], IPv4Address | None]
) -> DhcpServer:
    """Open the sockets and start receiving; raises TransportError on failure."""
    server = DhcpServer(open_udp_socket(nic), nic, handler, metrics, server_ip)
    server.start()
    return server

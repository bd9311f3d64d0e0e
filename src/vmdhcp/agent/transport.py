"""Sockets of the DHCP server: one UDP socket on 0.0.0.0:67 bound to the VM network
interface for receiving and for relay, ciaddr and broadcast replies, and one AF_PACKET
socket for replies unicast at layer 2 to a client that has no address yet.

No protocol logic lives here: the `handler` turns a datagram into a decision.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import cast

from vmdhcp.agent.frames import ETH_P_IP, udp_frame
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.dhcp import (
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

SERVER_PORT = 67
CLIENT_PORT = 68

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
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {nic} udp/{port}: {exc.strerror or exc}") from None
    return sock


class DhcpProtocol(asyncio.DatagramProtocol):
    """Receive, decide (through `handler`), send; count what happened."""

    def __init__(
        self,
        nic: str,
        handler: Handler,
        metrics: AgentMetrics,
        server_ip: Callable[[], IPv4Address | None],
    ) -> None:
        self.nic = nic
        self.handler = handler
        self.metrics = metrics
        self.server_ip = server_ip
        self.transport: asyncio.DatagramTransport | None = None
        self._raw: socket.socket | None = None
        self._src_mac = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # selector transports do not subclass asyncio.DatagramTransport on 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)
        try:
            self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
            self._raw.bind((self.nic, ETH_P_IP))
            self._raw.setblocking(False)
            self._src_mac = interface_mac(self.nic)
        except OSError as exc:
            log.warning(
                "no layer-2 socket on %s (%s): clients without the broadcast flag get "
                "broadcast replies instead",
                self.nic,
                exc,
            )
            if self._raw is not None:
                self._raw.close()
            self._raw = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        began = time.perf_counter()
        source = str(addr[0])
        # clients without an address send from 0.0.0.0: skip the address parser for them
        ip = _ZERO if source == "0.0.0.0" else IPv4Address(source)
        ingress = Ingress(self.nic, ip, int(addr[1]))
        try:
            outcome = self.handler(data, ingress)
        except Exception:  # the per-packet boundary: log, count, keep serving
            log.exception("internal error while handling a packet from %s", addr[0])
            self.metrics.dropped.labels("internal_error").inc()
            return
        if outcome is None:
            return
        payload, destination = outcome
        if self._send(payload, destination):
            self.metrics.reply_seconds.observe(time.perf_counter() - began)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error on %s: %s", self.nic, exc)

    def _send(self, payload: bytes, destination: Destination) -> bool:
        assert self.transport is not None
        try:
            if isinstance(destination, Relay):
                self.transport.sendto(payload, (str(destination.address), SERVER_PORT))
            elif isinstance(destination, Unicast):
                self.transport.sendto(payload, (str(destination.address), CLIENT_PORT))
            elif isinstance(destination, L2Unicast) and self._raw is not None:
                self._send_l2(payload, destination)
            else:
                assert isinstance(destination, Broadcast | L2Unicast)
                self.transport.sendto(payload, ("255.255.255.255", CLIENT_PORT))
        except OSError as exc:
            self.metrics.send_errors.inc()
            log.warning("cannot send reply to %s: %s", destination, exc)
            return False
        return True

    def _send_l2(self, payload: bytes, destination: L2Unicast) -> None:
        assert self._raw is not None
        source = self.server_ip()
        frame = udp_frame(
            src_mac=self._src_mac,
            dst_mac=mac_to_bytes(destination.mac),
            src_ip=source or _ZERO,
            dst_ip=destination.address,
            src_port=SERVER_PORT,
            dst_port=CLIENT_PORT,
            payload=payload,
        )
        self._raw.send(frame)


async def serve_udp(
    nic: str, handler: Handler, metrics: AgentMetrics, server_ip: Callable[[], IPv4Address | None]
) -> DhcpProtocol:
    """Open the sockets and start receiving; raises TransportError on failure."""
    sock = open_udp_socket(nic)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: DhcpProtocol(nic, handler, metrics, server_ip), sock=sock
    )
    return protocol

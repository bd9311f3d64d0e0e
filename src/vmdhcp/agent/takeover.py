"""The serving agent's address: the pool's serverIP put on the NIC while leading, with a
lifetime the leader keeps refreshing (the kernel drops it by itself if the process stops:
a frozen leader cannot keep it past its renew deadline), announced with gratuitous ARP so
that clients and switches move to it at once (as keepalived and MetalLB do), and removed
when leadership ends, before another agent may lead."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

log = logging.getLogger("vmdhcp.agent")

BROADCAST_MAC = b"\xff" * 6
ETHERTYPE_ARP = 0x0806
ANNOUNCEMENTS = 3
ANNOUNCE_INTERVAL = 0.2


def gratuitous_arp(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet frame with an ARP request for our own address (RFC 5227's
    announcement): every host on the segment updates its cache entry for `address`."""
    ip = address.packed
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return BROADCAST_MAC + mac + struct.pack("!H", ETHERTYPE_ARP) + arp


async def _ip(*args: str) -> tuple[int, str]:
    """Run `ip`; a cancelled call kills it first (a late `add` must not outlive a drop)."""
    process = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await process.communicate()
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, err.decode(errors="replace").strip()


class ServerAddress:
    """`interface` (serverIP/prefix) on `nic`, held while leading."""

    def __init__(self, nic: str) -> None:
        self.nic = nic
        self.held: IPv4Interface | None = None
        self.failures = 0
        """Attempts to hold it that failed in a row."""

    async def hold(self, interface: IPv4Interface, lifetime: int) -> bool:
        """Put it on the NIC, or refresh it, for `lifetime` seconds (the kernel removes it
        then, whatever becomes of this process); True when newly held."""
        if self.held is not None and self.held != interface:
            await self.drop()
        fresh = self.held != interface
        # counted as held before `ip` runs: a call cancelled after the kernel added it
        # must still be dropped by whoever drops it next
        self.held = interface
        seconds = str(max(1, lifetime))
        code, err = await _ip(
            "-4", "address", "replace", str(interface), "dev", self.nic,
            "valid_lft", seconds, "preferred_lft", seconds,
        )  # fmt: skip
        if code:
            self.failures += 1
            log.error("cannot put %s on %s: %s", interface, self.nic, err)
            await self.drop()
            return False
        self.failures = 0
        if fresh:
            log.info("serving address %s on %s", interface, self.nic)
        return fresh

    async def announce(self, address: IPv4Address, mac: bytes) -> None:
        frame = gratuitous_arp(mac, address)
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
                raw.bind((self.nic, ETHERTYPE_ARP))
                for n in range(ANNOUNCEMENTS):
                    raw.send(frame)
                    if n + 1 < ANNOUNCEMENTS:
                        await asyncio.sleep(ANNOUNCE_INTERVAL)
        except OSError as exc:
            log.warning("cannot announce %s on %s: %s", address, self.nic, exc)

    async def clear(self, interface: IPv4Interface) -> None:
        """Make sure `interface` is not on the NIC, whoever put it there."""
        code, _ = await _ip("-4", "address", "del", str(interface), "dev", self.nic)
        if code == 0:
            log.warning("removed %s from %s: a standby must not hold it", interface, self.nic)

    async def drop(self) -> None:
        if self.held is None:
            return
        held, self.held = self.held, None
        code, err = await _ip("-4", "address", "del", str(held), "dev", self.nic)
        if code and "Cannot assign" not in err:
            log.error("cannot remove %s from %s: %s", held, self.nic, err)
        else:
            log.info("no longer holding %s on %s", held, self.nic)

"""Rogue DHCP server detection, the decisions (pure: no sockets, no clock, no randomness of
its own; the edge is `rogue_watch.py`).

A foreign server is one whose server identifier (option 54) is not the pool's serverIP.
The serving agent sees foreign answers two ways: the answers to its own probe (a
DHCPDISCOVER from a probe MAC of its own, locally administered and never a VM's, with the
broadcast flag set so that every server answers to the whole segment), and the OFFERs,
ACKs and NAKs of other servers to other clients that reach its NIC anyway (broadcast, or unicast to
a MAC the bridge has not learnt, which it floods). It never sends a REQUEST: a foreign
server's OFFER is only looked at, never taken.

A server is reported while it was seen in the last WINDOW_INTERVALS check intervals, at
most MAX_SERVERS server identifiers at once, MACS_PER_SERVER MACs each (a flood of forged
server identifiers cannot grow memory, the metrics' label sets or the report without
bound, nor push out a server that answers our probe or is seen again and again: see
`RogueTracker`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vmdhcp.dhcp import (
    BROADCAST_FLAG,
    MalformedPacket,
    MessageType,
    OpCode,
    OptionCode,
    Packet,
    parse,
    serialize,
)

WINDOW_INTERVALS = 3
"""A server is forgotten once it has not been seen for this many check intervals."""
MAX_SERVERS = 16
MACS_PER_SERVER = 4
"""MACs kept per server identifier (a relay, a server with two NICs; forged MACs beyond)."""
PROBE_XIDS = 3
"""Answers to the last few probes count (a slow server answers after the next probe)."""
PROBE_VENDOR_CLASS = b"vm-dhcp-agent-rogue-probe"
"""Option 60 of the probe: a foreign server's log says who asked."""
PROBE_PARAMETERS = bytes((1, 3, 6, 51, 54))
ANSWER_TYPES = frozenset((int(MessageType.OFFER), int(MessageType.ACK), int(MessageType.NAK)))
"""A foreign NAK counts too: a server that only NAKs (it knows none of our clients) sends
every VM that asks back to INIT."""

ETHERTYPE_IPV4 = 0x0800
_ETHERNET = 14
_UDP = struct.Struct("!HHHH")

FrameResult = str
"""What a frame seen on the client port was, the label of `vmdhcp_agent_rogue_frames_total`."""
FOREIGN, OWN, UNMATCHED_PROBE, OTHER, MALFORMED = (
    "foreign",
    "own",
    "unmatched_probe",
    "other",
    "malformed",
)
FRAME_RESULTS = (FOREIGN, OWN, UNMATCHED_PROBE, OTHER, MALFORMED)


@dataclass(frozen=True, order=True)
class RogueServer:
    """A foreign DHCP server: its server identifier, and the MAC its answers came from
    (the Ethernet source: the server itself on the segment, or the router that relayed it)."""

    server_id: str
    mac: str
    probed: bool = field(default=False, compare=False)
    """This sighting was an answer to our probe (not part of the identity)."""

    def describe(self) -> str:
        return f"{self.server_id} (MAC {self.mac})"


def probe_mac(random_bytes: Callable[[int], bytes], avoid: Container[str]) -> bytes:
    """A unicast, locally administered MAC that no lease of the pool uses (a VM's MAC is
    never the probe's: a server must not answer the probe with a VM's address)."""
    while True:
        raw = bytearray(random_bytes(6))
        raw[0] = (raw[0] & 0xFC) | 0x02
        if bytes(raw).hex(":") not in avoid:
            return bytes(raw)


def probe_payload(mac: bytes, xid: int) -> bytes:
    """The probe: a DHCPDISCOVER from `mac` asking for broadcast answers."""
    packet = Packet(
        op=int(OpCode.BOOTREQUEST),
        xid=xid,
        flags=BROADCAST_FLAG,
        chaddr=mac + bytes(10),
        options={
            int(OptionCode.MESSAGE_TYPE): bytes((int(MessageType.DISCOVER),)),
            int(OptionCode.PARAMETER_REQUEST_LIST): PROBE_PARAMETERS,
            int(OptionCode.VENDOR_CLASS_IDENTIFIER): PROBE_VENDOR_CLASS,
        },
    )
    return serialize(packet)


def classify(
    frame: bytes,
    own_server: IPv4Address | None,
    probe: bytes,
    probe_xids: Container[int],
) -> tuple[FrameResult, RogueServer | None]:
    """What an Ethernet frame to UDP port 68 says: a foreign server's OFFER, ACK or NAK (with
    the server), our own server's, an answer to the probe MAC that matches no recent probe
    (a forgery or a very late one: not counted), anything else, or garbage. Total: any bytes
    whatsoever give a result, never an exception."""
    if len(frame) < _ETHERNET + 20 + _UDP.size:
        return MALFORMED, None
    if int.from_bytes(frame[12:14], "big") != ETHERTYPE_IPV4 or frame[23] != 17:
        return OTHER, None
    header_length = (frame[_ETHERNET] & 0x0F) * 4
    udp_at = _ETHERNET + header_length
    if header_length < 20 or len(frame) < udp_at + _UDP.size:
        return MALFORMED, None
    _, destination_port, length, _ = _UDP.unpack_from(frame, udp_at)
    if destination_port != 68:
        return OTHER, None
    payload = frame[udp_at + _UDP.size : udp_at + max(length, _UDP.size)]
    try:
        packet = parse(payload)
        server = packet.server_identifier
    except MalformedPacket:
        return MALFORMED, None
    if packet.op != OpCode.BOOTREPLY or packet.message_type not in ANSWER_TYPES:
        return OTHER, None
    if server is None:  # RFC 2131 requires option 54 in OFFER, ACK, NAK; the source will do
        source = IPv4Address(frame[_ETHERNET + 12 : _ETHERNET + 16])
        if int(source) == 0:
            return MALFORMED, None
        server = source
    if own_server is not None and server == own_server:
        return OWN, None
    probed = packet.chaddr[:6] == probe
    if probed and packet.xid not in probe_xids:
        return UNMATCHED_PROBE, None
    return FOREIGN, RogueServer(str(server), frame[6:12].hex(":"), probed)


@dataclass
class _Seen:
    since: str
    """Wall-clock time it was first seen (for people: Events, the report, the condition)."""
    macs: dict[str, float]
    """The MACs its answers came from -> when each was last seen (monotonic: the window)."""
    probed: bool = False
    """It answered our probe (a recent xid to the probe MAC): hard to forge blindly."""

    @property
    def last(self) -> float:
        return max(self.macs.values())


class RogueTracker:
    """The foreign servers seen within the window, by server identifier, each with when it
    was first seen and the MACs its answers came from (at most `macs_per_server`, the most
    recent). At most `limit` servers: a flood of forged server identifiers cannot hide a
    real server. A server that answered our probe is kept over one that did not (it is
    evicted only by another that did); a server not probed takes the place of the one seen
    least recently only if that one was not seen within `stale_after` (one check interval):
    forged answers, each seen once, keep replacing each other, not the servers seen again
    and again."""

    def __init__(
        self,
        window: float,
        limit: int = MAX_SERVERS,
        macs_per_server: int = MACS_PER_SERVER,
        stale_after: float | None = None,
    ) -> None:
        self.window = window
        self.limit = limit
        self.macs_per_server = macs_per_server
        self.stale_after = window / WINDOW_INTERVALS if stale_after is None else stale_after
        self._seen: dict[str, _Seen] = {}

    def seen(self, server: RogueServer, now: float, wall: str) -> bool:
        """Note a sighting; True when the server (or this MAC of it) is new: not within the
        window before. A new one that finds no room is not kept."""
        entry = self._seen.get(server.server_id)
        if entry is not None:
            entry.probed = entry.probed or server.probed
            fresh = server.mac not in entry.macs
            entry.macs[server.mac] = max(entry.macs.get(server.mac, now), now)
            if len(entry.macs) > self.macs_per_server:
                del entry.macs[min(entry.macs, key=entry.macs.__getitem__)]
            return fresh and server.mac in entry.macs
        if len(self._seen) >= self.limit and not self._make_room(server.probed, now):
            return False
        self._seen[server.server_id] = _Seen(wall, {server.mac: now}, server.probed)
        return True

    def _make_room(self, probed: bool, now: float) -> bool:
        candidates = [(e.last, sid) for sid, e in self._seen.items() if not e.probed]
        if not candidates and probed:
            candidates = [(e.last, sid) for sid, e in self._seen.items()]
        if not candidates:
            return False
        last, oldest = min(candidates)
        if not probed and now - last < self.stale_after:
            return False
        del self._seen[oldest]
        return True

    def expire(self, now: float) -> list[RogueServer]:
        """Forget the servers (and MACs of them) not seen within the window; returns them."""
        gone = []
        for server_id, entry in list(self._seen.items()):
            for mac in [m for m, last in entry.macs.items() if now - last > self.window]:
                del entry.macs[mac]
                gone.append(RogueServer(server_id, mac))
            if not entry.macs:
                del self._seen[server_id]
        return sorted(gone)

    def servers(self) -> list[tuple[RogueServer, str]]:
        """The servers within the window, one per (server identifier, MAC), sorted, with
        when each server was first seen."""
        return sorted(
            (RogueServer(sid, mac), entry.since)
            for sid, entry in self._seen.items()
            for mac in entry.macs
        )

    def clear(self) -> list[RogueServer]:
        gone = [server for server, _ in self.servers()]
        self._seen.clear()
        return gone

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, server: object) -> bool:
        if not isinstance(server, RogueServer):
            return False
        entry = self._seen.get(server.server_id)
        return entry is not None and server.mac in entry.macs


class HandOffGate:
    """What the receive thread hands to the event loop: a server not handed off within
    `per_server` seconds (a new one, or a known one at most once a `per_server`), and at
    most `per_second` servers in any second whatever their number: a flood of forged
    answers (random server identifiers and source MACs) costs the event loop, which also
    renews the election, a bounded amount of work. Remembers the last `memory` servers."""

    def __init__(self, per_server: float = 1.0, per_second: int = 32, memory: int = 256) -> None:
        self.per_server = per_server
        self.per_second = per_second
        self.memory = memory
        self.refused = 0
        self._last: dict[RogueServer, float] = {}
        self._second = float("-inf")
        self._count = 0

    def admit(self, server: RogueServer, now: float) -> bool:
        if now - self._second >= 1.0:
            self._second, self._count = now, 0
        last = self._last.get(server)
        if self._count >= self.per_second or (last is not None and now - last < self.per_server):
            self.refused += 1
            return False
        self._count += 1
        self._last.pop(server, None)
        self._last[server] = now  # the most recent last (insertion order: oldest first)
        if len(self._last) > self.memory:
            del self._last[next(iter(self._last))]
        return True


class TokenBucket:
    """At most `burst` at once, `rate` a second after that (for the Events of every server
    together: each Event is an API write)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def jittered(interval: float, unit: float) -> float:
    """`interval` spread by +-10% (`unit` in [0, 1)), so that agents started together do
    not probe together."""
    return interval * (0.9 + 0.2 * unit)

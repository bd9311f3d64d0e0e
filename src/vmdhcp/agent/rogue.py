"""Rogue DHCP server detection, the decisions (pure: no sockets, no clock, no randomness of
its own; the edge is `rogue_watch.py`).

A foreign server is one whose server identifier (option 54) is not the pool's serverIP.
The serving agent sees foreign answers two ways: the answers to its own probe (a
DHCPDISCOVER from a probe MAC of its own, locally administered and never a VM's, with the
broadcast flag set so that every server answers to the whole segment), and the OFFERs and
ACKs of other servers to other clients that reach its NIC anyway (broadcast, or unicast to
a MAC the bridge has not learnt, which it floods). It never sends a REQUEST: a foreign
server's OFFER is only looked at, never taken.

A server is reported while it was seen in the last WINDOW_INTERVALS check intervals, at
most MAX_SERVERS at once (a flood of forged server identifiers cannot grow memory, the
metrics' label sets or the report without bound).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Container
from dataclasses import dataclass
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
PROBE_XIDS = 3
"""Answers to the last few probes count (a slow server answers after the next probe)."""
PROBE_VENDOR_CLASS = b"vm-dhcp-agent-rogue-probe"
"""Option 60 of the probe: a foreign server's log says who asked."""
PROBE_PARAMETERS = bytes((1, 3, 6, 51, 54))
ANSWER_TYPES = frozenset((int(MessageType.OFFER), int(MessageType.ACK)))

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
    """What an Ethernet frame to UDP port 68 says: a foreign server's OFFER or ACK (with
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
    if server is None:  # RFC 2131 requires option 54 in OFFER and ACK; the source will do
        source = IPv4Address(frame[_ETHERNET + 12 : _ETHERNET + 16])
        if int(source) == 0:
            return MALFORMED, None
        server = source
    if own_server is not None and server == own_server:
        return OWN, None
    if packet.chaddr[:6] == probe and packet.xid not in probe_xids:
        return UNMATCHED_PROBE, None
    return FOREIGN, RogueServer(str(server), frame[6:12].hex(":"))


@dataclass
class _Seen:
    since: str
    """Wall-clock time it was first seen (for people: Events, the report, the condition)."""
    last: float
    """Monotonic time it was last seen (for the window)."""


class RogueTracker:
    """The foreign servers seen within the window, each with when it was first seen."""

    def __init__(self, window: float, limit: int = MAX_SERVERS) -> None:
        self.window = window
        self.limit = limit
        self._seen: dict[RogueServer, _Seen] = {}

    def seen(self, server: RogueServer, now: float, wall: str) -> bool:
        """Note a sighting; True when the server is new (not within the window before).
        A new server beyond `limit` is not kept."""
        entry = self._seen.get(server)
        if entry is not None:
            entry.last = max(entry.last, now)
            return False
        if len(self._seen) >= self.limit:
            return False
        self._seen[server] = _Seen(wall, now)
        return True

    def expire(self, now: float) -> list[RogueServer]:
        """Forget the servers not seen within the window; returns them."""
        gone = [s for s, e in self._seen.items() if now - e.last > self.window]
        for server in gone:
            del self._seen[server]
        return sorted(gone)

    def servers(self) -> list[tuple[RogueServer, str]]:
        """The servers within the window, sorted, with when each was first seen."""
        return [(server, self._seen[server].since) for server in sorted(self._seen)]

    def clear(self) -> list[RogueServer]:
        gone = sorted(self._seen)
        self._seen.clear()
        return gone

    def __len__(self) -> int:
        return len(self._seen)


def jittered(interval: float, unit: float) -> float:
    """`interval` spread by +-10% (`unit` in [0, 1)), so that agents started together do
    not probe together."""
    return interval * (0.9 + 0.2 * unit)

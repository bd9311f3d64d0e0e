"""Replies already computed, reused for requests that differ only in their transaction id.

`respond()` is a pure function of the request, the client's lease, the pool's options and
where the request came from (it takes the time too, but static leases do not use it; a
test fails if that changes); the reply echoes the request's `xid` and is otherwise fully
determined by those inputs. So for one `PoolState` (one IPPool version) a request whose
bytes, apart from `xid` (bytes 4 to 8), equal an earlier one's, from the same source
address and port, gets the earlier reply with its own `xid` written in. The memo belongs
to one `PoolState`: a new IPPool version starts with an empty one, so nothing computed
from old options or leases is ever sent.

Who repeats requests byte for byte: clients that renew (RENEWING and REBINDING requests
carry the same fields each time, and the first transmission has `secs` 0; a test shows it
for udhcpc), clients retrying after a lost reply (those that do not count `secs` up), VMs
rebooting, and load generators. A miss costs one dictionary lookup; a hit skips parsing,
deciding and encoding (in the bench-dhcp run, CPU per DORA fell from 70 to 30 µs).

Only replies are remembered, and only those to clients the pool has a lease for (`known`):
a NAK or an INFORM's ACK to a MAC without one is computed each time, so strangers (any
number of made-up MACs) cannot fill the memo and push the pool's own clients out. Drops,
RELEASE and DECLINE go through `respond()` every time, so their counters and events stay
exact. Not thread-safe: one packet thread uses it.
"""

from __future__ import annotations

from collections.abc import Container

from vmdhcp.dhcp import Destination, L2Unicast, Packet

DEFAULT_CAPACITY = 4096
"""Replies kept per pool version: about 0.8 KB each for real clients' requests, 5.5 MB at
most when full (see `LARGEST_REMEMBERED`)."""
LARGEST_REMEMBERED = 576
"""Requests longer than this (the size every DHCP server must accept, RFC 2131) are
answered but not remembered: a client padding its requests cannot make entries larger."""

Outgoing = tuple[bytes, Destination, tuple[str, int] | None]
"""A reply ready for the transport: its bytes, where it goes, and the UDP address to
`sendto()` (None for a layer-2 unicast, which the transport frames itself). A plain tuple:
it is built for every packet, and a NamedTuple's constructor is a Python-level call."""

Remembered = tuple[Outgoing, int, int]
"""(reply, request message type, reply message type): the last two feed the counters."""


def udp_address(destination: Destination) -> tuple[str, int] | None:
    """Where a UDP socket sends `destination` (None: layer 2, see `L2Unicast`)."""
    if isinstance(destination, L2Unicast):
        return None
    return (str(destination.address), destination.port)


def _key(request: bytes, source: tuple[str, int]) -> tuple[bytes, tuple[str, int]]:
    """The request without its xid (bytes 4 to 8), and where it came from."""
    return request[:4] + request[8:], source


class ReplyMemo:
    """Bounded memo of (request without xid, source) -> reply; the oldest entry makes room
    when it is full. `capacity` 0 disables it."""

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self._capacity = capacity
        self._entries: dict[tuple[bytes, tuple[str, int]], Remembered] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def capacity(self) -> int:
        return self._capacity

    def recall(self, request: bytes, source: tuple[str, int]) -> Remembered | None:
        """The remembered reply to `request`, carrying the request's xid, or None."""
        found = self._entries.get(_key(request, source))
        if found is None:
            return None
        (payload, destination, address), request_type, reply_type = found
        payload = payload[:4] + request[4:8] + payload[8:]
        return (payload, destination, address), request_type, reply_type

    def remember(self, request: bytes, source: tuple[str, int], entry: Remembered) -> None:
        if not self._capacity or len(request) > LARGEST_REMEMBERED:
            return
        entries = self._entries
        if len(entries) >= self._capacity:
            del entries[next(iter(entries))]
        entries[_key(request, source)] = entry


def known(request: Packet, leases: Container[str]) -> bool:
    """Whether the request's MAC has a lease (its reply may be remembered); asked only for
    replies other than an OFFER (an OFFER is only ever made to a client with a lease)."""
    return request.chaddr[:6].hex(":") in leases

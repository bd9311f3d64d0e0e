"""DHCPDECLINE honoured at the agent's edge (RFC 2131 3.1.5 and 4.3.3): a client whose ARP
check found its offered address in use declines it; the agent stops offering that address
to that MAC at once and tells the controller, which sets the address aside and gives the
MAC another one (`vmdhcp.controller.declines`).

Nothing on a VM network is authenticated: a DECLINE may be forged by any host. So the
damage one can do is bounded here, before anything reaches the controller:

- only a MAC that has a lease, for exactly the address of its lease, is heard (the pure
  core already drops a DECLINE from a MAC without a lease, or naming another server);
  anything else is counted (`not_its_address`) and changes nothing;
- a MAC already withheld is not heard again (`repeat`) until its entry is resolved;
- at most `MAX_PENDING` entries at once per pool (`limit`): a flood of forged DECLINEs for
  many MACs cannot take more than that many VMs' answers away at once.

An entry (`mac`, `address`, `at`) is kept, its MAC withheld (the pool state answers as if
that MAC had no lease: DISCOVER unanswered, REQUEST naming us NAKed), and reported, until
the IPPool the agent watches no longer gives that address to that MAC (the controller
moved it), or for `HOLD_SECONDS` on this agent's monotonic clock, after which the address
is offered again: a VM whose conflict is gone takes it, one whose conflict stays declines it
again (the controller does not move a pinned address; it says so instead).

Only the serving agent answers, so only it hears DECLINEs; a new leader takes the entries
over from the stored report (within a second of starting to serve), and one that stops
serving drops its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vmdhcp.agent.config import AgentConfig
from vmdhcp.agent.events import EventPoster
from vmdhcp.agent.kubeapi import Connection, in_cluster_namespace
from vmdhcp.agent.leading import Leadership
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.report import DeclinedAddress, Reporter, ReportWriter, unfenced, utc_stamp
from vmdhcp.dhcp import Declined, Lease

log = logging.getLogger("vmdhcp.agent")

HOLD_SECONDS = 300.0
MAX_PENDING = 16
TICK_SECONDS = 1.0
ACK_WINDOW_SECONDS = 60.0
"""A DECLINE is heard only this long after this agent ACKed that address to that MAC (a
client declines right after the ACK, in SELECTING or INIT-REBOOT: RFC 2131 3.1.5)."""
MAX_ACKED = 4096
_NO_ADDRESS = bytes(4)


@dataclass(frozen=True)
class Pending:
    entry: DeclinedAddress
    since: float
    """This agent's monotonic clock."""


class Declines:
    def __init__(
        self,
        metrics: AgentMetrics,
        *,
        hold: float = HOLD_SECONDS,
        limit: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.hold = hold
        self.limit = limit
        self.clock = clock
        self.reporter: Reporter | None = None
        self._pending: dict[str, Pending] = {}
        self._acked: dict[str, tuple[bytes, float]] = {}
        """MAC -> the address this agent ACKed to it last, and when (its monotonic clock);
        written by the packet thread only."""
        self._lock = threading.Lock()

    def withheld(self) -> frozenset[str]:
        """The MACs not offered their lease now."""
        with self._lock:
            return frozenset(self._pending)

    def entries(self) -> tuple[DeclinedAddress, ...]:
        with self._lock:
            return tuple(sorted(p.entry for p in self._pending.values()))

    # -- the packet thread ---------------------------------------------------------------

    def acked(self, chaddr: bytes, yiaddr: bytes) -> None:
        """This agent ACKed `yiaddr` (4 bytes; zero for an INFORM's ACK: not noted) to the MAC
        of `chaddr` (its first 6 bytes) now."""
        if yiaddr == _NO_ADDRESS:
            return
        now = self.clock()
        acked = self._acked
        if len(acked) >= MAX_ACKED:  # keep the recent ones: a DECLINE follows within seconds
            for mac in [m for m, (_, at) in acked.items() if now - at > ACK_WINDOW_SECONDS]:
                del acked[mac]
            if len(acked) >= MAX_ACKED:
                acked.clear()
        acked[chaddr[:6].hex(":")] = (yiaddr, now)

    def declined(self, event: Declined, leases: Mapping[str, Lease]) -> bool:
        """A DECLINE the core decided on, against the leases it was decided with: whether it
        is honoured (the caller then withholds the MAC and publishes)."""
        lease = leases.get(event.mac)
        acked = self._acked.get(event.mac)
        with self._lock:
            if lease is None or lease.address != event.address:
                result = "not_its_address"
            elif (
                acked is None
                or acked[0] != event.address.packed
                or self.clock() - acked[1] > ACK_WINDOW_SECONDS
            ):
                result = "not_acked"
            elif event.mac in self._pending:
                result = "repeat"
            elif len(self._pending) >= self.limit:
                result = "limit"
            else:
                result = "withheld"
                entry = DeclinedAddress(event.mac, str(event.address), utc_stamp())
                self._pending[event.mac] = Pending(entry, self.clock())
            pending = len(self._pending)
        self.metrics.declines.labels(result).inc()
        self.metrics.declines_pending.set(pending)
        if result == "withheld":
            log.warning(
                "address conflict: client %s declined %s (the address answers on the wire): "
                "not offered to it any more; reported to the controller",
                event.mac,
                event.address,
            )
        else:
            log.info("decline of %s by %s not honoured: %s", event.address, event.mac, result)
        return result == "withheld"

    # -- the event loop ------------------------------------------------------------------

    def resolve(self, leases: Mapping[str, Lease] | None) -> bool:
        """Drop the entries the pool (`leases`, as loaded: None when there is no pool) no
        longer gives their address to their MAC, and those held for `hold`; whether any
        went."""
        now = self.clock()
        with self._lock:
            gone = [
                mac
                for mac, p in self._pending.items()
                if leases is None
                or leases.get(mac) is None
                or str(leases[mac].address) != p.entry.address
                or now - p.since >= self.hold
            ]
            for mac in gone:
                entry = self._pending.pop(mac).entry
                log.info("%s: no longer withheld", entry.describe())
            pending = len(self._pending)
        self.metrics.declines_pending.set(pending)
        return bool(gone)

    def adopt(self, stored: tuple[DeclinedAddress, ...]) -> None:
        """A new leader takes over what the previous one reported (then `resolve`d against
        its own pool): the hold starts again on this agent's clock."""
        now = self.clock()
        with self._lock:
            for entry in stored:
                if entry.mac not in self._pending and len(self._pending) < self.limit:
                    self._pending[entry.mac] = Pending(entry, now)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
        self.metrics.declines_pending.set(0)

    def publish(self) -> None:
        if self.reporter is not None:
            self.reporter.set_declined(self.entries())

    async def run(self, serving: Callable[[], bool], refresh: Callable[[], None]) -> None:
        """Follow leadership and the hold: `refresh` re-derives the served state after the
        entries changed (and publishes)."""
        active = False
        while True:
            try:
                now_serving = serving()
                if now_serving and not active:
                    active = True
                    stored = await self.reporter.resume() if self.reporter is not None else None
                    if stored is not None:
                        self.adopt(stored.declined)
                    refresh()
                elif not now_serving and active:
                    active = False
                    self.clear()
                    if self.reporter is not None:
                        self.reporter.stand_down()
                    refresh()
                elif active and self._held_too_long():
                    refresh()
            except Exception:  # the boundary: serving goes on
                log.exception("declined addresses: check failed; trying again")
            await asyncio.sleep(TICK_SECONDS)

    def _held_too_long(self) -> bool:
        now = self.clock()
        with self._lock:
            return any(now - p.since >= self.hold for p in self._pending.values())


def reporter_for(
    config: AgentConfig,
    api: Connection,
    events: EventPoster,
    leadership: Leadership | None = None,
) -> Reporter | None:
    """The report to the controller on the pool `events` posts on (a Lease in the agent's
    namespace), or None
    without a namespace to keep it in. Its writes are fenced on `leadership` (the agent's
    election; without one the one agent always writes)."""
    namespace = config.namespace or in_cluster_namespace()
    if not namespace:
        log.info(
            "declines and rogue dhcp servers go to metrics and Events only: no --namespace "
            "(POD_NAMESPACE) for the report to the controller"
        )
        return None
    time_left = unfenced if leadership is None else leadership_time_left(leadership)
    writer = ReportWriter(api, namespace, config.identity, time_left)
    interval = config.rogue_check_interval
    pool = (events.namespace, events.name)
    return Reporter(writer, pool, config.name, lambda: events.uid or "", interval)


def leadership_time_left(leadership: Leadership) -> Callable[[], float]:
    """Seconds before this leader's renew deadline (0 when not leading, or before the
    election started)."""

    def time_left() -> float:
        elector = leadership.elector
        return 0.0 if elector is None else elector.time_left()

    return time_left

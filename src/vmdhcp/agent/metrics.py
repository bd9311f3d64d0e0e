"""The agent's Prometheus metrics, in a private registry. Labels are bounded enums only
(message types and drop reasons), never MACs or addresses: per-lease detail is /leases.
The one exception is `vmdhcp_agent_rogue_server_info{server_id, mac}`: one series per
foreign DHCP server seen, at most `rogue.MAX_SERVERS`, removed when it is forgotten.

The per-packet counters and the reply latency histogram are plain integers that only the
packet thread writes, turned into metric families when /metrics is scraped. A
prometheus_client Counter takes a lock on every increment and a Histogram walks its
buckets under one: together about 3 µs per packet on the path that the bench-dhcp figures
measure. A reader on another thread may see a count one packet old, never a lost one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from vmdhcp.agent.rogue import FRAME_RESULTS
from vmdhcp.dhcp import DropReason, MessageType

MESSAGE_TYPES = {int(t): t.name.lower() for t in MessageType}
REPLY_TYPES = ("offer", "ack", "nak")
EXTRA_DROP_REASONS = ("not_ready", "internal_error", "standby")
"""Drops decided by the agent rather than the protocol core: no pool loaded yet, or a bug."""
DECLINE_RESULTS = ("withheld", "not_its_address", "not_acked", "repeat", "limit")
REPLY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Tally:
    """A counter with one writer thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class LatencyHistogram:
    """A histogram with one writer thread; `counts[i]` is per bucket, not cumulative."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class _PacketCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield _labelled(
            "vmdhcp_agent_packets_received",
            "DHCP packets received, by message type",
            "message_type",
            {
                **{MESSAGE_TYPES[t]: tally for t, tally in m.received_by_type.items()},
                "other": m.received_other,
            },
        )
        yield _labelled(
            "vmdhcp_agent_replies_sent",
            "DHCP replies sent, by message type (offer, ack, nak)",
            "message_type",
            {MESSAGE_TYPES[t]: tally for t, tally in m.replies_by_type.items()},
        )
        yield _labelled(
            "vmdhcp_agent_dropped",
            "Packets answered with silence, by reason",
            "reason",
            m.dropped_by_reason,
        )
        yield _labelled(
            "vmdhcp_agent_reply_cache",
            "Requests looked up among the replies already computed for this pool version",
            "result",
            {"hit": m.reply_cache_hits, "miss": m.reply_cache_misses},
        )
        yield _labelled(
            "vmdhcp_agent_rogue_frames",
            "Frames to the DHCP client port seen by the rogue server check, by what they were",
            "result",
            m.rogue_frames,
        )
        histogram = HistogramMetricFamily(
            "vmdhcp_agent_reply_duration_seconds",
            "Time from receiving a request to handing its reply to the kernel",
        )
        buckets = m.reply_seconds.cumulative()
        histogram.add_metric([], buckets, m.reply_seconds.total)
        yield histogram


def _labelled(name: str, documentation: str, label: str, tallies: Mapping[str, Tally]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, tally in tallies.items():
        family.add_metric([value], tally.value)
    return family


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received_by_type = {value: Tally() for value in MESSAGE_TYPES}
        self.received_other = Tally()
        self.replies_by_type = {
            value: Tally() for value, name in MESSAGE_TYPES.items() if name in REPLY_TYPES
        }
        self.dropped_by_reason = {
            reason: Tally() for reason in (*(r.value for r in DropReason), *EXTRA_DROP_REASONS)
        }
        self.reply_cache_hits = Tally()
        self.reply_cache_misses = Tally()
        self.reply_seconds = LatencyHistogram(REPLY_BUCKETS)
        self.rogue_frames = {result: Tally() for result in FRAME_RESULTS}
        """Written by the rogue check's receive thread only."""
        r.register(_PacketCollector(self))
        self.send_errors = Counter(
            "vmdhcp_agent_send_errors", "Replies the kernel refused to send", registry=r
        )
        self.leases = Gauge("vmdhcp_agent_leases", "Leases currently served", registry=r)
        self.ready = Gauge(
            "vmdhcp_agent_ready", "1 once the socket is bound and leases are loaded", registry=r
        )
        self.reloads = Counter(
            "vmdhcp_agent_pool_reloads",
            "IPPool versions applied (ok) or refused (error)",
            ["result"],
            registry=r,
        )
        for result in ("ok", "error"):
            self.reloads.labels(result)
        self.leader = Gauge(
            "vmdhcp_agent_leader",
            "1 while this agent serves its pool (it leads; always 1 without leader election)",
            registry=r,
        )
        self.leader_transitions = Counter(
            "vmdhcp_agent_leader_transitions",
            "Times this agent started or stopped serving its pool",
            registry=r,
        )

        self.rogue_servers = Gauge(
            "vmdhcp_agent_rogue_servers",
            "Other DHCP servers answering on the pool's network, seen in the last three "
            "rogue checks (by the serving agent)",
            registry=r,
        )
        self.rogue_server_info = Gauge(
            "vmdhcp_agent_rogue_server_info",
            "1 for each other DHCP server seen in the last three rogue checks: its server "
            "identifier and the MAC its answers came from",
            ["server_id", "mac"],
            registry=r,
        )
        self.declines = Counter(
            "vmdhcp_agent_declines",
            "DHCPDECLINEs by what the agent did: withheld (that MAC is no longer offered that "
            "address, and the controller is told), not_its_address, not_acked (no ACK of that "
            "address to that MAC in the last minute), repeat, limit",
            ["result"],
            registry=r,
        )
        for result in DECLINE_RESULTS:
            self.declines.labels(result)
        self.declines_pending = Gauge(
            "vmdhcp_agent_declines_pending",
            "Declined addresses reported to the controller and not yet moved away from the MAC",
            registry=r,
        )
        self.rogue_probes = Counter(
            "vmdhcp_agent_rogue_probes",
            "DHCPDISCOVER probes sent to find other DHCP servers",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

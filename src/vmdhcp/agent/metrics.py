"""The agent's Prometheus metrics, in a private registry. Labels are bounded enums only
(message types and drop reasons), never MACs or addresses: per-lease detail is /leases."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vmdhcp.dhcp import DropReason, MessageType

MESSAGE_TYPES = {int(t): t.name.lower() for t in MessageType}
EXTRA_DROP_REASONS = ("not_ready", "internal_error")
"""Drops decided by the agent rather than the protocol core: no pool loaded yet, or a bug."""


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "vmdhcp_agent_packets_received",
            "DHCP packets received, by message type",
            ["message_type"],
            registry=r,
        )
        self.replies = Counter(
            "vmdhcp_agent_replies_sent",
            "DHCP replies sent, by message type (offer, ack, nak)",
            ["message_type"],
            registry=r,
        )
        self.dropped = Counter(
            "vmdhcp_agent_dropped",
            "Packets answered with silence, by reason",
            ["reason"],
            registry=r,
        )
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
        self.reply_seconds = Histogram(
            "vmdhcp_agent_reply_duration_seconds",
            "Time from receiving a request to handing its reply to the kernel",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        )
        for result in ("ok", "error"):
            self.reloads.labels(result)
        # every label value is created up front (series start at 0), and the packet path
        # increments these children directly: labels() is a dict lookup under a lock
        self.received_by_type = {
            value: self.received.labels(name) for value, name in MESSAGE_TYPES.items()
        }
        self.received_other = self.received.labels("other")
        self.replies_by_type = {
            value: self.replies.labels(name)
            for value, name in MESSAGE_TYPES.items()
            if name in ("offer", "ack", "nak")
        }
        self.dropped_by_reason = {
            reason: self.dropped.labels(reason)
            for reason in (*(r.value for r in DropReason), *EXTRA_DROP_REASONS)
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The controller's metrics: upstream's names and labels exactly, in a private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ippool_used = Gauge(
            "vmdhcpcontroller_ippool_used",
            "Amount of IP addresses which are in use",
            ["ippool", "cidr", "network"],
            registry=self.registry,
        )
        self.ippool_available = Gauge(
            "vmdhcpcontroller_ippool_available",
            "Amount of IP addresses which are available",
            ["ippool", "cidr", "network"],
            registry=self.registry,
        )
        self.vmnetcfg_status = Gauge(
            "vmdhcpcontroller_vmnetcfg_status",
            "Status of the vmnetcfg objects",
            ["vmnetcfg", "network", "mac", "ip", "state"],
            registry=self.registry,
        )
        self.resyncs = Counter(
            "vmdhcpcontroller_resyncs",
            "Relists of everything watched, by result (ok, error)",
            ["result"],
            registry=self.registry,
        )
        self.resync_corrections = Counter(
            "vmdhcpcontroller_resync_corrections",
            "Changes a relist found that no watch had delivered (deleted, added, modified)",
            ["kind"],
            registry=self.registry,
        )
        for result in ("ok", "error"):
            self.resyncs.labels(result)
        for kind in ("deleted", "modified"):
            self.resync_corrections.labels(kind)
        self._pool_series: dict[str, tuple[str, str, str]] = {}
        self._vmnetcfg_series: dict[str, set[tuple[str, str, str, str, str]]] = {}

    def set_pool(self, ippool: str, cidr: str, network: str, used: int, available: int) -> None:
        labels = (ippool, cidr, network)
        old = self._pool_series.get(ippool)
        if old is not None and old != labels:
            self.remove_pool(ippool)
        self._pool_series[ippool] = labels
        self.ippool_used.labels(*labels).set(used)
        self.ippool_available.labels(*labels).set(available)

    def remove_pool(self, ippool: str) -> None:
        labels = self._pool_series.pop(ippool, None)
        if labels is not None:
            self.ippool_used.remove(*labels)
            self.ippool_available.remove(*labels)

    def set_vmnetcfg(self, vmnetcfg: str, entries: list[tuple[str, str, str, str]]) -> None:
        """Replace the series of one vmnetcfg: (network, mac, ip, state) each; the series
        of addresses it no longer holds go away (upstream leaks them)."""
        new = {(vmnetcfg, *entry) for entry in entries}
        old = self._vmnetcfg_series.get(vmnetcfg, set())
        for labels in old - new:
            self.vmnetcfg_status.remove(*labels)
        for labels in new:
            self.vmnetcfg_status.labels(*labels).set(1)
        if new:
            self._vmnetcfg_series[vmnetcfg] = new
        else:
            self._vmnetcfg_series.pop(vmnetcfg, None)

    def render(self) -> bytes:
        return generate_latest(self.registry)

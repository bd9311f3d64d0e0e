"""What `bench_scale.py` observes besides allocations: the controller's event loop (through
/healthz), admissions (dry-run creates, timed by the client; the controller's own admitted
writes, timed by the audit log), the IPPools' status counts, and the serving agent's leases."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from datetime import datetime
from typing import Any, cast

from bench.controller_observe import GROUP, NAMESPACE, VERSION, VMNETCFGS, resource_of
from bench.webhook_proc import cpu_seconds
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from tests.agentproc import AgentProcess

MARKS = ("EXCLUDED", "RESERVED")


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class StallProbe(threading.Thread):
    """GETs the controller's /healthz every `interval` (answered on its event loop) and
    keeps the longest response time: how long the loop went without serving a request."""

    def __init__(self, port: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="healthz-probe")
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.interval = interval
        self.stopping = threading.Event()
        self.longest = 0.0
        self.samples = 0
        self.failures = 0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            sent = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=300) as response:
                    response.read()
            except OSError:
                self.failures += 1
                continue
            self.samples += 1
            self.longest = max(self.longest, time.perf_counter() - sent)

    def stop(self) -> float:
        self.stopping.set()
        self.join(timeout=310)
        return self.longest


class LeasePoller(threading.Thread):
    """Polls an agent's /leases (Kubernetes mode, `--enable-cache-dump-api`) and records
    when each MAC is first served."""

    def __init__(self, agent: AgentProcess, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="lease-poller")
        self.agent = agent
        self.interval = interval
        self.stopping = threading.Event()
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                status, body = self.agent.get("/leases")
            except OSError:
                continue
            now = time.perf_counter()
            if status == 200 and isinstance(body, dict):
                for address in body:
                    self.seen.setdefault(address.lower(), now)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def probe_body(name: str, network: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "vmName": name,
            "networkConfigs": [{"networkName": network, "macAddress": address}],
        },
    }


def admission_probe(
    custom: CustomObjectsApi, bodies: list[dict[str, Any]], webhook_pid: int | None
) -> tuple[list[float], float, int]:
    """Dry-run creates, one after another (a dry run is admitted by the webhooks, and stored
    nowhere): latencies in seconds, the webhook's CPU per admission (s), refusals."""
    cpu = cpu_seconds(webhook_pid) if webhook_pid else 0.0
    latencies: list[float] = []
    refused = 0
    for body in bodies:
        sent = time.perf_counter()
        try:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, VMNETCFGS, body, dry_run="All"
            )
        except ApiException:
            refused += 1
        latencies.append(time.perf_counter() - sent)
    per = (cpu_seconds(webhook_pid) - cpu) / len(bodies) if webhook_pid else 0.0
    return latencies, per, refused


def admitted_writes(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The controller's creates and updates of vmnetcfgs (the requests the webhook admits;
    status writes are not registered with it): (received, latency) per request, from the
    audit log's timestamps, in order."""
    out: list[tuple[float, float]] = []
    for event in events:
        if event.get("verb") not in ("create", "update", "patch"):
            continue
        if resource_of(event) != VMNETCFGS:
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        done = datetime.fromisoformat(event["stageTimestamp"]).timestamp()
        out.append((received, done - received))
    out.sort()
    return out


def pool_counts(custom: CustomObjectsApi) -> dict[str, int]:
    """Allocations each IPPool's status lists (marks aside)."""
    pools = cast(
        dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "ippools")
    )
    counts: dict[str, int] = {}
    for pool in pools["items"]:
        allocated = ((pool.get("status") or {}).get("ipv4") or {}).get("allocated") or {}
        counts[pool["metadata"]["name"]] = sum(1 for m in allocated.values() if m not in MARKS)
    return counts

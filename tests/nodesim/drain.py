"""`kubectl drain`'s eviction loop for the simulator (the node is cordoned first)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.nodesim.scheduling import eviction_allowed

if TYPE_CHECKING:
    from tests.nodesim.simulator import NodeSimulator

RETRY_SECONDS = 1.0
"""kubectl drain retries a refused eviction every 5 s; a shorter wait only makes tests faster."""


def drain(sim: NodeSimulator, node: str, timeout: float) -> list[str]:
    policy = client.PolicyV1Api(sim.admin)
    deadline = time.monotonic() + timeout
    refusals: list[str] = []
    while True:
        pods = [
            sim.admin.sanitize_for_serialization(p)
            for p in sim.core.list_namespaced_pod(sim.namespace).items
        ]
        mine = [p for p in pods if p["spec"].get("nodeName") == node]
        if not mine:
            return refusals
        if time.monotonic() > deadline:
            names = [p["metadata"]["name"] for p in mine]
            raise TimeoutError(f"drain of {node}: pods still there after {timeout}s: {names}")
        budgets: list[Any] = [
            sim.admin.sanitize_for_serialization(b)
            for b in policy.list_namespaced_pod_disruption_budget(sim.namespace).items
        ]
        evicted = False
        for pod in mine:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            refusal = eviction_allowed(pod, budgets, pods)
            if refusal is not None:
                refusals.append(refusal)
                continue
            try:
                sim.core.delete_namespaced_pod(
                    pod["metadata"]["name"],
                    sim.namespace,
                    body=client.V1DeleteOptions(preconditions={"uid": pod["metadata"]["uid"]}),
                )
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
            evicted = True
            break  # one at a time: the next judged on the pods as they are then
        time.sleep(0.1 if evicted else RETRY_SECONDS)

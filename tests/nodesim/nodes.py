"""Simulated nodes and their Node objects: registration, the Ready condition, taints and
cordoning, as the kubelet and the node lifecycle controller write them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


@dataclass
class SimulatedNode:
    name: str
    labels: dict[str, str]
    crashed: bool = False
    cut_off: bool = False
    down_since: float | None = None
    """When its kubelet stopped reporting (crash or cut off), on our monotonic clock."""
    marked_down: bool = False

    @property
    def up(self) -> bool:
        return not self.crashed and not self.cut_off


def register(core: client.CoreV1Api, node: SimulatedNode) -> None:
    """The Node object, fresh (a leftover of an earlier run of that name replaced), Ready."""
    try:
        core.delete_node(node.name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    core.create_node({"metadata": {"name": node.name, "labels": node.labels}})
    report_node(core, node.name, up=True)


def report_node(core: client.CoreV1Api, name: str, up: bool) -> None:
    """Ready as its kubelet posts it, or Unknown as the node lifecycle controller marks it."""
    if up:
        condition = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    else:
        condition = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}
    core.patch_node_status(name, {"status": {"conditions": [condition]}})


def set_taints(
    core: client.CoreV1Api, name: str, add: Sequence[tuple[str, str]], drop: Sequence[str]
) -> None:
    """Taints (key, effect) added and the ones of keys `drop` removed, others kept."""
    current = core.read_node(name)
    replaced = set(drop) | {key for key, _ in add}
    taints = [
        {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
        for t in current.spec.taints or []
        if t.key not in replaced
    ]
    taints += [{"key": key, "effect": effect} for key, effect in add]
    core.patch_node(name, {"spec": {"taints": taints or None}})


def cordon(core: client.CoreV1Api, name: str, unschedulable: bool = True) -> None:
    """`kubectl cordon` (or uncordon): unschedulable, with the taint the API adds for it."""
    core.patch_node(name, {"spec": {"unschedulable": unschedulable or None}})
    if unschedulable:
        set_taints(core, name, [(UNSCHEDULABLE, "NoSchedule")], [])
    else:
        set_taints(core, name, [], [UNSCHEDULABLE])

"""What the simulator's scheduler and eviction stand-ins decide, on plain objects (pods,
nodes and PodDisruptionBudgets as the API server returns them, in their JSON shape).

The scheduler's rules are the subset of kube-scheduler's that agent pods use: required node
affinity (`nodeSelectorTerms`, ORed; `matchExpressions` ANDed; In, NotIn, Exists,
DoesNotExist), cordoned nodes and NoSchedule/NoExecute taints (unless tolerated) excluded,
required pod anti-affinity excluded and preferred pod anti-affinity scored by weight over
the topology key `kubernetes.io/hostname`. The eviction rule is the API server's: an
eviction is refused while it would leave fewer healthy (Ready) pods than a matching
budget's `minAvailable`; with `unhealthyPodEvictionPolicy: AlwaysAllow` a pod that is not
Ready may always go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Obj = Mapping[str, Any]
HOSTNAME = "kubernetes.io/hostname"


def _labels(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def expression_holds(expression: Obj, labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key"), expression.get("operator")
    values = expression.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unsupported operator {operator!r}")


def selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions); an empty one matches all."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(expression_holds(e, labels) for e in selector.get("matchExpressions") or [])


def node_affinity_holds(pod: Obj, node: Obj) -> bool:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    labels = _labels(node)
    return any(
        all(expression_holds(e, labels) for e in term.get("matchExpressions") or [])
        for term in required.get("nodeSelectorTerms") or []
    )


def _tolerated(taint: Obj, tolerations: Iterable[Obj]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            return True
        if toleration.get("key") != taint.get("key"):
            continue
        if toleration.get("operator") == "Exists" or toleration.get("value") == taint.get("value"):
            return True
    return False


def schedulable(pod: Obj, node: Obj) -> bool:
    """The node takes the pod: not cordoned, every blocking taint tolerated, affinity held."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
            taint, tolerations
        ):
            return False
    return node_affinity_holds(pod, node)


def _anti_affinity(pod: Obj) -> Mapping[str, Any]:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    return affinity.get("podAntiAffinity") or {}


def _same_host_pods(node: Obj, bound: Iterable[Obj], pod: Obj) -> list[Obj]:
    return [
        other
        for other in bound
        if (other.get("spec") or {}).get("nodeName") == _name(node) and _name(other) != _name(pod)
    ]


def choose_node(pod: Obj, nodes: Iterable[Obj], bound: Iterable[Obj]) -> str | None:
    """The node kube-scheduler would bind `pod` to among `nodes`, `bound` being the pods
    already placed; None when no node fits (the pod stays Pending)."""
    anti = _anti_affinity(pod)
    bound = list(bound)
    best: tuple[int, int, str] | None = None
    for node in nodes:
        if not schedulable(pod, node):
            continue
        neighbours = _same_host_pods(node, bound, pod)
        required = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
        if any(
            term.get("topologyKey") == HOSTNAME
            and any(
                selector_matches(term.get("labelSelector") or {}, _labels(p)) for p in neighbours
            )
            for term in required
        ):
            continue
        penalty = 0
        for preferred in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
            term = preferred.get("podAffinityTerm") or {}
            if term.get("topologyKey") != HOSTNAME:
                continue
            selector = term.get("labelSelector") or {}
            if any(selector_matches(selector, _labels(p)) for p in neighbours):
                penalty += int(preferred.get("weight") or 0)
        score = (penalty, len(neighbours), _name(node))
        if best is None or score < best:
            best = score
    return best[2] if best is not None else None


def _ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def eviction_allowed(pod: Obj, budgets: Iterable[Obj], pods: Iterable[Obj]) -> str | None:
    """None when the eviction of `pod` may go ahead, else why not (the API server's 429)."""
    pods = list(pods)
    for budget in budgets:
        spec = budget.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector_matches(selector, _labels(pod)):
            continue
        if not _ready(pod) and spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
            continue
        healthy = sum(1 for p in pods if selector_matches(selector, _labels(p)) and _ready(p))
        if "minAvailable" in spec:
            left = healthy - (1 if _ready(pod) else 0)
            if left < int(spec["minAvailable"]):
                return (
                    f"Cannot evict pod as it would violate the pod's disruption budget "
                    f"{_name(budget)}: {healthy} healthy, needs {spec['minAvailable']}"
                )
        elif "maxUnavailable" in spec:
            unavailable = sum(
                1 for p in pods if selector_matches(selector, _labels(p)) and not _ready(p)
            )
            if unavailable + (1 if _ready(pod) else 0) > int(spec["maxUnavailable"]):
                return f"Cannot evict pod: budget {_name(budget)} allows no more disruption"
    return None

"""Status conditions as upstream writes them (wrangler's GenericCondition), with the
`lastTransitionTime` upstream never sets (pure)."""

from __future__ import annotations

from typing import Any

Condition = dict[str, Any]


def set_condition(
    conditions: list[Condition],
    kind: str,
    status: bool,
    reason: str = "",
    message: str = "",
    *,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """A copy of `conditions` with `kind` set. Times move only when something changed:
    `lastUpdateTime` on any change, `lastTransitionTime` when the status flips;
    `observedGeneration` says which spec (metadata.generation) it was set from."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions]
    for condition in out:
        if condition.get("type") != kind:
            continue
        changed = (
            condition.get("status") != value
            or (condition.get("reason") or "") != reason
            or (condition.get("message") or "") != message
        )
        if condition.get("status") != value:
            condition["lastTransitionTime"] = now
        if changed:
            condition.update(status=value, reason=reason, message=message, lastUpdateTime=now)
        condition.setdefault("lastTransitionTime", now)
        if generation is not None:
            condition["observedGeneration"] = generation
        return out
    added: Condition = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }
    if generation is not None:
        added["observedGeneration"] = generation
    out.append(added)
    return out


def error(message: str) -> tuple[bool, str, str]:
    """Upstream's failure shape: False, reason `Error`, the message."""
    return False, "Error", message


def ok(reason: str) -> tuple[bool, str, str]:
    """True, with a CamelCase reason (upstream leaves it empty; conventions ask for one)."""
    return True, reason, ""


def flag(value: bool, when_true: str, when_false: str) -> tuple[bool, str, str]:
    """A condition that is a plain yes/no (Stopped, Disabled), with a reason either way."""
    return value, when_true if value else when_false, ""

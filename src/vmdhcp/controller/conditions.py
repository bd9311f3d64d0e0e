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
) -> list[Condition]:
    """A copy of `conditions` with `kind` set. Times move only when something changed:
    `lastUpdateTime` on any change, `lastTransitionTime` when the status flips."""
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
        return out
    out.append(
        {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
    )
    return out


def error(message: str) -> tuple[bool, str, str]:
    """Upstream's failure shape: False, reason `Error`, the message."""
    return False, "Error", message


OK: tuple[bool, str, str] = (True, "", "")

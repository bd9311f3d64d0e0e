"""The one error the validators raise, worded as upstream's webhook words its refusals."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from vmdhcp.errors import VmdhcpError


class Operation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class ValidationError(VmdhcpError, ValueError):
    """An object the webhook refuses (and the controller will not act on).

    `str(error)` is upstream's wording, `cannot <operation> <kind> <namespace>/<name>
    because <reason>`; several reasons are joined with `; `, in the order upstream checks
    them. `reasons` keeps them apart.
    """

    def __init__(
        self,
        operation: Operation,
        kind: str,
        namespace: str,
        name: str,
        reasons: Iterable[str],
    ) -> None:
        self.operation = operation
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.reasons = tuple(reasons)
        super().__init__(
            f"cannot {operation} {kind} {namespace}/{name} because {'; '.join(self.reasons)}"
        )


def raise_if(
    reasons: list[str], operation: Operation, kind: str, namespace: str, name: str
) -> None:
    if reasons:
        raise ValidationError(operation, kind, namespace, name, reasons)


def new_reasons(new: list[str], old: list[str] | None) -> list[str]:
    """The reasons of `new` that `old` did not have already (validation ratcheting).

    An update is refused only for problems it introduces, so an object that became
    invalid under newer rules (or whose surroundings changed, such as a deleted NAD) can
    still get its labels, finalizers and other unrelated changes.
    """
    if old is None:
        return new
    known = set(old)
    return [reason for reason in new if reason not in known]

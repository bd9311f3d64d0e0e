"""An in-memory API server for the controller's unit tests: `FakeKube` answers the calls
`vmdhcp.k8s.Kube` makes, with the semantics the reconcilers rely on (uids, opaque
resourceVersions, merge patches with a resourceVersion precondition, the status
subresource, uid preconditions on deletes, finalizers, the write gate), logs every write
the controller makes (`calls`) and every change a watch would deliver (`changes`).

Tests act as the other writers (users, the garbage collector, the kubelet) through the
`user_*` methods: they change the objects and log the changes, but are not the
controller's writes (no gate, not counted, not in `calls`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

from vmdhcp.controller.context import PODS, RESOURCES
from vmdhcp.errors import ApiError
from vmdhcp.k8s import Kube

Body = dict[str, Any]
Ref = tuple[str, str]
POD_RESOURCE = ("", "v1", "pods")
KIND_OF = {resource: kind for kind, resource in RESOURCES.items()} | {POD_RESOURCE: PODS}
PDBS, LEASES = "pdb", "lease"
"""Kinds the controller does not watch: agent replicas' PodDisruptionBudgets and Leases."""
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


class Call(NamedTuple):
    """One write the controller made: verb, kind, (namespace, name), body sent."""

    verb: str
    kind: str
    ref: Ref
    body: Body | None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches(labels: dict[str, str], selector: str) -> bool:
    pairs = (term.split("=", 1) for term in selector.split(",") if term)
    return all(labels.get(key) == value for key, value in pairs)


class FakeKube(Kube):
    def __init__(self) -> None:  # no client: nothing of Kube's own is used
        self.may_write: Callable[[], bool] = lambda: True
        self.writes = 0
        kinds = (*KIND_OF.values(), PDBS, LEASES)
        self.objects: dict[str, dict[Ref, Body]] = {kind: {} for kind in kinds}
        self.events: list[Body] = []
        """Kubernetes Events posted (create_event)."""
        self.calls: list[Call] = []
        self.changes: list[tuple[str, str, Body]] = []
        """(event type, kind, object) as a watch would deliver them, oldest first."""
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # -- what a test uses -----------------------------------------------------------------

    def get(self, kind: str, ref: Ref) -> Body | None:
        body = self.objects[kind].get(ref)
        return copy.deepcopy(body) if body is not None else None

    def take_changes(self) -> list[tuple[str, str, Body]]:
        changes, self.changes = self.changes, []
        return changes

    def event_reasons(self) -> list[str]:
        return [str(event["reason"]) for event in self.events]

    def user_create(self, kind: str, body: Body) -> Body:
        return self._create(kind, body)

    def user_patch(self, kind: str, ref: Ref, patch: Body) -> Body:
        return self._patch(kind, ref, patch, status=False)

    def user_patch_status(self, kind: str, ref: Ref, status: Body) -> Body:
        return self._patch(kind, ref, {"status": status}, status=True)

    def user_delete(self, kind: str, ref: Ref) -> None:
        self._delete(kind, ref, None)

    # -- the server's rules ---------------------------------------------------------------

    def _changed(self, event_type: str, kind: str, body: Body) -> Body:
        if kind not in (PDBS, LEASES):  # the controller watches neither
            self.changes.append((event_type, kind, copy.deepcopy(body)))
        return copy.deepcopy(body)

    def _find(self, kind: str, ref: Ref) -> Body:
        body = self.objects[kind].get(ref)
        if body is None:
            raise ApiError(404, "NotFound", f'{kind} "{ref[1]}" not found')
        return body

    def _create(self, kind: str, body: Body) -> Body:
        m = body.get("metadata") or {}
        ref = (str(m.get("namespace") or ""), str(m["name"]))
        if ref in self.objects[kind]:
            raise ApiError(409, "AlreadyExists", f'{kind} "{ref[1]}" already exists')
        new = {key: copy.deepcopy(value) for key, value in body.items() if key != "status"}
        new["metadata"] = {k: v for k, v in copy.deepcopy(m).items() if k not in SERVER_FIELDS}
        new["metadata"].update(
            uid=f"uid-{next(self._uids)}",
            resourceVersion=str(next(self._versions)),
            generation=1,
            creationTimestamp="2024-01-01T00:00:00Z",
        )
        self.objects[kind][ref] = new
        return self._changed("ADDED", kind, new)

    def _patch(self, kind: str, ref: Ref, patch: Body, *, status: bool) -> Body:
        current = copy.deepcopy(self._find(kind, ref))
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        if status:  # the status subresource: nothing but the status changes
            updated = {**current, "status": merge_patch(current.get("status"), patch["status"])}
        else:  # the main resource: never the status, never the server's metadata
            allowed = {k: v for k, v in patch.items() if k not in ("status", "metadata")}
            owned = {
                k: v for k, v in (patch.get("metadata") or {}).items() if k not in SERVER_FIELDS
            }
            updated = merge_patch(current, {**allowed, "metadata": owned})
            if updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        if updated == current:  # a write that changes nothing changes nothing
            return copy.deepcopy(current)
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        m = updated["metadata"]
        if m.get("deletionTimestamp") and not m.get("finalizers"):
            del self.objects[kind][ref]
            return self._changed("DELETED", kind, updated)
        self.objects[kind][ref] = updated
        return self._changed("MODIFIED", kind, updated)

    def _delete(self, kind: str, ref: Ref, uid: str | None) -> None:
        current = self._find(kind, ref)
        m = current["metadata"]
        if uid is not None and uid != m["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}")
        if not m.get("finalizers"):
            del self.objects[kind][ref]
            self._changed("DELETED", kind, current)
        elif not m.get("deletionTimestamp"):
            m.update(deletionTimestamp="2024-01-01T00:00:01Z")
            m.update(resourceVersion=str(next(self._versions)))
            self._changed("MODIFIED", kind, current)

    def _write(self, verb: str, kind: str, ref: Ref, body: Body | None) -> None:
        """Kube._call's gate and count, and the log of the controller's writes."""
        if not self.may_write():
            raise ApiError(0, "NotLeader", "not leading: the write was not sent")
        self.writes += 1
        self.calls.append(Call(verb, kind, ref, copy.deepcopy(body)))

    # -- Kube's API ------------------------------------------------------------------------

    async def list_objects(self, group: str, version: str, plural: str) -> dict[str, Any]:
        items = self.objects[KIND_OF[(group, version, plural)]].values()
        return {"items": copy.deepcopy(list(items)), "metadata": {"resourceVersion": "0"}}

    async def get_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        return copy.deepcopy(self._find(KIND_OF[(group, version, plural)], (namespace, name)))

    async def create_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        kind = KIND_OF[(group, version, plural)]
        self._write("create", kind, (namespace, body["metadata"]["name"]), body)
        return self._create(
            kind, {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        )

    async def patch_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        kind = KIND_OF[(group, version, plural)]
        self._write("patch", kind, (namespace, name), body)
        return self._patch(kind, (namespace, name), body, status=False)

    async def patch_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        kind = KIND_OF[(group, version, plural)]
        self._write("patch_status", kind, (namespace, name), body)
        return self._patch(kind, (namespace, name), body, status=True)

    async def delete_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        uid: str | None = None,
    ) -> None:
        kind = KIND_OF[(group, version, plural)]
        self._write("delete", kind, (namespace, name), {"preconditions": {"uid": uid}})
        self._delete(kind, (namespace, name), uid)

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._write("create", PODS, (namespace, body["metadata"]["name"]), body)
        return self._create(
            PODS, {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        )

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._find(PODS, (namespace, name)))

    async def list_pods(self, namespace: str, label_selector: str) -> dict[str, Any]:
        items = [
            copy.deepcopy(pod)
            for (pod_namespace, _), pod in self.objects[PODS].items()
            if pod_namespace == namespace
            and _matches(pod["metadata"].get("labels") or {}, label_selector)
        ]
        return {"items": items, "metadata": {"resourceVersion": "0"}}

    async def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._write("delete", PODS, (namespace, name), {"preconditions": {"uid": uid}})
        self._delete(PODS, (namespace, name), uid)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self._write("create", "event", (namespace, ""), body)
        self.events.append(copy.deepcopy(body))

    async def create_pdb(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._write("create", PDBS, (namespace, body["metadata"]["name"]), body)
        return self._create(
            PDBS, {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        )

    async def read_pdb(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._find(PDBS, (namespace, name)))

    async def delete_pdb(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._write("delete", PDBS, (namespace, name), {"preconditions": {"uid": uid}})
        self._delete(PDBS, (namespace, name), uid)

    async def read_agent_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._find(LEASES, (namespace, name)))

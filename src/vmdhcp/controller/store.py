"""The controller's picture of the watched objects (pure, no I/O).

Rules it keeps, so that no distributed rule depends on the caller remembering it:

- resourceVersion is opaque: it is compared for equality only, never ordered.
- Watch events of one kind arrive in order, so the last event of an object wins.
- A deletion is final for that uid: a late event or write answer of a deleted object never
  brings it back (uids are never reused). Those tombstones are bounded.
- A write's answer is taken only while the store still holds the very version the write
  was computed from: it is then certainly newer. Otherwise the watch has moved on and
  will bring the truth itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

Body = dict[str, Any]
Ref = tuple[str, str]  # (namespace, name)

TOMBSTONES = 10_000
"""Deleted uids remembered (about 1 MB); far more than can be in flight at once."""


def meta(body: Body | None) -> dict[str, Any]:
    result: dict[str, Any] = (body or {}).get("metadata") or {}
    return result


def ref_of(body: Body) -> Ref:
    m = meta(body)
    return (m.get("namespace") or "", m.get("name") or "")


def rv(body: Body | None) -> str:
    return str(meta(body).get("resourceVersion") or "")


def uid(body: Body | None) -> str:
    return str(meta(body).get("uid") or "")


class ObjectStore:
    def __init__(self, kinds: Iterable[str], tombstones: int = TOMBSTONES) -> None:
        self._objects: dict[str, dict[Ref, Body]] = {kind: {} for kind in kinds}
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._limit = tombstones

    # -- reading ---------------------------------------------------------------------------

    def get(self, kind: str, ref: Ref) -> Body | None:
        return self._objects[kind].get(ref)

    def items(self, kind: str) -> list[tuple[Ref, Body]]:
        return list(self._objects[kind].items())

    def refs(self, kind: str) -> list[Ref]:
        return list(self._objects[kind])

    def count(self, kind: str) -> int:
        return len(self._objects[kind])

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def is_gone(self, object_uid: str) -> bool:
        return bool(object_uid) and object_uid in self._gone

    # -- the watch -------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Body) -> bool:
        """Apply one watch event (type None: an object of a listing); False when it was
        ignored (a late event of an object whose deletion was already seen)."""
        ref, object_uid = ref_of(body), uid(body)
        cache = self._objects[kind]
        if event_type == "DELETED":
            if object_uid:
                self._bury(object_uid)
            current = cache.get(ref)
            if current is not None and (not object_uid or uid(current) in ("", object_uid)):
                del cache[ref]
            return True
        if self.is_gone(object_uid):
            return False
        cache[ref] = body
        return True

    def remember(self, kind: str, body: Body, based_on: Body | None) -> bool:
        """Take a write's answer if the store still holds `based_on` (the version the
        write was computed from; None for a create: only while nothing is cached)."""
        ref, object_uid = ref_of(body), uid(body)
        if self.is_gone(object_uid):
            return False
        current = self._objects[kind].get(ref)
        if based_on is None:
            if current is not None:
                return False
        elif current is None or uid(current) != uid(based_on) or rv(current) != rv(based_on):
            return False
        self._objects[kind][ref] = body
        return True

    def drop(self, kind: str, body: Body) -> None:
        """We asked for its deletion: forget it now, but do not bury it, since with
        finalizers or a grace period it lives on for a while (the watch will say)."""
        current = self._objects[kind].get(ref_of(body))
        if current is not None and uid(current) == uid(body):
            del self._objects[kind][ref_of(body)]

    def _bury(self, object_uid: str) -> None:
        self._gone[object_uid] = None
        self._gone.move_to_end(object_uid)
        while len(self._gone) > self._limit:
            self._gone.popitem(last=False)

"""The safety net under the watches: a fresh list compared with the store, every
difference confirmed by reading that one object, since resourceVersions cannot be ordered.

kopf resumes its watches from their last resourceVersion, and relists after 410 Gone
without saying what vanished meanwhile; a watch may also simply break. A list alone cannot
tell "deleted while unwatched" from "created after the list was taken" (the watch may be
ahead of the list), so each object the list and the store disagree on is read again: the
read is the truth at that moment, and the watch carries on from there. Only a disagreement
seen in two rounds in a row is read: one seen once may be an event on its way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from vmdhcp.controller.store import Body, ObjectStore, Ref, ref_of, rv, uid
from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.controller")

MAX_READS = 500
"""Objects read again per kind and round; more differences wait for the next round."""

Read = Callable[[Ref], Awaitable[Body | None]]
Observe = Callable[[str, Body], None]
"""(event type, object), as a watch would have delivered it."""


def differences(store: ObjectStore, kind: str, listing: Body) -> list[Ref]:
    """Objects the list and the store disagree on (absent from one, another uid, another
    version), but not objects whose deletion the watch has already delivered."""
    listed = {ref_of(body): body for body in listing.get("items") or []}
    found = []
    for ref, cached in store.items(kind):
        body = listed.get(ref)
        if body is None or uid(body) != uid(cached) or rv(body) != rv(cached):
            found.append(ref)
    for ref, body in listed.items():
        if store.get(kind, ref) is None and not store.is_gone(uid(body)):
            found.append(ref)
    return found


def _state(store: ObjectStore, kind: str, ref: Ref) -> str:
    body = store.get(kind, ref)
    return f"{uid(body)}/{rv(body)}" if body is not None else ""


async def correct(
    store: ObjectStore,
    kind: str,
    listing: Body,
    read: Read,
    observe: Observe,
    suspects: dict[Ref, str] | None,
) -> tuple[dict[str, int], dict[Ref, str]]:
    """Bring the store in line with the API server where `listing` disagrees with it.
    With `suspects` (a periodic resync), only where the previous round disagreed too and
    the store has not moved since: a watch event in flight while a list was taken makes
    a disagreement that the watch itself settles within moments, which must not count as
    a correction. None (a relist after the watch expired): everything, now. Returns the
    corrections made, by kind (deleted, added, modified), and the new suspects."""
    made = {"deleted": 0, "added": 0, "modified": 0}
    found = differences(store, kind, listing)
    confirmed = [
        ref
        for ref in found
        if suspects is None or suspects.get(ref, "-") == _state(store, kind, ref)
    ]
    if len(confirmed) > MAX_READS:
        log.info("resync: %d %s objects differ; reading %d now", len(confirmed), kind, MAX_READS)
    read_now = set(confirmed[:MAX_READS])
    suspected = {ref: _state(store, kind, ref) for ref in found if ref not in read_now}
    for ref in confirmed[:MAX_READS]:
        try:
            current = await read(ref)
        except ApiError as exc:
            log.warning("resync: cannot read %s %s/%s: %s", kind, *ref, exc)
            continue
        cached = store.get(kind, ref)
        if cached is not None and (current is None or uid(current) != uid(cached)):
            log.warning("resync: %s %s/%s was deleted unwatched", kind, *ref)
            observe("DELETED", cached)
            made["deleted"] += 1
            cached = None
        if current is None or store.is_gone(uid(current)):
            continue
        if cached is None:
            log.info("resync: %s %s/%s appeared unwatched", kind, *ref)
            made["added"] += 1
        elif rv(current) != rv(cached):
            log.info("resync: %s %s/%s changed unwatched", kind, *ref)
            made["modified"] += 1
        else:
            continue
        observe("MODIFIED", current)
    return made, suspected

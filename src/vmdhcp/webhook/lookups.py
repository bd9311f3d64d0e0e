"""Reads from the API server: the caches' paged listings (`caches`), and single objects
for confirming a refusal (`views.confirm`: a GET is a consistent read, so a refusal never
rests on a cache that is a moment behind). Admissions are answered from the caches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

from vmdhcp import k8s
from vmdhcp.api.constants import NAD_GROUP, NAD_PLURAL, NAD_VERSION

Body = dict[str, Any]

PAGE_SIZE = 500
"""Objects per page of a listing: the listing is indexed page by page, never held whole."""


async def get_object(
    kube: k8s.Kube, group: str, version: str, plural: str, namespace: str, name: str
) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    if not name:
        return None
    try:
        return await kube.get_object(group, version, namespace, plural, name)
    except k8s.ApiError as exc:
        if exc.not_found:
            return None
        raise


async def nad_labels(kube: k8s.Kube, namespace: str, name: str) -> dict[str, str] | None:
    """The labels of a NetworkAttachmentDefinition, or None when it does not exist."""
    nad = await get_object(kube, NAD_GROUP, NAD_VERSION, NAD_PLURAL, namespace, name)
    if nad is None:
        return None
    return dict(nad.get("metadata", {}).get("labels") or {})


def paged_lister(kube: k8s.Kube, group: str, version: str, plural: str) -> Callable[[], Body]:
    """A blocking, paged list of every object of a custom resource. The listing's `items`
    is an iterator that fetches the later pages (all at the first page's resourceVersion)
    as it is consumed; a failure there raises from the consumer, which keeps what it had."""

    def page(token: str | None) -> Body:
        return cast(
            Body,
            kube.custom.list_cluster_custom_object(
                group, version, plural, limit=PAGE_SIZE, _continue=token, _request_timeout=60
            ),
        )

    def list_once() -> Body:
        first = page(None)

        def items(current: list[Body]) -> Iterator[Body]:
            while current:
                body = current.pop()
                yield from body.get("items") or ()
                token = (body.get("metadata") or {}).get("continue")
                if token:
                    current.append(page(token))

        version = (first.get("metadata") or {}).get("resourceVersion")
        return {"metadata": {"resourceVersion": version}, "items": items([first])}

    return list_once


def plain(exc: Exception) -> Exception:
    """The `kubernetes` library's ApiException as an `ApiError` whose first line is the API
    server's message (`... is forbidden: User "x" cannot list ...`), status kept (a 410
    still means "list again" to `list_then_watch`); anything else as it is."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if not isinstance(status, int) or not hasattr(exc, "reason"):
        return exc
    try:
        message = str(json.loads(body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return k8s.ApiError(status, str(exc.reason or ""), message)


def translated(list_once: Callable[[], Body]) -> Callable[[], Body]:
    def call() -> Body:
        try:
            return list_once()
        except Exception as exc:
            raise plain(exc) from exc

    return call

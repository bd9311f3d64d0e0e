"""Blocking list and watch callables for `vmdhcp.watching.list_then_watch`, over the
`kubernetes` client: API dicts out, resourceVersions in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from kubernetes import watch

if TYPE_CHECKING:
    from vmdhcp.k8s import Kube


def watch_stream(list_function: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Events of a watch (`{"type": ..., "object": ...}`), ending at the server's timeout."""
    return cast(Iterator[dict[str, Any]], watch.Watch().stream(list_function, *args, **kwargs))


def _namespaced_lister(
    kube: Kube, list_function: Any, namespace: str, label_selector: str
) -> Callable[[], dict[str, Any]]:
    def list_once() -> dict[str, Any]:
        found = list_function(namespace, label_selector=label_selector, _request_timeout=30)
        result: dict[str, Any] = kube.api.sanitize_for_serialization(found)
        return result

    return list_once


def pod_lister(kube: Kube, namespace: str, label_selector: str) -> Callable[[], dict[str, Any]]:
    """A blocking list of the pods of `namespace` with `label_selector`, as an API dict."""
    return _namespaced_lister(kube, kube.core.list_namespaced_pod, namespace, label_selector)


def _watcher(
    list_function: Any, *args: Any, seconds: int, **kwargs: Any
) -> Callable[[str], Iterator[tuple[str, dict[str, Any]]]]:
    """A blocking watch with `list_function(*args, **kwargs)` from a resourceVersion:
    (type, API dict) pairs, for `list_then_watch`. BOOKMARK events are asked for and passed
    through (raw: they move the resourceVersion on). The library's own resuming is off (a
    timeout is given): an expired resourceVersion raises its `ApiException` with status
    410, which `list_then_watch` takes for "relist"."""

    def watch_from(resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for event in watch_stream(
            list_function,
            *args,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _request_timeout=seconds + 15,
            **kwargs,
        ):
            yield event.get("type") or "", event["raw_object"]

    return watch_from


def pod_watcher(
    kube: Kube, namespace: str, label_selector: str, seconds: int
) -> Callable[[str], Iterator[tuple[str, dict[str, Any]]]]:
    """A blocking watch of those pods (see `_watcher`)."""
    return _watcher(
        kube.core.list_namespaced_pod, namespace, seconds=seconds, label_selector=label_selector
    )


def lease_lister(kube: Kube, namespace: str, label_selector: str) -> Callable[[], dict[str, Any]]:
    """A blocking list of the Leases of `namespace` with `label_selector`, as an API dict."""
    return _namespaced_lister(
        kube, kube.coordination.list_namespaced_lease, namespace, label_selector
    )


def lease_watcher(
    kube: Kube, namespace: str, label_selector: str, seconds: int
) -> Callable[[str], Iterator[tuple[str, dict[str, Any]]]]:
    """A blocking watch of those Leases (see `_watcher`)."""
    return _watcher(
        kube.coordination.list_namespaced_lease,
        namespace,
        seconds=seconds,
        label_selector=label_selector,
    )


def custom_object_lister(
    kube: Kube, group: str, version: str, plural: str
) -> Callable[[], dict[str, Any]]:
    """A blocking list of every object of a custom resource, cluster-wide, as an API dict."""

    def list_once() -> dict[str, Any]:
        return cast(
            dict[str, Any],
            kube.custom.list_cluster_custom_object(group, version, plural, _request_timeout=60),
        )

    return list_once


def custom_object_watcher(
    kube: Kube, group: str, version: str, plural: str, seconds: int
) -> Callable[[str], Iterator[tuple[str, dict[str, Any]]]]:
    """A blocking watch of those objects (see `_watcher`)."""
    return _watcher(kube.custom.list_cluster_custom_object, group, version, plural, seconds=seconds)

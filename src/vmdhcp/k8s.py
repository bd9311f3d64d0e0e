"""The one module that imports the `kubernetes` client library (it is untyped); the rest
of the package talks to the API server through these few typed functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config, watch


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A client for `kubeconfig` when the file exists, else the in-cluster configuration
    (upstream's rule); raises the client's ConfigException when neither works."""
    if kubeconfig and Path(kubeconfig).exists():
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    config.load_incluster_config()
    return client.ApiClient()


def custom_objects(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def core_v1(api: Any) -> Any:
    return client.CoreV1Api(api)


def watch_stream(list_function: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Events of a watch (`{"type": ..., "object": ...}`), ending at the server's timeout."""
    return cast(Iterator[dict[str, Any]], watch.Watch().stream(list_function, *args, **kwargs))


def core_event(
    *,
    namespace: str,
    generate_name: str,
    involved: dict[str, str | None],
    reason: str,
    message: str,
    kind: str,
    component: str,
    timestamp: Any,
) -> Any:
    """A core/v1 Event body."""
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=generate_name, namespace=namespace),
        involved_object=client.V1ObjectReference(**involved),
        reason=reason,
        message=message,
        type=kind,
        source=client.V1EventSource(component=component),
        first_timestamp=timestamp,
        last_timestamp=timestamp,
        count=1,
        reporting_component=component,
    )

"""The one package that imports the `kubernetes` client library (it is untyped); the rest
of vmdhcp talks to the API server through these few typed functions: `Kube` here, the
blocking list and watch callables for `vmdhcp.watching` in `listing`."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from vmdhcp.errors import ApiError
from vmdhcp.k8s.listing import (
    custom_object_lister,
    custom_object_watcher,
    lease_lister,
    lease_watcher,
    pod_lister,
    pod_watcher,
    watch_stream,
)

__all__ = [
    "ApiError",
    "Kube",
    "custom_object_lister",
    "custom_object_watcher",
    "lease_lister",
    "lease_watcher",
    "pod_lister",
    "pod_watcher",
    "watch_stream",
]


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A client for `kubeconfig`, else (no path given) the in-cluster configuration;
    raises the client's ConfigException when neither works. A path given that does not
    exist is that error, named (upstream fell back to in-cluster and failed with "Service
    host/port is not set")."""
    if kubeconfig:
        if not Path(kubeconfig).exists():
            raise config.ConfigException(f"--kubeconfig {kubeconfig}: no such file")
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    config.load_incluster_config()
    return client.ApiClient()


# -- an asyncio-friendly adapter for the controller ---------------------------------------


def _translate(exc: Exception) -> ApiError:
    if isinstance(exc, ApiException):
        message, reason = "", str(exc.reason or "")
        try:
            body = json.loads(exc.body or "{}")
            message = str(body.get("message", ""))
            reason = str(body.get("reason", reason))
        except (ValueError, AttributeError):
            message = str(exc.body or "")
        return ApiError(int(exc.status or 0), reason, message)
    return ApiError(0, type(exc).__name__, str(exc))


REQUEST_SECONDS = 30.0
LEASE_REQUEST_SECONDS = 5.0
"""A lease call that takes longer is given up (the elector tries again every 2 s)."""


def tuned_api_client(kubeconfig: str | None, context: str | None, pool_size: int) -> Any:
    """An ApiClient whose connection pool matches the number of threads that share it."""
    api = api_client(kubeconfig, context)
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = pool_size
    return api


class Kube:
    """Blocking client calls run in threads; every failure becomes an `ApiError`."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.may_write: Callable[[], bool] = lambda: True
        """Asked before every write but the lease's own: a leader that can no longer prove
        it leads must not write (client-go checks leadership before acting, not only at
        start). Set by the controller to its elector's check."""
        self.write_budget: Callable[[], float] = lambda: REQUEST_SECONDS
        """Seconds such a write may take at most (the controller: the time it may still
        lead), so that none lands after a standby may have taken over."""
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.extensions = client.ApiextensionsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.writes = 0
        """API writes made (create, patch, replace, delete), for the benchmark."""
        self._in_flight = 0
        self._lock = threading.Lock()
        # the lease's calls never wait behind the workers' (a full pool would end a leader)
        self._lease_threads = ThreadPoolExecutor(4, thread_name_prefix="lease")

    @property
    def writes_in_flight(self) -> int:
        """Gated writes whose HTTP request has not returned (its thread may outlive a
        cancelled caller)."""
        return self._in_flight

    async def writes_settled(self, within: float) -> bool:
        """Wait up to `within` seconds until no gated write is in flight (the count moves
        in the request threads, hence polling)."""
        for _ in range(int(within / 0.05)):
            if not self._in_flight:
                break
            await asyncio.sleep(0.05)
        return self._in_flight == 0

    async def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        write: bool,
        gated: bool = True,
        lease: bool = False,
        **kwargs: Any,
    ) -> Any:
        timeout = LEASE_REQUEST_SECONDS if lease else REQUEST_SECONDS
        tracked = write and gated
        if write:
            if tracked:
                timeout = min(timeout, self.write_budget())
                if not self.may_write() or timeout <= 0:
                    raise ApiError(0, "NotLeader", "not leading: the write was not sent")
            self.writes += 1
        call = functools.partial(fn, *args, _request_timeout=timeout, **kwargs)
        if tracked:
            call = functools.partial(self._tracked, call)
            with self._lock:
                self._in_flight += 1
        try:
            if lease:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._lease_threads, call)
            return await asyncio.to_thread(call)
        except Exception as exc:
            raise _translate(exc) from exc

    def _tracked(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        finally:
            with self._lock:
                self._in_flight -= 1

    # custom resources
    async def list_objects(self, group: str, version: str, plural: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.list_cluster_custom_object, group, version, plural, write=False
        )
        return result

    async def get_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.get_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            write=False,
        )
        return result

    async def create_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.create_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            body,
            write=True,
        )
        return result

    async def patch_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        """A JSON merge patch (the client sends a dict as merge-patch+json)."""
        result: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            write=True,
        )
        return result

    async def patch_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            write=True,
        )
        return result

    async def delete_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        uid: str | None = None,
    ) -> None:
        """Delete it; with `uid`, only that object (not a replacement of the same name:
        409 Conflict then)."""
        await self._call(
            self.custom.delete_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            body={"preconditions": {"uid": uid}} if uid else None,
            write=True,
        )

    # pods and events
    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        pod = await self._call(self.core.create_namespaced_pod, namespace, body, write=True)
        result: dict[str, Any] = self.api.sanitize_for_serialization(pod)
        return result

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = await self._call(self.core.read_namespaced_pod, name, namespace, write=False)
        result: dict[str, Any] = self.api.sanitize_for_serialization(pod)
        return result

    async def list_pods(self, namespace: str, label_selector: str) -> dict[str, Any]:
        pods = await self._call(
            self.core.list_namespaced_pod, namespace, label_selector=label_selector, write=False
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(pods)
        return result

    async def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> None:
        await self._delete_raw(self.core.delete_namespaced_pod, namespace, name, uid)

    async def _delete_raw(
        self, delete_function: Any, namespace: str, name: str, uid: str | None
    ) -> None:
        """Delete (only the object with `uid`, when given). The answer may be the object or
        a Status, which the client cannot decode: take it raw, and read it whole, which
        hands the connection back to the pool."""
        body: Any = {"preconditions": {"uid": uid}} if uid else None

        def delete(**kwargs: Any) -> None:
            response: Any = delete_function(
                name, namespace, body=body, _preload_content=False, **kwargs
            )
            response.read()
            response.release_conn()

        await self._call(delete, write=True)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self.core.create_namespaced_event, namespace, body, write=True)

    # leases (leader election)
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        lease = await self._call(
            self.coordination.read_namespaced_lease, name, namespace, write=False, lease=True
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(lease)
        return result

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        lease = await self._call(
            self.coordination.create_namespaced_lease,
            namespace,
            body,
            write=True,
            gated=False,
            lease=True,
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(lease)
        return result

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        lease = await self._call(
            self.coordination.replace_namespaced_lease,
            name,
            namespace,
            body,
            write=True,
            gated=False,
            lease=True,
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(lease)
        return result

    # CRDs
    async def apply_crd(self, body: dict[str, Any], field_manager: str) -> None:
        """Server-side apply (creates or upgrades the CRD)."""
        await self._call(
            self.extensions.patch_custom_resource_definition,
            body["metadata"]["name"],
            body,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
            write=True,
        )

    # the agent replicas of an IPPool: their PodDisruptionBudget, and who holds their Lease
    async def create_pdb(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        pdb = await self._call(
            self.policy.create_namespaced_pod_disruption_budget, namespace, body, write=True
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(pdb)
        return result

    async def read_pdb(self, namespace: str, name: str) -> dict[str, Any]:
        pdb = await self._call(
            self.policy.read_namespaced_pod_disruption_budget, name, namespace, write=False
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(pdb)
        return result

    async def delete_pdb(self, namespace: str, name: str, uid: str | None = None) -> None:
        await self._delete_raw(
            self.policy.delete_namespaced_pod_disruption_budget, namespace, name, uid
        )

    async def read_agent_lease(self, namespace: str, name: str) -> dict[str, Any]:
        """An agent Lease, read by the reconcilers on the workers' threads (not the lease
        threads, which the controller's own election must always find free)."""
        lease = await self._call(
            self.coordination.read_namespaced_lease, name, namespace, write=False
        )
        result: dict[str, Any] = self.api.sanitize_for_serialization(lease)
        return result


# -- for the admission webhook (issue 6) ------------------------------------------------


def kopf_connection(api: Any) -> dict[str, Any]:
    """The connection settings of an ApiClient, as keyword arguments of
    `kopf.ConnectionInfo` (so kopf talks to the same cluster, with the same identity)."""
    cfg = api.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
    return {
        "server": cfg.host,
        "ca_path": cfg.ssl_ca_cert,
        "insecure": not cfg.verify_ssl,
        "username": cfg.username or None,
        "password": cfg.password or None,
        "scheme": scheme,
        "token": token,
        "certificate_path": cfg.cert_file,
        "private_key_path": cfg.key_file,
    }


async def read_secret(kube: Kube, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
    """A Secret's decoded data and resourceVersion, or None when there is no such Secret."""
    try:
        secret = await kube._call(kube.core.read_namespaced_secret, name, namespace, write=False)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
    return data, str(secret.metadata.resource_version)


async def write_secret(
    kube: Kube,
    namespace: str,
    name: str,
    data: dict[str, bytes],
    *,
    secret_type: str = "Opaque",
    labels: dict[str, str] | None = None,
    resource_version: str | None = None,
) -> None:
    """Create the Secret, or replace it when `resource_version` (the version read) is given;
    ApiError with status 409 when someone else created or changed it first."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret_type,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    }
    if resource_version is None:
        await kube._call(kube.core.create_namespaced_secret, namespace, body, write=True)
    else:
        metadata["resourceVersion"] = resource_version
        await kube._call(kube.core.replace_namespaced_secret, name, namespace, body, write=True)

"""The agent's own Kubernetes API client: list and watch one IPPool, post Events.

The `kubernetes` library loads every API and model it has: 13.5 MB of the agent's 60 MB
budget for three calls. This client speaks the same HTTPS with the standard library and
covers the credentials an agent pod and an operator's kubeconfig use: the pod's service
account (in-cluster), or a kubeconfig with a bearer token (`token`, `tokenFile`), a client
certificate and key (`client-certificate(-data)`, `client-key(-data)`), a CA
(`certificate-authority(-data)`) or `insecure-skip-tls-verify`. Exec and auth-provider
plugins are refused with a clear error (the controller, which uses the library, has them).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml

from vmdhcp.errors import ApiError, VmdhcpError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(VmdhcpError):
    """No usable configuration: a missing or unsupported kubeconfig, or not in a cluster."""


@dataclass
class Connection:
    """Where the API server is and how to authenticate to it."""

    scheme: str
    host: str
    port: int
    base_path: str = ""
    tls: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token_file: Path | None = None
    """A bearer token read again for every request: service account tokens are rotated
    (kubelet rewrites the projected file), so one read at start would expire."""

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.tls
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        timeout: float,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self.base_path + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", **self.headers}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._connect(timeout)
        try:
            connection.request(method, url, body=payload, headers=headers)
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if response.status >= 400:
            text = response.read().decode(errors="replace")
            connection.close()
            try:
                message = json.loads(text).get("message") or text
            except ValueError:
                message = text
            raise ApiError(
                response.status,
                f"HTTP {response.status}",
                f"HTTP {response.status}: {message.strip()[:500]}",
            )
        return connection, response

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        connection, response = self._send(method, path, query, body, timeout)
        try:
            result: dict[str, Any] = json.loads(response.read())
            return result
        finally:
            connection.close()

    def watch(
        self, path: str, query: dict[str, Any], seconds: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """A watch's events as (type, object), until the server ends it after `seconds`.

        BOOKMARK events are asked for: they move the resourceVersion on without an object,
        so the next watch resumes where this one ended. An ERROR event (410 Gone: the
        resourceVersion expired) is yielded as such; a refused request raises `ApiError`
        with its status (410 too)."""
        query = {**query, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": seconds}
        connection, response = self._send("GET", path, query, None, seconds + 15)
        try:
            while line := response.readline():
                if line.strip():
                    event = json.loads(line)
                    yield event.get("type") or "", event.get("object") or {}
        finally:
            connection.close()


def connect(kubeconfig: str | None, context: str | None = None) -> Connection:
    """A connection from `kubeconfig`, else (no path given) the in-cluster configuration.
    A path given that does not exist is an error naming it (upstream's agent fell back to
    in-cluster, and failed there)."""
    if kubeconfig:
        if not Path(kubeconfig).exists():
            raise KubeConfigError(f"--kubeconfig {kubeconfig}: no such file")
        return _from_kubeconfig(Path(kubeconfig), context)
    return _in_cluster()


def _in_cluster() -> Connection:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (SERVICE_ACCOUNT / "token").exists():
        raise KubeConfigError("no kubeconfig and not running in a cluster")
    tls = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    return Connection(
        "https", host.strip("[]"), int(port), tls=tls, token_file=SERVICE_ACCOUNT / "token"
    )


def in_cluster_namespace() -> str:
    """The pod's namespace from its service account ("" outside a cluster)."""
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip()
    except OSError:
        return ""


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            found: dict[str, Any] = item.get(what) or {}
            return found
    raise KubeConfigError(f"kubeconfig: no {what} named {name!r}")


def _from_kubeconfig(path: Path, context_name: str | None) -> Connection:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"kubeconfig {path}: {exc}".splitlines()[0]) from None
    name = context_name or config.get("current-context")
    if not name:
        raise KubeConfigError(f"kubeconfig {path}: no context given and no current-context")
    context = _named(config.get("contexts") or [], name, "context")
    cluster = _named(config.get("clusters") or [], context.get("cluster", ""), "cluster")
    user = _named(config.get("users") or [], context.get("user", ""), "user")
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(
            f"kubeconfig {path}: user {context.get('user')!r} needs an exec or auth-provider "
            "plugin, which the agent does not run; use a token or a client certificate"
        )
    server = urlsplit(cluster.get("server") or "")
    if server.scheme not in ("http", "https") or not server.hostname:
        raise KubeConfigError(f"kubeconfig {path}: server {cluster.get('server')!r} is not a URL")
    base = path.parent
    headers: dict[str, str] = {}
    token_file = None
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("tokenFile"):
        token_file = base / str(user["tokenFile"])
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    tls = None
    if server.scheme == "https":
        tls = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            tls.load_verify_locations(cadata=ca)
        elif cluster.get("certificate-authority"):
            tls.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        if cluster.get("tls-server-name"):
            raise KubeConfigError(f"kubeconfig {path}: tls-server-name is not supported")
        cert = _pem(user, "client-certificate", base)
        key = _pem(user, "client-key", base)
        if cert and key:
            _load_client_pair(tls, cert, key)
    return Connection(
        server.scheme,
        server.hostname,
        server.port or (443 if server.scheme == "https" else 80),
        base_path=server.path.rstrip("/"),
        tls=tls,
        headers=headers,
        token_file=token_file,
    )


def _pem(user: dict[str, Any], key: str, base: Path) -> bytes | None:
    if user.get(f"{key}-data"):
        return base64.b64decode(str(user[f"{key}-data"]))
    if user.get(key):
        return (base / str(user[key])).read_bytes()
    return None


def _load_client_pair(tls: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a client certificate from files only: through a private temporary
    directory, removed at once."""
    with tempfile.TemporaryDirectory(prefix="vmdhcp-agent-") as directory:
        cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        for target, data in ((cert_file, cert), (key_file, key)):
            target.touch(mode=0o600)
            target.write_bytes(data)
        tls.load_cert_chain(str(cert_file), str(key_file))


class LeaseApi:
    """The three Lease calls of `vmdhcp.election.LeaseClient`, on this client (each in a
    thread, with a short timeout: the elector retries every few seconds)."""

    def __init__(self, connection: Connection, timeout: float = 5.0) -> None:
        self.connection = connection
        self.timeout = timeout

    @staticmethod
    def _path(namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.connection.request, "GET", self._path(namespace, name), timeout=self.timeout
        )

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.connection.request, "POST", self._path(namespace), body=body, timeout=self.timeout
        )

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.connection.request,
            "PUT",
            self._path(namespace, name),
            body=body,
            timeout=self.timeout,
        )

"""A real Kubernetes API server for the test suites, and helpers to drive it.

Tests marked ``@pytest.mark.cluster`` talk to a real kube-apiserver (upstream apiserver and
apiextensions code, with CEL, status subresources, RBAC and admission webhooks) on etcd. By default
the suite starts one from the prebuilt toolkit in ``../shared/k8s-test-env`` (see its README) on
free loopback ports, once per pytest session, and stops it by PID at the end. The run directory,
with ``apiserver.log`` and ``etcd.log``, is kept under pytest's temporary directory
(``pytest --basetemp=DIR`` puts it in ``DIR/k8s0``) for post-mortems.

Before any test runs, the suite applies the project's CRDs (``crds/*.yaml``, server-side apply,
field manager ``vm-dhcp-tests``) and creates the test stand-ins for the third-party CRDs
(``tests/data/crds/third-party.yaml``: KubeVirt VirtualMachine, Multus
NetworkAttachmentDefinition) unless CRDs of those names already exist, then waits until every CRD
is Established and served. Every test gets its own namespace; afterwards the objects of the kinds
the controller watches (``PURGED_RESOURCES``) are deleted from it, then the namespace (this server
does not empty a deleted namespace by itself, and a later controller test would see leftovers).

Environment variables:

``K8S_TEST_ENV``
    The k8s-test-env toolkit folder (the one holding ``start``, ``stop`` and ``mint``).
    Default: ``<repo>/../shared/k8s-test-env``. Its own variables (``K8S_TEST_ENV_TIMEOUT``,
    ``K8S_TEST_ENV_CACHE``, ``K8S_TEST_ENV_BIN``) are passed through.
``VMDHCP_TEST_KUBECONFIG``
    A kubeconfig of an existing cluster to use instead. Nothing is started or stopped, and the
    toolkit is not needed; the CRDs are still applied (this replaces the schema of installed
    ``ippools``/``virtualmachinenetworkconfigs`` CRDs with the ones in ``crds/``) and tests create
    and delete their own namespaces. ``Cluster.mint`` and ``mint_cert`` need the toolkit and raise
    ``ClusterError`` there (tests that mint identities skip). Use a disposable cluster.

If neither the toolkit nor ``VMDHCP_TEST_KUBECONFIG`` is available, the cluster tests fail (they
are not skipped) with a message saying which path was tried.

The Python ``kubernetes`` client reads ``KUBECONFIG`` when it is imported, so nothing here relies
on the environment: clients are built from the run's kubeconfig file with
``kubernetes.config.new_client_from_config`` (``Cluster.api_client``), and subprocesses get it
through ``--kubeconfig`` or ``Cluster.env()``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "crds"
THIRD_PARTY_CRDS = REPO_ROOT / "tests" / "data" / "crds" / "third-party.yaml"
DEFAULT_TOOLKIT = REPO_ROOT.parent / "shared" / "k8s-test-env"

TOOLKIT_ENV = "K8S_TEST_ENV"
KUBECONFIG_ENV = "VMDHCP_TEST_KUBECONFIG"
FIELD_MANAGER = "vm-dhcp-tests"
TEST_NAMESPACE_LABEL = "vm-dhcp.test/owned"

#: Seconds to wait for one API request before giving up (a hung request must not stall a run).
REQUEST_TIMEOUT = 30.0

Manifest = dict[str, Any]


class ClusterError(RuntimeError):
    """The test cluster cannot be started, reached or prepared."""


# --------------------------------------------------------------------------------------------
# Starting and stopping


def toolkit_path() -> Path:
    """The k8s-test-env toolkit folder: ``$K8S_TEST_ENV`` or ``<repo>/../shared/k8s-test-env``."""
    return Path(os.environ.get(TOOLKIT_ENV) or DEFAULT_TOOLKIT).resolve()


def external_kubeconfig() -> Path | None:
    """The kubeconfig named by ``$VMDHCP_TEST_KUBECONFIG``, if set; it must exist."""
    value = os.environ.get(KUBECONFIG_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ClusterError(f"{KUBECONFIG_ENV}={value}: no such file")
    return path


@dataclass(frozen=True)
class Cluster:
    """A running API server: either started here (``rundir`` set) or an existing one."""

    kubeconfig: Path
    rundir: Path | None = None
    toolkit: Path | None = None
    #: Seconds ``start`` took (0 for an existing cluster).
    start_seconds: float = 0.0

    @property
    def managed(self) -> bool:
        """True when this process started the server (and will stop it)."""
        return self.rundir is not None

    def api_client(self, kubeconfig: Path | str | None = None) -> ApiClient:
        """A new client for the admin kubeconfig, or for ``kubeconfig`` (e.g. from ``mint``).

        The caller closes it (``with cluster.api_client() as api: ...``).
        """
        path = str(kubeconfig or self.kubeconfig)
        client = k8s_config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return cast(ApiClient, client)

    def env(self, kubeconfig: Path | str | None = None) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG``, for subprocesses (kubectl, helm, a controller)."""
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}

    @property
    def pki(self) -> Path:
        """The run's PKI folder: ``ca.crt``, and ``webhook.crt``/``webhook.key`` for 127.0.0.1."""
        return self._require_rundir("pki") / "pki"

    def mint(self, user: str, *groups: str, token: bool = False) -> Path:
        """Write a kubeconfig for identity ``user`` (with ``groups``) and return its path.

        ``system:serviceaccount:NS:NAME`` with no groups gets the service-account groups and
        context namespace NS. ``token=True`` mints a bearer token instead of a client
        certificate. Build a client from it with ``cluster.api_client(path)``.
        """
        rundir = self._require_rundir("mint")
        args = ["--token"] if token else []
        out = _run_toolkit(self.toolkit, "mint", *args, str(rundir), user, *groups)
        return Path(out.strip().splitlines()[-1])

    def mint_cert(self, name: str, *sans: str) -> tuple[Path, Path]:
        """Write a serving certificate signed by the run's CA; return (cert, key) paths.

        Default SANs: 127.0.0.1, localhost and ::1. For a Service-backed webhook pass
        ``NAME.NAMESPACE.svc``.
        """
        rundir = self._require_rundir("mint-cert")
        _run_toolkit(self.toolkit, "mint-cert", str(rundir), name, *sans)
        return rundir / "certs" / f"{name}.crt", rundir / "certs" / f"{name}.key"

    def kubectl(
        self, *args: str, kubeconfig: Path | str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig=... ARGS`` and return the completed process."""
        exe = shutil.which("kubectl")
        if exe is None:
            raise ClusterError("kubectl is not on PATH (it is expected at /usr/bin/kubectl)")
        cmd = [exe, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def _require_rundir(self, what: str) -> Path:
        if self.rundir is None:
            raise ClusterError(
                f"{what} needs a cluster started from the k8s-test-env toolkit, "
                f"not an existing one ({KUBECONFIG_ENV}={self.kubeconfig})"
            )
        return self.rundir


def _run_toolkit(
    toolkit: Path | None,
    script: str,
    *args: str,
    timeout: float = 60.0,
    new_session: bool = False,
) -> str:
    exe = (toolkit or toolkit_path()) / script
    try:
        proc = subprocess.run(
            [str(exe), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=new_session,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{exe} {' '.join(args)} did not finish in {timeout:g}s") from exc
    if proc.returncode != 0:
        raise ClusterError(
            f"{exe} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    return proc.stdout


def start_cluster(rundir: Path, *apiserver_args: str, toolkit: Path | None = None) -> Cluster:
    """Start a fresh, empty API server in ``rundir`` (etcd data and PKI go there).

    ``apiserver_args`` go to kube-apiserver, e.g. ``--authorization-mode=AlwaysAllow``. Stop it
    with ``stop_cluster`` (in a ``finally``), or use ``cluster_session``.
    """
    toolkit = (toolkit or toolkit_path()).resolve()
    start = toolkit / "start"
    if not os.access(start, os.X_OK):
        raise ClusterError(
            f"the k8s-test-env toolkit was not found: {start} is missing or not executable. "
            f"Set {TOOLKIT_ENV} to the toolkit folder, or {KUBECONFIG_ENV} to the kubeconfig of "
            f"an existing cluster."
        )
    rundir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    # `start` waits up to K8S_TEST_ENV_TIMEOUT per attempt, after unpacking the binaries once.
    timeout = float(os.environ.get("K8S_TEST_ENV_TIMEOUT") or 60) * 2 + 60
    try:
        # A session of its own: a Ctrl-C in the terminal must reach pytest (whose teardown
        # stops the server) but not etcd and kube-apiserver, or teardown requests would hang.
        _run_toolkit(
            toolkit, "start", str(rundir), *apiserver_args, timeout=timeout, new_session=True
        )
    except BaseException:
        _stop(toolkit, rundir, check=False)  # `start` cleans up after itself; belt and braces
        raise
    kubeconfig = rundir / "admin.kubeconfig"
    if not kubeconfig.is_file():
        _stop(toolkit, rundir, check=False)
        raise ClusterError(f"{start} succeeded but wrote no {kubeconfig}")
    return Cluster(
        kubeconfig=kubeconfig,
        rundir=rundir,
        toolkit=toolkit,
        start_seconds=time.monotonic() - began,
    )


def stop_cluster(cluster: Cluster) -> None:
    """Stop a server started by ``start_cluster`` (by PID); a no-op for an existing cluster."""
    if cluster.rundir is not None:
        _stop(cluster.toolkit or toolkit_path(), cluster.rundir, check=True)


def _stop(toolkit: Path, rundir: Path, *, check: bool) -> None:
    try:
        _run_toolkit(toolkit, "stop", str(rundir), timeout=60)
    except ClusterError:
        if check:
            raise


@contextmanager
def cluster_session(rundir: Path, *apiserver_args: str, prepare: bool = True) -> Iterator[Cluster]:
    """The cluster for a test session: ``$VMDHCP_TEST_KUBECONFIG``'s, or a fresh one in ``rundir``.

    With ``prepare`` (the default) the CRDs are installed first (``prepare_cluster``). A server
    started here is always stopped on exit.
    """
    existing = external_kubeconfig()
    cluster = (
        Cluster(kubeconfig=existing)
        if existing is not None
        else start_cluster(rundir, *apiserver_args)
    )
    try:
        if prepare:
            with cluster.api_client() as api:
                prepare_cluster(api)
        yield cluster
    finally:
        stop_cluster(cluster)


def prepare_cluster(api: ApiClient, timeout: float = 60.0) -> None:
    """Apply ``crds/`` (server-side), create the third-party test CRDs if absent, wait for all."""
    ours = load_manifests(CRD_DIR)
    if not ours:
        raise ClusterError(f"no CRDs found in {CRD_DIR}")
    theirs = load_manifests(THIRD_PARTY_CRDS)
    apply_manifests(api, ours)
    apply_manifests(api, theirs, create_only=True)
    wait_for_crds(api, [doc["metadata"]["name"] for doc in [*ours, *theirs]], timeout=timeout)
    _warm_up(api, [*ours, *theirs])


def _warm_up(api: ApiClient, crds: Sequence[Manifest]) -> None:
    """Pay the server's one-time costs here rather than in whichever test comes first: the first
    custom-resource write (about 2 s on k8s-test-env; a dry-run create triggers it) and the
    first list of each custom resource (about 1 s each, filling its watch cache)."""
    probe = {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {"name": "warm-up"},
        "spec": {"vmName": "warm-up"},
    }
    calls: list[tuple[str, str, Manifest | None, dict[str, str]]] = [
        (
            "POST",
            "/apis/network.harvesterhci.io/v1alpha1/namespaces/default/virtualmachinenetworkconfigs",
            probe,
            {"dryRun": "All"},
        )
    ]
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            path = f"/apis/{spec['group']}/{version['name']}/{spec['names']['plural']}"
            calls.append(("GET", path, None, {"limit": "1"}))

    def call(method: str, path: str, body: Manifest | None, query: dict[str, str]) -> None:
        # Only an optimisation: ignore failures (no `default` namespace, a webhook said no...).
        with suppress(ApiException):
            api_request(api, method, path, body=body, query=query)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for done in [pool.submit(call, *args) for args in calls]:
            done.result()


# --------------------------------------------------------------------------------------------
# Raw API access (works for any kind, including ones the client has no model for)


def api_request(
    api: ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    content_type: str | None = None,
    accept: str = "application/json",
) -> Any:
    """Send one request and return the decoded JSON body; raise ``ApiException`` on non-2xx.

    ``content_type`` defaults to JSON; use ``application/apply-patch+yaml``,
    ``application/merge-patch+json`` or ``application/json-patch+json`` for patches.
    """
    headers: dict[str, str] = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    params = list(query.items()) if isinstance(query, Mapping) else list(query)
    request = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=params,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
    response.read()  # type: ignore[no-untyped-call]
    return api.response_deserialize(response, {"2XX": "object"}).data


@dataclass(frozen=True)
class Resource:
    """What discovery says about one kind."""

    group_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection path, or the object path when ``name`` is given."""
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced:
            if not namespace:
                raise ClusterError(f"{self.kind} is namespaced: a namespace is needed")
            root += f"/namespaces/{namespace}"
        root += f"/{self.plural}"
        return f"{root}/{name}" if name else root


def discover(api: ApiClient, api_version: str, kind: str, timeout: float = 10.0) -> Resource:
    """Find ``kind`` in ``api_version`` through discovery, waiting for new CRDs to be served."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            listing = api_request(api, "GET", path)
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            for res in listing.get("resources", []):
                if res.get("kind") == kind and "/" not in res["name"]:
                    return Resource(api_version, kind, res["name"], bool(res["namespaced"]))
        if time.monotonic() > deadline:
            raise ClusterError(f"the API server does not serve kind {kind} in {api_version}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Manifests


def load_manifests(*paths: Path | str) -> list[Manifest]:
    """Every non-empty YAML document in the given files and folders (``*.yaml``/``*.yml``)."""
    docs: list[Manifest] = []
    for entry in paths:
        path = Path(entry)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if doc:
                    if not isinstance(doc, dict) or "kind" not in doc:
                        raise ClusterError(f"{file}: a document is not a Kubernetes object")
                    docs.append(doc)
    return docs


def apply_manifests(
    api: ApiClient,
    docs: Iterable[Manifest],
    *,
    namespace: str | None = None,
    create_only: bool = False,
    field_manager: str = FIELD_MANAGER,
) -> list[Manifest]:
    """Server-side apply each object (forcing conflicts) and return what the server stored.

    ``namespace`` fills in namespaced objects that name none. With ``create_only`` an existing
    object is left alone (and returned as found): that keeps real third-party CRDs intact on an
    existing cluster.
    """
    stored: list[Manifest] = []
    for doc in docs:
        res = discover(api, doc["apiVersion"], doc["kind"])
        meta = doc.get("metadata", {})
        ns = (meta.get("namespace") or namespace) if res.namespaced else None
        if res.namespaced and not ns:
            raise ClusterError(f"{doc['kind']} {meta.get('name')}: no namespace given")
        if res.namespaced:
            doc = {**doc, "metadata": {**meta, "namespace": ns}}
        path = res.path(ns, meta["name"])
        if create_only:
            try:
                stored.append(api_request(api, "GET", path))
                continue
            except ApiException as exc:
                if exc.status != 404:
                    raise
        stored.append(
            api_request(
                api,
                "PATCH",
                path,
                body=doc,
                query={"fieldManager": field_manager, "force": "true"},
                content_type="application/apply-patch+yaml",
            )
        )
    return stored


def wait_for_crds(api: ApiClient, names: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until every named CRD is Established and its kinds are listed by discovery."""
    deadline = time.monotonic() + timeout
    for name in names:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        while True:
            crd = api_request(api, "GET", path)
            conditions = {
                c["type"]: c for c in crd.get("status", {}).get("conditions", []) if "type" in c
            }
            established = conditions.get("Established", {}).get("status") == "True"
            if established:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"CRD {name} not Established in {timeout}s: {conditions}")
            time.sleep(0.05)
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                remaining = max(deadline - time.monotonic(), 1.0)
                discover(
                    api, f"{spec['group']}/{version['name']}", spec["names"]["kind"], remaining
                )


# --------------------------------------------------------------------------------------------
# Namespaces


def unique_namespace_name(hint: str = "t") -> str:
    """A fresh, valid namespace name from ``hint`` (e.g. a test name): at most 40 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:30].strip("-") or "t"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def create_namespace(api: ApiClient, name: str) -> Manifest:
    """Create namespace ``name``, labelled as owned by the tests."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}},
    }
    created: Manifest = api_request(api, "POST", "/api/v1/namespaces", body=body)
    return created


#: Namespaced resources (group/version, plural) that ``purge_namespace`` deletes by default: the
#: kinds the controller and agents watch across namespaces. The test server does not empty a
#: deleted namespace, and leftovers would be seen by later tests that watch all namespaces.
#: (Each costs one request per test; pass more to ``purge_namespace`` where a test needs it.)
PURGED_RESOURCES: tuple[tuple[str, str], ...] = (
    ("network.harvesterhci.io/v1alpha1", "ippools"),
    ("network.harvesterhci.io/v1alpha1", "virtualmachinenetworkconfigs"),
    ("kubevirt.io/v1", "virtualmachines"),
    ("k8s.cni.cncf.io/v1", "network-attachment-definitions"),
    ("v1", "pods"),
)


def purge_namespace(
    api: ApiClient, name: str, resources: Iterable[tuple[str, str]] = PURGED_RESOURCES
) -> None:
    """Delete every object of ``resources`` in namespace ``name`` (objects with finalizers are
    only marked for deletion). Resources the server does not serve are skipped.

    The requests run concurrently: each takes tens of milliseconds on a fresh namespace.
    """

    def purge(resource: tuple[str, str]) -> None:
        group_version, plural = resource
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            api_request(api, "DELETE", f"{root}/namespaces/{name}/{plural}")
        except ApiException as exc:
            if exc.status not in (404, 405):
                raise

    todo = list(resources)
    with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:
        for done in [pool.submit(purge, resource) for resource in todo]:
            done.result()


def delete_namespace(api: ApiClient, name: str, *, purge: bool = True) -> None:
    """Delete namespace ``name`` if it exists, after ``purge_namespace`` (unless ``purge`` is
    false: this server does not delete a namespace's contents itself)."""
    if purge:
        purge_namespace(api, name)
    try:
        api_request(api, "DELETE", f"/api/v1/namespaces/{name}")
    except ApiException as exc:
        if exc.status != 404:
            raise


def parse_kubectl_table(output: str) -> list[dict[str, str]]:
    """Rows of ``kubectl get`` output as {column: cell}, split at the header's column starts
    (so empty cells survive)."""
    lines = output.rstrip("\n").splitlines()
    if not lines:
        return []
    header, *rows = lines
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    ends: list[int | None] = [*starts[1:], None]
    return [
        {name: row[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}
        for row in rows
    ]


def api_error(exc: ApiException) -> tuple[int, str]:
    """The HTTP status and the server's message of a failed request (the Status ``message``)."""
    try:
        status = json.loads(exc.body or "{}")
    except json.JSONDecodeError:
        return int(exc.status or 0), str(exc.body)
    return int(exc.status or 0), str(status.get("message", exc.body))

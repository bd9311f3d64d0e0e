"""Fixtures for tests against the real test API server (see tests/cluster.py for the knobs).

Session-scoped: ``cluster`` (a ``tests.cluster.Cluster``: kubeconfig, rundir, pki, mint,
mint_cert, kubectl, env), ``kubeconfig`` (its admin kubeconfig path), ``api_client``
(``kubernetes.client.ApiClient``), ``custom_api`` (``CustomObjectsApi``), ``core_api``
(``CoreV1Api``) and ``kubectl`` (``kubectl(*args) -> stdout``). Per test: ``namespace`` (the name
of a fresh namespace, purged and deleted afterwards) and ``kubeconfig_env`` (``KUBECONFIG`` and
the ``kubernetes`` client's default location pointed at the cluster, for code that loads the
default configuration, such as kopf).

Suites that need the cluster belong under tests/integration/ (any depth), so that they share
this one session cluster.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from tests.cluster import (
    Cluster,
    ClusterError,
    cluster_session,
    create_namespace,
    delete_namespace,
    unique_namespace_name,
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One API server for the whole session, with the CRDs installed and Established."""
    rundir = tmp_path_factory.mktemp("k8s")
    problem: ClusterError | None = None
    try:
        with cluster_session(rundir) as running:
            yield running
    except ClusterError as exc:
        problem = exc
    if problem is not None:  # fail outside the handler: no chained traceback noise
        pytest.fail(f"cannot provide the test cluster: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    """Path of the cluster's admin kubeconfig (user admin, group system:masters)."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[ApiClient]:
    """An admin ``ApiClient`` built from the cluster's kubeconfig (not from the environment)."""
    with cluster.api_client() as api:
        yield api


@pytest.fixture(scope="session")
def custom_api(api_client: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def core_api(api_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(api_client)


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Callable[..., str]:
    """``kubectl(*args) -> stdout`` against the cluster (admin); fails clearly without kubectl.

    A non-zero exit raises ``ClusterError`` with kubectl's output. For other identities or
    exit codes use ``cluster.kubectl(..., kubeconfig=..., check=False)``.
    """
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH (expected at /usr/bin/kubectl)", pytrace=False)

    def run(*args: str) -> str:
        return cluster.kubectl(*args).stdout

    return run


@pytest.fixture
def namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for the test; its objects (``PURGED_RESOURCES``) and the
    namespace are deleted afterwards."""
    name = unique_namespace_name(request.node.name)
    create_namespace(api_client, name)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


@pytest.fixture
def kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``KUBECONFIG`` and the kubernetes client's default at the cluster for one test."""
    monkeypatch.setenv("KUBECONFIG", os.fspath(kubeconfig))
    monkeypatch.setattr(
        k8s_config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", os.fspath(kubeconfig)
    )
    return kubeconfig

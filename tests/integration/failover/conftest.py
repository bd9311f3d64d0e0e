"""Fixtures of the suites that start their own controllers (restarts, leader election,
failover): a module's agent namespace, a Lease namespace per test, and the test's `Env`,
whose finalizers are removed afterwards (no controller runs any more by then)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.cluster import Cluster, create_namespace, delete_namespace, unique_namespace_name
from tests.integration.test_controller import GROUP, VERSION, Env

VMNETCFGS = "virtualmachinenetworkconfigs"


@pytest.fixture(scope="module")
def agent_namespace(cluster: Cluster) -> Iterator[str]:
    name = unique_namespace_name("recovery-agents")
    with cluster.api_client() as api:
        create_namespace(api, name)
        yield name
        delete_namespace(api, name)


@pytest.fixture
def env(api_client: ApiClient, namespace: str, agent_namespace: str) -> Iterator[Env]:
    """The test's namespace; afterwards (no controller runs any more) the finalizers our
    controllers left are removed, so that the namespace fixture's purge really deletes."""
    helper = Env(api_client, namespace, agent_namespace)
    yield helper
    for plural in ("ippools", VMNETCFGS):
        listing = helper.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        for item in cast(dict[str, Any], listing)["items"]:
            if item["metadata"].get("finalizers"):
                try:
                    helper.patch(plural, item["metadata"]["name"], {"metadata": {"finalizers": []}})
                except ApiException as exc:
                    if exc.status != 404:
                        raise


@pytest.fixture
def lease_namespace(api_client: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique_namespace_name("lease-" + request.node.name)
    create_namespace(api_client, name)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)

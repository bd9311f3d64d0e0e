"""The controller's resync against the real test API server: what a broken watch never
reported (deleted, changed, replaced objects) is corrected from a relist, and nothing the
watch delivered after the list is undone."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi

from tests.integration.test_controller import GROUP, POOL_SPEC, VERSION
from vmdhcp.controller.config import ConfigError, load_config
from vmdhcp.controller.engine import IPPOOLS, VMNETCFGS, Controller
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.k8s import Kube

pytestmark = pytest.mark.cluster


def pool_body(namespace: str, name: str) -> dict[str, Any]:
    spec = copy.deepcopy(POOL_SPEC)
    spec["networkName"] = f"{namespace}/{name}"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def ghost(namespace: str, name: str, resource_version: int) -> dict[str, Any]:
    """A vmnetcfg as a watch would have delivered it; the API server has no such object."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": str(resource_version),
        },
        "spec": {"vmName": name, "networkConfigs": []},
    }


async def drain(controller: Controller) -> set[tuple[str, str, str]]:
    """The keys waiting in the work queue (no worker runs in these tests)."""
    keys = set()
    while len(controller.queue):
        key = await controller.queue.get()
        controller.queue.done(key)
        keys.add(key)
    return keys


def sample(metrics: ControllerMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "vmdhcpcontroller_resync_corrections_total", {"kind": kind}
    )
    assert value is not None
    return value


async def test_resync_corrects_what_the_watch_missed(
    api_client: ApiClient, custom_api: CustomObjectsApi, namespace: str
) -> None:
    config = load_config(["--namespace", namespace, "--no-agent"], {})
    metrics = ControllerMetrics()
    controller = Controller(config, Kube(api_client), metrics)
    ns = namespace
    created = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "kept")
    )
    replaced = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "replaced")
    )
    await controller.resync()  # the cache now mirrors the cluster, as after a first list
    await drain(controller)
    assert (
        controller.objects[IPPOOLS][(ns, "kept")]["metadata"]["uid"] == created["metadata"]["uid"]
    )
    deleted_before, modified_before = sample(metrics, "deleted"), sample(metrics, "modified")

    # what the watch "missed": a vmnetcfg deleted long ago, a pool change, a pool replaced
    controller.observe(VMNETCFGS, "ADDED", ghost(ns, "gone", 1))
    changed = custom_api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", "kept", {"spec": {"ipv4Config": {"dns": ["9.9.9.9"]}}}
    )
    custom_api.delete_namespaced_custom_object(GROUP, VERSION, ns, "ippools", "replaced")
    again = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "replaced")
    )
    assert again["metadata"]["uid"] != replaced["metadata"]["uid"]
    # and what a watch delivered after the relist's snapshot: must stay
    controller.observe(VMNETCFGS, "ADDED", ghost(ns, "newer", 10**15))
    await drain(controller)

    corrections = await controller.resync()

    cache = controller.objects
    assert (ns, "gone") not in cache[VMNETCFGS]
    assert (ns, "newer") in cache[VMNETCFGS]
    kept = cache[IPPOOLS][(ns, "kept")]
    assert kept["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]
    assert cache[IPPOOLS][(ns, "replaced")]["metadata"]["uid"] == again["metadata"]["uid"]
    queued = await drain(controller)
    assert {(VMNETCFGS, ns, "gone"), (IPPOOLS, ns, "kept"), (IPPOOLS, ns, "replaced")} <= queued
    # gone, the replaced pool's old self: deleted; kept and the new replaced: modified (other
    # tests' namespaces may still be going away, hence at least)
    assert sample(metrics, "deleted") - deleted_before >= 2
    assert sample(metrics, "modified") - modified_before >= 2
    assert corrections >= 4


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_a_bad_resync_period_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="resync-period"):
        load_config(["--namespace", "n", "--no-agent", "--resync-period", value], {})

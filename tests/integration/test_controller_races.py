"""Races the controller must win, driven step by step in-process against the real test API
server: a user's edit racing the controller's own spec write is never lost (the write
carries a resourceVersion precondition), and an object deleted right after the listing
the IPAM is built from is released by the watch that goes on from that listing, with no
resync running."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi

from tests.integration.test_controller import GROUP, VERSION, Env
from vmdhcp.controller.config import load_config
from vmdhcp.controller.context import RESOURCES
from vmdhcp.controller.engine import IPPOOLS, VMNETCFGS, VMS, Controller
from vmdhcp.controller.informer import Informer, custom_informer
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.k8s import Kube, custom_object_lister, custom_object_watcher

pytestmark = pytest.mark.cluster

CFGS = "virtualmachinenetworkconfigs"


def controller_for(api_client: ApiClient, namespace: str) -> Controller:
    config = load_config(["--namespace", namespace, "--no-agent", "--resync-period", "0"], {})
    return Controller(config, Kube(api_client), ControllerMetrics())


async def until(condition: Callable[[], object], what: str) -> None:
    """Poll `condition` for up to 20 s (it changes in kopf's tasks, not on an event)."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def drain(controller: Controller) -> None:
    """Reconcile every key waiting now (no worker runs in these tests)."""
    while len(controller.queue):
        await controller.reconcile(await controller.queue.get())


def two_nics(env: Env, mac: str, second: str) -> dict[str, Any]:
    vm = env.read_vm("vm-r")
    template = vm["spec"]["template"]["spec"]
    template["domain"]["devices"]["interfaces"].append(
        {"name": "nic-2", "bridge": {}, "macAddress": second}
    )
    template["networks"].append({"name": "nic-2", "multus": {"networkName": f"{env.ns}/net-48"}})
    return vm


async def test_a_users_ip_address_edit_racing_the_controllers_write_is_kept(
    api_client: ApiClient, namespace: str
) -> None:
    env = Env(api_client, namespace, namespace)
    env.nad()
    env.pool()
    controller = controller_for(api_client, namespace)
    await controller.rebuild()
    mac, second = "02:00:00:00:0d:01", "02:00:00:00:0d:02"
    controller.observe(VMS, "ADDED", env.vm("vm-r", mac))
    await drain(controller)
    assert env.get(CFGS, "vm-r") is not None

    # the user pins an address; the controller has not seen it (its watch is behind) when
    # the VM gets a second NIC and the controller rewrites the vmnetcfg spec
    cfg = env.get(CFGS, "vm-r") or {}
    entries = copy.deepcopy(cfg["spec"]["networkConfigs"])
    entries[0]["ipAddress"] = "192.168.48.88"
    env.patch(CFGS, "vm-r", {"spec": {"networkConfigs": entries}})
    vm = two_nics(env, mac, second)
    CustomObjectsApi(api_client).replace_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", "vm-r", vm
    )
    controller.observe(VMS, "MODIFIED", env.read_vm("vm-r"))
    await controller.reconcile(await controller.queue.get())
    key = (VMS, namespace, "vm-r")
    assert controller.queue.retries(key) == 1, "the stale write must have been refused"
    spec = (env.get(CFGS, "vm-r") or {})["spec"]["networkConfigs"]
    assert spec[0].get("ipAddress") == "192.168.48.88", "the user's edit was overwritten"

    # the watch catches up; the retry computes from the user's version and keeps the edit
    controller.observe(VMNETCFGS, "MODIFIED", env.get(CFGS, "vm-r") or {})
    await controller.reconcile(key)
    spec = (env.get(CFGS, "vm-r") or {})["spec"]["networkConfigs"]
    assert [(e["macAddress"], e.get("ipAddress")) for e in spec] == [
        (mac, "192.168.48.88"),
        (second, None),
    ]
    assert controller.queue.retries(key) == 0


def holds(controller: Controller, network: str, mac: str) -> bool:
    return mac in controller.allocator.ipam.pool(network).allocations().values()


async def test_an_object_deleted_between_the_first_list_and_the_watch_is_released(
    api_client: ApiClient, namespace: str
) -> None:
    """The informers' watches go on from their first listing's resourceVersion: what is
    deleted right after that listing is reported by the watch, with no resync running."""
    env = Env(api_client, namespace, namespace)
    env.nad()
    env.pool()
    custom = CustomObjectsApi(api_client)
    network = f"{namespace}/net-48"
    held = {
        "gap": ("02:00:00:00:0e:01", "192.168.48.83"),
        "stays": ("02:00:00:00:0e:02", "192.168.48.84"),
    }
    for name, (mac, address) in held.items():
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualMachineNetworkConfig",
            "metadata": {"name": name},
            "spec": {
                "vmName": name,
                "networkConfigs": [{"networkName": network, "macAddress": mac}],
            },
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, CFGS, body)
        status = {
            "networkConfigs": [
                {"networkName": network, "macAddress": mac, "allocatedIPAddress": address,
                 "state": "Allocated"}
            ]
        }  # fmt: skip
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, CFGS, name, {"status": status}
        )
    controller = controller_for(api_client, namespace)
    kube = controller.kube
    listed_vmnetcfgs = custom_object_lister(kube, *RESOURCES[VMNETCFGS])

    listed: list[str] = []

    def list_then_delete() -> dict[str, Any]:
        listing = listed_vmnetcfgs()
        listed.extend(item["metadata"]["name"] for item in listing["items"])
        # deleted after the listing the IPAM is built from, before its watch starts
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, CFGS, "gap")
        return listing

    informers = [
        custom_informer(
            kube,
            RESOURCES[IPPOOLS],
            partial(controller.on_list, IPPOOLS),
            partial(controller.observe, IPPOOLS),
        ),
        Informer(
            "vmnetcfgs",
            list_then_delete,
            custom_object_watcher(kube, *RESOURCES[VMNETCFGS], 30),
            partial(controller.on_list, VMNETCFGS),
            partial(controller.observe, VMNETCFGS),
        ),
    ]  # fmt: skip
    for informer in informers:
        informer.start(asyncio.get_running_loop())
    try:
        await asyncio.wait_for(controller.listed_once((IPPOOLS, VMNETCFGS)), 20)
        controller.build_ipam()
        assert "gap" in listed
        await until(
            lambda: controller.store.get(VMNETCFGS, (namespace, "gap")) is None, "its deletion"
        )
        await drain(controller)
        assert not holds(controller, network, held["gap"][0]), "the deleted vmnetcfg keeps its IP"
        assert holds(controller, network, held["stays"][0])
    finally:
        for informer in informers:
            informer.stop()

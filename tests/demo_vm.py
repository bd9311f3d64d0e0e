"""`make demo-vm NAME=… [MAC=…]`: add VM NAME with MAC to the demo running in keep mode
(`DEMO_KEEP=1 make demo`, tests/demo.py) and run its DHCP client in a network namespace of
its own on the VM network; for a VM that exists, run its DHCP client again.

The VM's namespace, `vmdhcp-demo-vm-<NAME>`, and its dhclient belong to the demo: they go
when it stops.
"""

from __future__ import annotations

import sys
from typing import Any, cast

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests import demokit
from tests.cluster import Cluster, toolkit_path
from tests.demo import (
    NETWORK,
    acquire,
    complain,
    say,
    show,
    show_lease,
    use_work_tmp,
    vm_manifest,
)
from vmdhcp.mac import InvalidMac, normalize_mac


def vm_command(args: list[str]) -> int:
    """Add VM NAME with MAC to the running demo and run its DHCP client; for a VM that
    exists, run its DHCP client again."""
    usage = "usage: make demo-vm NAME=<vm name> [MAC=<mac address>] (a new VM needs a MAC)"
    if not 1 <= len(args) <= 2 or not args[0]:
        complain(usage)
        return 2
    name, mac = args[0], (args[1] if len(args) == 2 and args[1] else None)
    demo = demokit.running()
    if demo is None or not demo.alive():
        complain("no demo is running: start one with DEMO_KEEP=1 make demo")
        return 1
    try:
        mac = normalize_mac(mac) if mac else None
    except InvalidMac as exc:
        complain(f"MAC={args[1]}: {exc}")
        return 2
    use_work_tmp(demo.work)
    cluster = Cluster(demo.kubeconfig, demo.work / "k8s", toolkit_path())
    with cluster.api_client() as api:
        custom = CustomObjectsApi(api)
        existing = find_vm(custom, name)
        if existing is None and mac is None:
            complain(f"VirtualMachine {name} does not exist: {usage}")
            return 2
        if existing is None:
            assert mac is not None
            custom.create_namespaced_custom_object(
                "kubevirt.io", "v1", "default", "virtualmachines", vm_manifest(name, mac)
            )
            say(f"created VirtualMachine default/{name} with MAC {mac} on {NETWORK}")
        else:
            if mac is not None and mac != existing:
                complain(f"VirtualMachine {name} has MAC {existing}, not {mac}")
                return 2
            mac = existing
        namespace = demokit.DemoLab(demo.work).vm(name, mac)
        say(f"VM {name} (MAC {mac}) runs dhclient in network namespace {namespace.name}")
        try:
            show_lease(acquire(namespace))
        except AssertionError as exc:
            complain(f"{exc}\n(kubectl get vmnetcfg {name} -o yaml says why)")
            return 1
        say(f"kubectl get vmnetcfg {name} -o wide")
        show(cluster.kubectl("get", "vmnetcfg", name, "-o", "wide").stdout)
    return 0


def find_vm(custom: CustomObjectsApi, name: str) -> str | None:
    """The MAC of VM `name`'s NIC, or None when there is no such VM."""
    try:
        vm = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(
                "kubevirt.io", "v1", "default", "virtualmachines", name
            ),
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    interfaces = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
    return normalize_mac(str(interfaces[0]["macAddress"]))


if __name__ == "__main__":
    sys.exit(vm_command(sys.argv[1:]))

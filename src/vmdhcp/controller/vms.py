"""What happens for a VirtualMachine: its NICs on networks with a pool become its
vmnetcfg (created, or its spec rewritten, keeping a user's ipAddress); a VM deleted, or
gone from every network its vmnetcfg names, loses the vmnetcfg and so its addresses."""

from __future__ import annotations

import logging

from vmdhcp.api import GROUP, VERSION
from vmdhcp.api.constants import KUBEVIRT_GROUP, KUBEVIRT_VERSION, LABEL_VM_NAME
from vmdhcp.controller.allocator import Ref, mac_or_none
from vmdhcp.controller.context import FINALIZER, VMNETCFGS, VMS, Context
from vmdhcp.controller.manifests import nics_from_vm, vm_networks
from vmdhcp.controller.store import Body, meta
from vmdhcp.validation.view import network_key

log = logging.getLogger("vmdhcp.controller")


def owned_by(cfg: Body, vm: Body | None, vm_name: str) -> bool:
    references = meta(cfg).get("ownerReferences") or []
    if vm is not None and any(o.get("uid") == meta(vm).get("uid") for o in references):
        return True
    return any(o.get("kind") == "VirtualMachine" and o.get("name") == vm_name for o in references)


def desired_network_configs(
    ctx: Context, vm: Body, existing: Body | None
) -> list[dict[str, str]] | None:
    """The vmnetcfg spec's networkConfigs the VM asks for (None: no NIC is managed); a
    user's ipAddress in the existing vmnetcfg stays on its (network, MAC)."""
    nics, warnings = nics_from_vm(vm)
    for warning in warnings:
        log.warning("vm %s/%s: %s", meta(vm).get("namespace"), meta(vm).get("name"), warning)
    managed = [nic for nic in nics if ctx.allocator.serves(nic.network_name)]
    if not managed:
        return None
    current = ((existing or {}).get("spec") or {}).get("networkConfigs") or []
    kept = {
        (network_key(c.get("networkName") or ""), mac_or_none(c.get("macAddress"))): c.get(
            "ipAddress"
        )
        for c in current
    }
    desired = []
    for nic in managed:
        entry = nic.wire()
        if "ipAddress" not in entry and kept.get((nic.network_name, nic.mac_address)):
            entry["ipAddress"] = str(kept[(nic.network_name, nic.mac_address)])
        desired.append(entry)
    return desired


def new_vmnetcfg(ref: Ref, vm: Body, network_configs: list[dict[str, str]]) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {
            "name": ref[1],
            "namespace": ref[0],
            "labels": {LABEL_VM_NAME: ref[1]},
            "finalizers": [FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": f"{KUBEVIRT_GROUP}/{KUBEVIRT_VERSION}",
                    "kind": "VirtualMachine",
                    "name": meta(vm).get("name"),
                    "uid": meta(vm).get("uid"),
                    "controller": True,
                }
            ],
        },
        "spec": {"vmName": ref[1], "networkConfigs": network_configs},
    }


async def reconcile_vm(ctx: Context, ref: Ref) -> None:
    vm = ctx.store.get(VMS, ref)
    existing = ctx.store.get(VMNETCFGS, ref)
    if vm is None or meta(vm).get("deletionTimestamp"):
        # The garbage collector does this through the owner reference on a real
        # cluster; doing it here too keeps addresses from leaking where it does not run.
        if existing is not None and owned_by(existing, vm, ref[1]):
            await ctx.delete(VMNETCFGS, existing)
        return
    desired = desired_network_configs(ctx, vm, existing)
    if desired is None:
        current = ((existing or {}).get("spec") or {}).get("networkConfigs") or []
        configured = {network_key(c.get("networkName") or "") for c in current}
        if existing is None or not owned_by(existing, vm, ref[1]):
            log.debug("no effective network configs found for vm %s/%s, skipping", *ref)
        elif configured & vm_networks(vm):
            # the VM is still on the network (its pool is gone, or its NIC lost its MAC):
            # keep the vmnetcfg, and a user's ipAddress in it, and the addresses in use
            log.info(
                "vm %s/%s: no NIC with a MAC on a network with a pool; keeping its vmnetcfg",
                *ref,
            )
        else:
            # the VM left every network its vmnetcfg names (upstream keeps the vmnetcfg
            # and its addresses until the VM is deleted)
            log.info("vm %s/%s left its managed networks: deleting its vmnetcfg", *ref)
            await ctx.delete(VMNETCFGS, existing)
        return
    if existing is None:
        if await ctx.create(VMNETCFGS, new_vmnetcfg(ref, vm, desired)) is not None:
            ctx.queue.add((VMNETCFGS, *ref))
        return
    if meta(existing).get("deletionTimestamp"):
        return  # its deletion queues the VM again, which then gets a new one
    patch: Body = {}
    if ((existing.get("spec") or {}).get("networkConfigs") or []) != desired:
        patch["spec"] = {"networkConfigs": desired}
    references = meta(existing).get("ownerReferences") or []
    ours = new_vmnetcfg(ref, vm, desired)["metadata"]["ownerReferences"]
    if owned_by(existing, None, ref[1]) and references != ours:
        # the VM was deleted and created again under its name: owned by the old uid, the
        # garbage collector would delete the vmnetcfg of the new VM
        patch["metadata"] = {"ownerReferences": ours}
    if patch:
        # with the resourceVersion we computed from: a user's edit made meanwhile (an
        # ipAddress) makes this a conflict, and the next try keeps it
        await ctx.patch(VMNETCFGS, existing, patch)
        ctx.queue.add((VMNETCFGS, *ref))

"""What happens for a VirtualMachineNetworkConfig: each NIC of its spec gets an address
from its network's pool (static when asked), what it no longer asks for is released, and
its status says what it holds; deleted or paused, it holds nothing."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from vmdhcp.api import NetworkConfigState, VirtualMachineNetworkConfig
from vmdhcp.controller import declines
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import error, flag, ok, set_condition
from vmdhcp.controller.context import RETRY_SECONDS, VMNETCFGS, Context
from vmdhcp.controller.store import Body, meta
from vmdhcp.mac import InvalidMac
from vmdhcp.validation.view import network_key

log = logging.getLogger("vmdhcp.controller")

Entry = dict[str, str]


def _release(ctx: Context, ref: Ref, keep: set[tuple[str, str]] | None = None) -> None:
    """Release what `ref` holds but `keep`, with one log line per address released."""
    allocator = ctx.allocator
    held = [
        (network, mac, allocator.address_of(ref, network, mac))
        for network, mac in allocator.held_by(ref)
        if (keep is None or (network, mac) not in keep) and network in allocator.ipam
    ]
    ctx.apply(allocator.release_all(ref, keep=keep))
    for network, mac, address in held:
        if address is not None:
            log.info(
                "vmnetcfg %s/%s: released %s of mac %s on network %s",
                *ref,
                address,
                mac,
                network,
            )


def _release_all(ctx: Context, ref: Ref) -> None:
    _release(ctx, ref)
    ctx.metrics.set_vmnetcfg(f"{ref[0]}/{ref[1]}", [])


async def _write_status(
    ctx: Context, body: Body, conditions: list[dict[str, Any]], entries: list[Entry] | None
) -> None:
    status: Body = body.get("status") or {}
    patch: Body = {}
    generation = meta(body).get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if conditions != (status.get("conditions") or []):
        patch["conditions"] = conditions
    if entries is not None and entries != (status.get("networkConfigs") or []):
        patch["networkConfigs"] = entries
    if patch:
        await ctx.patch_status(VMNETCFGS, body, patch)


def _allocate(
    ctx: Context,
    ref: Ref,
    body: Body,
    wanted: list[tuple[str, str, str | None]],
    previous: dict[tuple[str, str], dict[str, Any]],
) -> tuple[list[Entry], list[str]]:
    entries: list[Entry] = []
    problems: list[str] = []
    for network, mac, static in wanted:
        recorded = previous.get((network, mac), {}).get("allocatedIPAddress")
        address, fresh, effects = ctx.allocator.allocate(ref, network, mac, static, recorded)
        ctx.apply(effects)
        if isinstance(address, str):
            problems.append(address)
            kept = ctx.allocator.address_of(ref, network, mac)
            if kept is None:
                continue
            address = kept  # the status says what it still holds (a static change refused)
        elif fresh:
            log.info(
                "vmnetcfg %s/%s: allocated %s to mac %s on network %s", *ref, address, mac, network
            )
            ctx.events.post(
                body,
                "VirtualMachineNetworkConfig",
                "Allocated",
                f"allocated {address} to {mac} on network {network}",
            )
        entries.append(
            {
                "allocatedIPAddress": str(address),
                "macAddress": mac,
                "networkName": network,
                "state": NetworkConfigState.ALLOCATED.value,
            }
        )
    return entries, problems


async def reconcile_vmnetcfg(ctx: Context, ref: Ref) -> None:
    body = ctx.store.get(VMNETCFGS, ref)
    name = f"{ref[0]}/{ref[1]}"
    if body is None:
        _release_all(ctx, ref)
        return
    if meta(body).get("deletionTimestamp"):
        _release_all(ctx, ref)
        await ctx.drop_finalizers(VMNETCFGS, body)
        return
    body = await ctx.ensure_finalizer(VMNETCFGS, body)
    status: Body = body.get("status") or {}
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    now = ctx.now()
    generation = meta(body).get("generation")
    try:
        cfg = VirtualMachineNetworkConfig.model_validate(body)
        wanted = [
            (network_key(nc.network_name), nc.mac, nc.ip_address)
            for nc in cfg.spec.network_configs or []
        ]
    except (ValidationError, InvalidMac) as exc:
        message = str(exc).splitlines()[0]
        conditions = set_condition(
            conditions, "Allocated", *error(message), now=now, generation=generation
        )
        await _write_status(ctx, body, conditions, status.get("networkConfigs"))
        return
    if cfg.spec.paused:
        _release_all(ctx, ref)
        entries = [
            {**entry, "state": NetworkConfigState.PENDING.value}
            for entry in status.get("networkConfigs") or []
        ]
        disabled = f"vmnetcfg {name} was administratively disabled"
        conditions = set_condition(
            conditions, "Allocated", *error(disabled), now=now, generation=generation
        )
        conditions = set_condition(
            conditions, "Disabled", *flag(True, "Paused", ""), now=now, generation=generation
        )
        conditions = set_condition(
            conditions, "InSynced", *ok("InSync"), now=now, generation=generation
        )
        await _write_status(ctx, body, conditions, entries)
        return
    # what it held but no longer asks for
    _release(ctx, ref, keep={(net, mac) for net, mac, _ in wanted})
    previous = {
        (network_key(e.get("networkName") or ""), e.get("macAddress") or ""): e
        for e in status.get("networkConfigs") or []
    }
    entries, problems = _allocate(ctx, ref, body, wanted, previous)
    if not wanted:
        problems.append(f"no network configs found for vmnetcfg {name}")
    allocated = error("; ".join(problems)) if problems else ok("Allocated")
    conditions = set_condition(conditions, "Allocated", *allocated, now=now, generation=generation)
    conditions = set_condition(
        conditions, "Disabled", *flag(False, "", "Active"), now=now, generation=generation
    )
    conditions = set_condition(
        conditions, "InSynced", *ok("InSync"), now=now, generation=generation
    )
    conditions = declines.with_pinned_conflicts(ctx, body, wanted, conditions, now, generation)
    await _write_status(ctx, body, conditions, entries)
    ctx.metrics.set_vmnetcfg(
        name,
        [(e["networkName"], e["macAddress"], e["allocatedIPAddress"], e["state"]) for e in entries],
    )
    if problems:
        ctx.events.post(
            body,
            "VirtualMachineNetworkConfig",
            "AllocationFailed",
            "; ".join(problems),
            warning=True,
        )
        ctx.queue.add_after((VMNETCFGS, *ref), RETRY_SECONDS * 3)

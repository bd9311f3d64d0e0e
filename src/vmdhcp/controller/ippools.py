"""What happens for an IPPool: its IPAM pool built (or reshaped, or forgotten), its agent
pod and NAD link labels, and its status (conditions, agentPodRef, allocations)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from vmdhcp.api import IPPool, NetworkConfigState
from vmdhcp.controller import agents, declines, rogue
from vmdhcp.controller.allocator import Claim, Ref, mac_or_none
from vmdhcp.controller.conditions import error, flag, ok, set_condition
from vmdhcp.controller.context import IPPOOLS, VMNETCFGS, VMS, Context
from vmdhcp.controller.store import Body, meta
from vmdhcp.validation.errors import Operation
from vmdhcp.validation.errors import ValidationError as ValidationFailure
from vmdhcp.validation.ippool import ippool_problems
from vmdhcp.validation.view import Snapshot, network_key

log = logging.getLogger("vmdhcp.controller")


class _SpecOnlyView(Snapshot):
    """A view in which every NAD exists and no other pool or vmnetcfg does: what is left
    of the validators is the pool's own spec."""

    def nad_labels(self, namespace: str, name: str) -> dict[str, str]:
        return {}


_SPEC_ONLY = _SpecOnlyView()


def network_of(body: Body) -> str:
    return network_key((body.get("spec") or {}).get("networkName") or "")


def claims_on(ctx: Context, network: str) -> list[Claim]:
    """What the vmnetcfgs' statuses say they hold on `network`, in a stable order; one
    being deleted holds its addresses until its finalizer goes, when they are released."""
    claims = []
    for ref, body in sorted(ctx.store.items(VMNETCFGS)):
        for entry in (body.get("status") or {}).get("networkConfigs") or []:
            if entry.get("state") != NetworkConfigState.ALLOCATED:
                continue
            if network_key(entry.get("networkName") or "") != network:
                continue
            if entry.get("allocatedIPAddress") and entry.get("macAddress"):
                mac = mac_or_none(entry["macAddress"]) or ""
                pinned = declines.pinned_address(body, network, mac) is not None
                claims.append(Claim(entry["allocatedIPAddress"], entry["macAddress"], ref, pinned))
    return claims


def macs_named_on(ctx: Context, network: str) -> dict[str | None, Ref]:
    """MACs that some vmnetcfg's spec or status names on `network`, and the first (in
    name order) that names each."""
    named: dict[str | None, Ref] = {}
    for ref, body in sorted(ctx.store.items(VMNETCFGS)):
        entries = [
            *((body.get("spec") or {}).get("networkConfigs") or []),
            *((body.get("status") or {}).get("networkConfigs") or []),
        ]
        for entry in entries:
            if network_key(entry.get("networkName") or "") == network:
                named.setdefault(mac_or_none(entry.get("macAddress")), ref)
    return named


def build_pool(ctx: Context, ref: Ref, body: Body) -> str | None:
    """Serve the pool's network from the allocator; returns why it cannot."""
    network = network_of(body)
    holder = ctx.allocator.holder(network)
    if holder is not None and holder != ref:
        return f"network {network} is already served by ippool {holder[0]}/{holder[1]}"
    try:
        pool = IPPool.model_validate(body)
    except ValidationError as exc:
        return f"invalid ippool: {exc.errors()[0]['msg']}"
    config = pool.spec.ipv4_config
    if config is None:
        return "spec.ipv4Config is missing"
    if ctx.allocator.built(network, config):
        return None
    fresh = not ctx.allocator.serves(network)
    if fresh:
        # the webhook's rules, for pools that reached us without it (webhook down, or
        # created before it existed); the NAD and other pools are judged elsewhere
        problems = ippool_problems(pool, _SPEC_ONLY, service_cidr=ctx.config.service_cidr)
        if problems:
            return str(ValidationFailure(Operation.CREATE, "IPPool", *ref, problems))
    status_allocated = ((body.get("status") or {}).get("ipv4") or {}).get("allocated") or {}
    problem, effects = ctx.allocator.build(
        ref,
        network,
        config,
        claims_on(ctx, network) if fresh else (),
        status_allocated if fresh else {},
        macs_named_on(ctx, network) if fresh else {},
        aside_until=ctx.clock() + ctx.config.decline_quarantine_seconds,
    )
    if problem is not None:
        return problem
    for message in effects.conflicts:
        log.warning("ippool %s/%s: allocation conflict: %s", *ref, message)
        ctx.events.post(body, "IPPool", "AllocationConflict", message, warning=True)
    if not fresh:
        log.info("ippool %s/%s: pool rebuilt after a spec change", *ref)
    effects.changed.discard(ref)  # this reconcile writes the status itself
    ctx.apply(effects)
    if fresh:
        for vm_ref in ctx.store.refs(VMS):  # VMs on this network now get a vmnetcfg
            ctx.queue.add((VMS, *vm_ref))
    return None


def forget_pool(ctx: Context, ref: Ref) -> None:
    """IPPool `ref` no longer serves: its network is free, so a pool refused for it (a
    second pool on the network) is reconciled again and may take it."""
    served = [n for n in ctx.allocator.pool_of_network if ctx.allocator.holder(n) == ref]
    ctx.status_writes.cancel((IPPOOLS, *ref))
    ctx.status_due.discard((IPPOOLS, *ref))
    ctx.agent_leases.pop(ref, None)
    declines.forget(ctx, ref)
    ctx.apply(ctx.allocator.forget_pool(ref))
    ctx.metrics.remove_pool(f"{ref[0]}/{ref[1]}")
    for other, body in ctx.store.items(IPPOOLS):
        if other != ref and network_of(body) in served:
            ctx.queue.add((IPPOOLS, *other))


def conditions_of(
    ctx: Context, ref: Ref, body: Body, problem: str | None, now: str
) -> list[dict[str, Any]]:
    status: Body = body.get("status") or {}
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    paused = bool((body.get("spec") or {}).get("paused"))
    disabled = f"ippool {ref[0]}/{ref[1]} was administratively disabled"
    generation = meta(body).get("generation")
    cache_ready = (
        error(problem) if problem is not None else error(disabled) if paused else ok("PoolBuilt")
    )
    conditions = set_condition(
        conditions, "CacheReady", *cache_ready, now=now, generation=generation
    )
    conditions = set_condition(
        conditions, "Stopped", *flag(paused, "Paused", "Serving"), now=now, generation=generation
    )
    found = ctx.allocator.conflicts.get(ref)
    had = any(c.get("type") == "Conflicts" for c in conditions)
    if found is not None and (found or had):
        # what the last build could not honour (upstream resolves conflicts silently);
        # the first claim won, the others were allocated again
        summary = f"{len(found)} at rebuild: " + "; ".join(found[:5]) if found else ""
        conditions = set_condition(
            conditions,
            "Conflicts",
            bool(found),
            "RestoreConflict" if found else "NoConflict",
            summary[:1024],
            now=now,
            generation=generation,
        )

    def changed(seen: bool, message: str) -> None:
        log.log(logging.WARNING if seen else logging.INFO, "ippool %s/%s: %s", *ref, message)

    report = rogue.report_of(ctx, ref)
    return rogue.with_rogue_condition(conditions, report, body, now, generation, changed)


def allocation_patch(ctx: Context, ref: Ref, body: Body, now: str) -> Body:
    """The status fields that differ from what the allocator holds for the pool."""
    network = network_of(body)
    if ctx.allocator.holder(network) != ref or ctx.status_may_wait(ref):
        return {}  # not ours, or more changes are gathering (see Context.status_may_wait)
    snapshot, desired, used, available = ctx.allocator.status(network)
    ctx.metrics.set_pool(f"{ref[0]}/{ref[1]}", str(snapshot.network), network, used, available)
    current_ipv4 = (body.get("status") or {}).get("ipv4") or {}
    current = current_ipv4.get("allocated") or {}
    changes: dict[str, str | None] = {
        ip: mac for ip, mac in desired.items() if current.get(ip) != mac
    }
    changes.update({ip: None for ip in current if ip not in desired})
    if (
        not changes
        and current_ipv4.get("used") == used
        and current_ipv4.get("available") == available
    ):
        return {}
    return {"ipv4": {"allocated": changes, "used": used, "available": available}, "lastUpdate": now}


async def reconcile_ippool(ctx: Context, ref: Ref) -> None:
    body = ctx.store.get(IPPOOLS, ref)
    if body is None:
        forget_pool(ctx, ref)
        return
    network = network_of(body)
    if meta(body).get("deletionTimestamp"):
        # by name, not from the store: right after a start the pod and NAD lists may not
        # have arrived yet, and a forgotten agent pod would serve for ever
        await agents.delete_agent(ctx, ref, by_name=True)
        await agents.unlabel_nad(ctx, ref, network, read=True)
        forget_pool(ctx, ref)
        await ctx.drop_finalizers(IPPOOLS, body)
        return
    body = await ctx.ensure_finalizer(IPPOOLS, body)
    now = ctx.now()
    problem = build_pool(ctx, ref, body)
    if problem is not None:
        log.warning("ippool %s/%s cannot be served: %s", *ref, problem)
    else:
        declines.act(ctx, ref, body, network)
    conditions = conditions_of(ctx, ref, body, problem, now)
    status: Body = body.get("status") or {}
    paused = bool((body.get("spec") or {}).get("paused"))
    agent_ref = status.get("agentPodRef")
    if paused or problem is not None:
        # a pool we cannot serve gets no agent: a second pool on a network would be a
        # second DHCP server on it, and it must not take over the NAD's link labels
        disabled = f"ippool {ref[0]}/{ref[1]} was administratively disabled"
        reason = disabled if paused else str(problem)
        await agents.delete_agent(ctx, ref)
        agent_ref = None
        registered = agent_ready = error(reason)
    elif ctx.config.no_agent:
        # the NAD still names its pool (upstream's ensureNADLabels runs whatever the mode):
        # the webhook and the vmnetcfgs find the pool through it
        await agents.label_nad(ctx, ref, network)
        registered = agent_ready = ok("AgentsDisabled")
    else:
        await agents.label_nad(ctx, ref, network)
        registered, agent_ready, agent_ref = await agents.ensure_agent(ctx, ref, body, network)
    generation = meta(body).get("generation")
    conditions = set_condition(
        conditions, "Registered", *registered, now=now, generation=generation
    )
    conditions = set_condition(
        conditions, "AgentReady", *agent_ready, now=now, generation=generation
    )

    patch: Body = {}
    if generation is not None and status.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if conditions != (status.get("conditions") or []):
        patch["conditions"] = conditions
    if agent_ref != status.get("agentPodRef"):
        patch["agentPodRef"] = agent_ref
    if problem is None:
        patch.update(allocation_patch(ctx, ref, body, now))
    if patch:
        await ctx.patch_status(IPPOOLS, body, patch)

"""DHCPDECLINEs the agents report (`vmdhcp.agent.declines`), acted on: the declined address
is set aside for `--decline-quarantine` seconds and the MAC gets another address; for an
address the user pinned (`ipAddress`, or the VM's static-ip annotation) nothing moves, and
the vmnetcfg's condition `AddressConflict` says the pinned address conflicts.

The path: the serving agent keeps the pool's report Lease in the agent namespace (which it
may write already, for its election) with `declined` entries (`mac`, `address`, `at`); the
controller watches those Leases (`rogue.Reports`, read only) and acts here, in the pool's
reconcile. The agent gets no new privilege, and writes nothing but that Lease.

What is trusted, and how far: nothing on a VM network is authenticated, so the agent hears
a DECLINE only from a MAC that holds a lease, for that very address, at most 16 at once
(see the agent's side); here an entry moves a MAC only while that MAC still holds exactly
that address (so a report seen again, after a restart or a relist, never moves it twice:
it holds another address by then), only once per entry (by `mac`, `address` and the agent's
`at`, which is never compared with any clock), and only while fewer than `MAX_ASIDE`
addresses of the pool are set aside. An entry refused for the limit or for want of a
vmnetcfg is not marked acted on: it is tried again at the pool's next reconcile (counted and
announced once). Each entry is counted once in `vmdhcpcontroller_declines_total{result}`.

The quarantine is counted on this controller's monotonic clock from when it acted; the
IPPool status marks the address `DECLINED` (no time in it), so a restarted controller (or
a new leader) sets it aside again for a whole quarantine from when it rebuilt the pool: an
address is never given out earlier than the quarantine, at most twice as late.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter

from vmdhcp.agent.report import DeclinedAddress
from vmdhcp.controller import rogue
from vmdhcp.controller.allocator import Ref, mac_or_none
from vmdhcp.controller.conditions import Condition, set_condition
from vmdhcp.controller.context import IPPOOLS, VMNETCFGS, Context
from vmdhcp.controller.store import Body, meta, ref_of
from vmdhcp.validation.view import network_key

log = logging.getLogger("vmdhcp.controller")

CONDITION = "AddressConflict"
CONFLICT, NO_CONFLICT = "PinnedAddressDeclined", "NoConflict"
MAX_ASIDE = 16
"""Addresses of one pool set aside at once at most: forged DECLINEs cannot empty a pool."""
RESULTS = ("honoured", "pinned", "not_allocated", "no_vmnetcfg", "limit")
RETRIED = frozenset(("no_vmnetcfg", "limit"))
"""Entries not acted on for now: looked at again (and counted again) at the next reconcile."""
MESSAGE_LIMIT = 1024

_counters: WeakKeyDictionary[CollectorRegistry, Counter] = WeakKeyDictionary()


def counter(ctx: Context) -> Counter:
    """`vmdhcpcontroller_declines_total{result}`, in the controller's registry."""
    registry = ctx.metrics.registry
    found = _counters.get(registry)
    if found is None:
        found = Counter(
            "vmdhcpcontroller_declines",
            "DHCPDECLINEs reported by the agents, by what was done: honoured (set aside, the "
            "MAC moved), pinned (a pinned address: reported, not moved), not_allocated (the MAC "
            "does not hold that address), no_vmnetcfg, limit (too many set aside)",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            found.labels(result)
        _counters[registry] = found
    return found


def entries_of(ctx: Context, pool: Ref, body: Body | None) -> tuple[DeclinedAddress, ...]:
    """The declined entries the pool's serving agent reports (none from a report of an older
    pool of that name)."""
    report = rogue.report_of(ctx, pool)
    pool_uid = str(meta(body).get("uid") or "")
    if report is None or not report.ippool_uid or report.ippool_uid != pool_uid:
        return ()
    return report.declined


def act(ctx: Context, ref: Ref, body: Body, network: str) -> None:
    """In the pool's reconcile, once its pool is built: set-aside addresses whose time is up
    go back, and every new declined entry is acted on."""
    allocator = ctx.allocator
    now = ctx.clock()
    effects = allocator.expire(network, now)
    effects.changed.discard(ref)  # this reconcile writes the status itself
    ctx.apply(effects)
    entries = entries_of(ctx, ref, body)
    current = {(e.mac, e.address, e.at) for e in entries}
    previous = ctx.declined_seen.get(ref, set())
    for mac, _, _ in previous ^ current:  # pinned conditions follow the report
        owner = allocator.owners.get((network, mac_or_none(mac) or ""))
        if owner is not None:
            ctx.queue.add((VMNETCFGS, *owner))
    seen, refused_before, refused = set(current), ctx.declined_refused.get(ref, set()), set()
    for entry in entries:
        key = (entry.mac, entry.address, entry.at)
        if key in previous:
            continue  # acted on already, whatever came of it
        again = key in refused_before
        result = _act_on(ctx, ref, body, network, entry, now, quiet=again)
        if result in RETRIED:
            seen.discard(key)  # not acted on: tried again at the pool's next reconcile
            refused.add(key)
        if not (again and result in RETRIED):
            counter(ctx).labels(result).inc()
    ctx.declined_seen[ref] = seen
    ctx.declined_refused[ref] = refused
    expiry = allocator.next_expiry(network)
    if expiry is not None:
        ctx.queue.add_after((IPPOOLS, *ref), max(0.0, expiry - now) + 0.01)


def forget(ctx: Context, ref: Ref) -> None:
    ctx.declined_seen.pop(ref, None)
    ctx.declined_refused.pop(ref, None)


def _act_on(
    ctx: Context,
    ref: Ref,
    body: Body,
    network: str,
    entry: DeclinedAddress,
    now: float,
    *,
    quiet: bool = False,
) -> str:
    allocator = ctx.allocator
    mac = mac_or_none(entry.mac) or ""
    owner = allocator.owners.get((network, mac))
    held = None if owner is None else allocator.address_of(owner, network, mac)
    if owner is None or held is None or str(held) != entry.address:
        log.info(
            "ippool %s/%s: %s ignored: the mac holds %s", *ref, entry.describe(), held or "nothing"
        )
        return "not_allocated"
    cfg = ctx.store.get(VMNETCFGS, owner)
    if cfg is None or meta(cfg).get("deletionTimestamp"):
        return "no_vmnetcfg"
    if pinned_address(cfg, network, mac) is not None:
        log.warning("vmnetcfg %s/%s: %s, its pinned address: not moved", *owner, entry.describe())
        return "pinned"  # the vmnetcfg's reconcile (queued above) sets the condition
    if len(allocator.aside.get(network, {})) >= MAX_ASIDE:
        message = (
            f"{entry.describe()} on network {network}: not acted on, {MAX_ASIDE} addresses of "
            "this pool are set aside already (forged DECLINEs cannot take more)"
        )
        if not quiet:  # announced once, tried again at every reconcile of the pool
            log.warning("ippool %s/%s: %s", *ref, message)
            ctx.events.post(body, "IPPool", "DeclineIgnored", message, warning=True)
        return "limit"
    quarantine = ctx.config.decline_quarantine_seconds
    got, effects = allocator.decline(owner, network, mac, entry.address, now + quarantine)
    if got is None:
        return "not_allocated"
    effects.changed.discard(ref)
    ctx.apply(effects)
    ctx.queue.add((VMNETCFGS, *owner))  # its status shows the new address
    after = (
        f"it now has {got}"
        if isinstance(got, IPv4Address)
        else f"no other address for it yet ({got})"
    )
    message = (
        f"mac {mac} declined {entry.address} on network {network}: another host answers for "
        f"it on the network (DHCPDECLINE); {entry.address} is set aside for {quarantine:g}s, "
        f"{after}"
    )
    log.warning("vmnetcfg %s/%s: %s", *owner, message)
    ctx.events.post(cfg, "VirtualMachineNetworkConfig", "AddressDeclined", message, warning=True)
    return "honoured"


def pinned_address(cfg: Body, network: str, mac: str) -> str | None:
    """The address the vmnetcfg's spec pins for `mac` on `network` (`ipAddress`), if any."""
    for nc in (cfg.get("spec") or {}).get("networkConfigs") or []:
        if network_key(nc.get("networkName") or "") != network:
            continue
        if mac_or_none(nc.get("macAddress")) != mac:
            continue
        static = str(nc.get("ipAddress") or "").strip()
        return static if static and static != "0.0.0.0" else None
    return None


def with_pinned_conflicts(
    ctx: Context,
    body: Body,
    wanted: list[tuple[str, str, str | None]],
    conditions: list[Condition],
    now: str,
    generation: int | None,
) -> list[Condition]:
    """`conditions` with `AddressConflict` set: True while the agent reports that a VM
    declined one of its pinned addresses (with an Event when it turns True) and for
    `--decline-quarantine` seconds (this controller's monotonic clock) after it last did, so
    that it does not flap while the agent's hold runs out and the VM declines again; False
    after that; a vmnetcfg that never had such a conflict does not get the condition."""
    found = []
    ref, clock = ref_of(body), ctx.clock()
    for network, mac, static in wanted:
        pool = ctx.allocator.holder(network)
        if not static or pool is None:
            continue
        key = (ref, network, mac, static)
        message = (
            f"pinned address {static} of mac {mac} on network {network} conflicts: the "
            "VM declined it (DHCPDECLINE: another host answers for it on the network); "
            "it is not moved: free the address on the network, or pin another one"
        )
        entries = entries_of(ctx, pool, ctx.store.get(IPPOOLS, pool))
        if any(mac_or_none(e.mac) == mac and _same_address(e.address, static) for e in entries):
            # kept for a quarantine on our clock after the agent last reported it: the
            # agent offers the address again after its hold, and the VM declines it again
            ctx.pinned_conflicts[key] = clock + ctx.config.decline_quarantine_seconds
        until = ctx.pinned_conflicts.get(key)
        if until is None:
            continue
        if until <= clock:
            del ctx.pinned_conflicts[key]
            continue
        found.append(message)
        ctx.queue.add_after((VMNETCFGS, *ref), until - clock + 0.01)
    present = next((c for c in conditions if c.get("type") == CONDITION), None)
    if not found and present is None:
        return conditions
    message = "; ".join(found)[:MESSAGE_LIMIT]
    if found and (present is None or present.get("status") != "True"):
        log.warning("vmnetcfg %s/%s: %s", *ref_of(body), message)
        ctx.events.post(
            body, "VirtualMachineNetworkConfig", "PinnedAddressConflict", message, warning=True
        )
    reason = CONFLICT if found else NO_CONFLICT
    return set_condition(
        conditions, CONDITION, bool(found), reason, message, now=now, generation=generation
    )


def _same_address(a: str, b: str) -> bool:
    try:
        return IPv4Address(a.strip()) == IPv4Address(b.strip())
    except ValueError:
        return False

"""A pool's agent replicas (`--agent-replicas` > 1): N pods, one serving (the holder of
the Lease `agent_lease_name(pool)` in the agent namespace, which the agents elect), a
PodDisruptionBudget, roll-outs one pod at a time with the serving one last, and healing
of a replica that stopped serving. The controller reads the Lease at each reconcile for
the status, and reconciles such a pool again every POLL_SECONDS, since a failover need
not change any pod (a leader cut off from the API server stays Ready)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vmdhcp.api.constants import ANNOTATION_HOLD_AGENT_UPGRADE, agent_lease_name
from vmdhcp.controller.agentpods import (
    REPLICA_SLOTS,
    agent_manifest,
    clear_the_way,
    create_pod,
    delete_pod,
    node_lost,
    pod_reference,
    stray_pods,
    terminating,
    waiting_message,
)
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import error, ok
from vmdhcp.controller.context import IPPOOLS, PODS, Context
from vmdhcp.controller.manifests import (
    agent_base_name,
    agent_pdb,
    agent_replica_name,
    pod_image,
    pod_is_ready,
)
from vmdhcp.controller.store import Body, meta, ref_of, uid
from vmdhcp.errors import ApiError

_monotonic = time.monotonic  # our own clock, for what we judge by elapsed time (tests set it)

Condition = tuple[bool, str, str]
POLL_SECONDS = 5.0
"""A pool with agent replicas is reconciled again this often, to follow its Lease's holder."""
HANDOVER_POLL_SECONDS = 1.0
"""How often while no one holds the Lease and a replica is Ready: a takeover is near."""
SILENT_FRACTION = 2 / 3
"""A holder that has not renewed for this part of its Lease's duration has stopped
serving by its own rule: the agents' renew deadline is 8 s of their 12 s lease."""


async def ensure_pdb(ctx: Context, ref: Ref) -> None:
    namespace = ctx.config.agent_namespace
    body = agent_pdb(
        pool_namespace=ref[0],
        pool_name=ref[1],
        agent_namespace=namespace,
        replicas=ctx.config.agent_replicas,
    )
    try:
        current = await ctx.kube.read_pdb(namespace, agent_base_name(*ref))
    except ApiError as exc:
        if not exc.not_found:
            raise
        current = None
    if current is not None:
        spec = current.get("spec") or {}
        wanted = body["spec"]
        # a server without the unhealthyPodEvictionPolicy field drops it: not a difference
        # to correct (or the budget would be replaced at every reconcile)
        policy = spec.get("unhealthyPodEvictionPolicy")
        if (
            spec.get("minAvailable") == wanted["minAvailable"]
            and policy in (None, wanted["unhealthyPodEvictionPolicy"])
            and "maxUnavailable" not in spec
        ):
            return
        # another number of replicas, or an older budget: replaced (no patch grant needed)
        await ctx.kube.delete_pdb(namespace, agent_base_name(*ref), uid=uid(current) or None)
    try:
        await ctx.kube.create_pdb(namespace, body)
    except ApiError as exc:
        if not exc.conflict:
            raise


def next_to_roll(replicas: list[Body], holder: str, image: str) -> Body | None:
    """The one replica to replace now for a new `image`, if any. One at a time (none while
    a replica is missing or going); the ones that are not Ready first (replacing them takes
    nothing away), then the standbys, the Lease's holder last; and a Ready one only while
    every other replica is Ready, so that a roll-out never leaves fewer than N - 1 Ready."""
    if any(terminating(pod) for pod in replicas):
        return None
    stale = [pod for pod in replicas if pod_image(pod) != image]
    if not stale:
        return None

    def order(pod: Body) -> tuple[bool, bool, int]:
        return pod_is_ready(pod), meta(pod).get("name") == holder, replicas.index(pod)

    candidate = min(stale, key=order)
    others = [pod for pod in replicas if pod is not candidate]
    if pod_is_ready(candidate) and not all(pod_is_ready(pod) for pod in others):
        return None
    return candidate


async def _still_to_roll(
    ctx: Context, replicas: list[Body], stale: Body, holder: str, image: str
) -> bool:
    """The roll-out's choice confirmed on the replicas as the API server has them now, not
    as the watch last showed them: a drain may just have evicted another one, and the
    budget does not guard our own deletes."""
    fresh = []
    for pod in replicas:
        try:
            fresh.append(await ctx.kube.read_pod(*ref_of(pod)))
        except ApiError as exc:
            if not exc.not_found:
                raise
            return False  # one is gone already: wait for its replacement
    again = next_to_roll(fresh, holder, image)
    return again is not None and uid(again) == uid(stale)


async def _lease_holder(ctx: Context, ref: Ref) -> tuple[str, str]:
    """Who holds the pool's Lease: "" when no one does, there is no Lease yet, or the
    holder has not renewed it for its renew deadline (SILENT_FRACTION of the duration),
    after which it stops serving by its own rule. That is judged on our own clock, since
    we last saw the record change (a dead leader's pod may look Ready for 40 s, until its
    node is NotReady; its Lease says it stopped). Second: the holder before, when
    this read is the first to show another holder than the last one we saw (a failover, a
    handover); "" otherwise, and on our first read of it."""
    try:
        lease = await ctx.kube.read_agent_lease(ctx.config.agent_namespace, agent_lease_name(*ref))
    except ApiError as exc:
        if not exc.not_found:
            raise
        ctx.agent_leases.pop(ref, None)
        return "", ""
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    record = f"{holder}/{spec.get('renewTime')}/{meta(lease).get('resourceVersion')}"
    now = _monotonic()
    seen, since, last = ctx.agent_leases.get(ref, ("", now, ""))
    if seen != record:
        since = now
    ctx.agent_leases[ref] = (record, since, holder or last)
    before = last if holder and last and holder != last else ""
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if holder and duration and now - since > duration * SILENT_FRACTION:
        return "", ""  # silent: no one serves until a standby takes it
    return holder, before


def agent_ready(replicas: list[Body], serving: Body | None, holder: str, lease: str) -> Condition:
    """AgentReady of a pool with replicas: true while the Lease's holder is Ready."""
    ready = [pod for pod in replicas if pod_is_ready(pod) and not terminating(pod)]
    if serving is not None and pod_is_ready(serving):
        standbys = [pod for pod in replicas if pod is not serving]
        ready_standbys = [pod for pod in ready if pod is not serving]
        message = (
            f"agent pod {holder} serves; {len(ready_standbys)} of {len(standbys)} standbys ready"
        )
        nodes = {(pod.get("spec") or {}).get("nodeName") for pod in replicas}
        if len(replicas) > 1 and len(nodes) == 1 and None not in nodes:
            message += f"; all on node {nodes.pop()}: that node's failure stops the pool"
        return True, "AgentPodReady", message
    count = f"{len(ready)} of {len(replicas)} agent pods ready"
    if not holder:
        return error(f"no agent pod holds lease {lease} yet; {count}")
    if serving is None:
        return error(f"agent pod {holder} holds lease {lease} but is gone; {count}")
    return error(f"agent pod {holder} holds lease {lease} but is not ready; {count}")


def _stuck(ctx: Context, pod: Body) -> bool:
    """A replica that served and has been Terminating, or not Ready (its node NotReady:
    Kubernetes marks its pods so), for longer than --agent-replace-after, measured on our
    own clock from when we first saw it so. It served if we saw it Ready, or if its status
    shows the node lifecycle's mark (a restarted controller still heals a pool whose node
    died with it). One never Ready yet is starting (an image pull), not stuck."""
    key = uid(pod)
    if pod_is_ready(pod) and not terminating(pod):
        ctx.agents_seen_ready.add(key)
        ctx.agents_unwell_since.pop(key, None)
        return False
    if not terminating(pod) and key not in ctx.agents_seen_ready and not node_lost(pod):
        return False
    if len(ctx.agents_unwell_since) > 10_000:  # uids of pods long gone: bound the memory
        ctx.agents_unwell_since.clear()
    if len(ctx.agents_seen_ready) > 10_000:
        ctx.agents_seen_ready.clear()
    since = ctx.agents_unwell_since.setdefault(key, _monotonic())
    return _monotonic() - since > ctx.config.agent_replace_seconds


async def _heal(
    ctx: Context,
    ref: Ref,
    body: Body,
    present: dict[int, Body],
    make: Callable[[int], Body],
    holder: str,
) -> dict[int, Body]:
    """The replicas that count (all but the stuck ones), brought to N: a stuck one is
    replaced by a new pod under a free index (never force-deleted: its node may come
    back, then the spare goes); extras beyond N go, never the Lease's holder."""
    counted = {i: pod for i, pod in present.items() if not _stuck(ctx, pod)}
    wanted = ctx.config.agent_replicas
    for index in range(REPLICA_SLOTS):
        if len(counted) >= wanted:
            break
        if index in present:
            continue
        pod = await create_pod(ctx, make(index))
        present[index] = counted[index] = pod
        stuck = sorted(str(meta(p).get("name")) for i, p in present.items() if i not in counted)
        if stuck:
            ctx.events.post(
                body,
                "IPPool",
                "AgentReplaced",
                f"agent pod {meta(pod).get('name')} started: {', '.join(stuck)} stopped serving "
                f"more than {ctx.config.agent_replace_seconds:g}s ago",
                warning=True,
            )
    extras = sorted(
        (i for i, pod in counted.items() if meta(pod).get("name") != holder),
        key=lambda i: (pod_is_ready(counted[i]), -i),
    )
    while len(counted) > wanted and extras:
        index = extras.pop(0)
        if not terminating(counted[index]):
            await delete_pod(ctx, ref_of(counted[index]))
        del counted[index]
    return counted


async def ensure_replicas(
    ctx: Context, ref: Ref, body: Body, network: str, cluster_network: str, image: str
) -> tuple[Condition, Condition, dict[str, Any] | None]:
    """The pool's N agent replicas and their PodDisruptionBudget, as they should be; the
    one serving is the holder of the pool's Lease."""
    namespace = ctx.config.agent_namespace
    # the first reconcile after a run without replicas: its pod goes first
    strays = stray_pods(ctx, ref)
    waiting = await clear_the_way(ctx, strays)
    if waiting:
        ctx.queue.add_after((IPPOOLS, *ref), 1.0)
        shown = (body.get("status") or {}).get("agentPodRef")
        return ok("AgentPodCreated"), error(waiting_message(waiting)), shown
    identity, before = await _lease_holder(ctx, ref)
    holder, _, holder_uid = identity.partition("_")
    present = {
        index: pod
        for index in range(REPLICA_SLOTS)
        if (pod := ctx.store.get(PODS, (namespace, agent_replica_name(*ref, index))))
    }
    counted = await _heal(
        ctx,
        ref,
        body,
        present,
        lambda index: agent_manifest(ctx, ref, body, network, cluster_network, image, index),
        holder,
    )
    replicas = [counted[index] for index in sorted(counted)]
    await ensure_pdb(ctx, ref)
    if before and holder in {meta(pod).get("name") for pod in present.values()}:
        previous = before.partition("_")[0]
        was = "a pod of the same name" if previous == holder else previous
        ctx.events.post(body, "IPPool", "AgentFailover", f"agent pod {holder} serves (was {was})")
    # a stuck replica (its node dead) does not hold the roll-out up: it is not counted
    leaving = any(terminating(pod) for pod in counted.values())
    short = leaving or len(counted) < ctx.config.agent_replicas
    stale = None if short else next_to_roll(replicas, holder, image)
    if stale is not None and ANNOTATION_HOLD_AGENT_UPGRADE in (meta(body).get("annotations") or {}):
        stale = None
    if stale is not None and await _still_to_roll(ctx, replicas, stale, holder, image):
        await delete_pod(ctx, ref_of(stale))
        rolled = str(meta(stale).get("name"))
        role = "the serving agent" if rolled == holder else "a standby"
        ctx.events.post(
            body,
            "IPPool",
            "AgentRollout",
            f"agent pod {rolled} ({role}): image {pod_image(stale)} replaced by {image}",
        )
        # as the watch will show it: going (its replacement comes once it is gone)
        going = {**stale, "metadata": {**meta(stale), "deletionTimestamp": ctx.now()}}
        replicas = [going if pod is stale else pod for pod in replicas]
    known = {meta(pod).get("name"): pod for pod in [*present.values(), *strays]}
    serving = known.get(holder) if holder else None
    if serving is not None and holder_uid and uid(serving) != holder_uid:
        serving = None  # a new pod of the holder's name: the holder itself is gone
    lease = f"{namespace}/{agent_lease_name(*ref)}"
    shown = serving or next((p for p in replicas if not terminating(p)), replicas[0])
    soon = not holder and any(pod_is_ready(pod) for pod in replicas)
    ctx.queue.add_after((IPPOOLS, *ref), HANDOVER_POLL_SECONDS if soon else POLL_SECONDS)
    return (
        ok("AgentPodCreated"),
        agent_ready(replicas, serving, holder, lease),
        pod_reference(shown, image),
    )

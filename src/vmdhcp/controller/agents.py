"""An IPPool's agent pod (created, rolled to a new image, adopted, deleted), or its agent
replicas (`--agent-replicas` > 1) and their PodDisruptionBudget, and the link labels on its
NetworkAttachmentDefinition.

With replicas, the agents elect the one that serves (the holder of the Lease
`agent_lease_name(pool)` in the agent namespace); the controller reads that Lease at each
reconcile for the status, and reconciles such a pool again every POLL_SECONDS, since a
failover need not change any pod (a leader cut off from the API server stays Ready)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from vmdhcp.api import split_network_name
from vmdhcp.api.constants import (
    ANNOTATION_HOLD_AGENT_UPGRADE,
    LABEL_CLUSTER_NETWORK,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    agent_lease_name,
)
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import error, ok
from vmdhcp.controller.config import parse_image
from vmdhcp.controller.context import IPPOOLS, NADS, PODS, RETRY_SECONDS, Context
from vmdhcp.controller.manifests import (
    agent_base_name,
    agent_pdb,
    agent_pod,
    agent_pod_name,
    agent_replica_name,
    pod_image,
    pod_is_ready,
)
from vmdhcp.controller.store import Body, meta, ref_of, uid
from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.controller")
_monotonic = time.monotonic  # our own clock, for what we judge by elapsed time (tests set it)

Condition = tuple[bool, str, str]
REPLICA_SLOTS = 10
"""Replica indices 0 to 9: N of them in use, the others for replacements of stuck pods."""
POLL_SECONDS = 5.0
"""A pool with agent replicas is reconciled again this often, to follow its Lease's holder."""


def _links_to(nad: Body | None, ref: Ref) -> bool:
    labels = meta(nad).get("labels") or {}
    return bool(
        labels.get(LABEL_IPPOOL_NAMESPACE) == ref[0] and labels.get(LABEL_IPPOOL_NAME) == ref[1]
    )


async def label_nad(ctx: Context, ref: Ref, network: str) -> None:
    nad = ctx.store.get(NADS, split_network_name(network))
    if nad is None or _links_to(nad, ref):
        return
    labels = {LABEL_IPPOOL_NAMESPACE: ref[0], LABEL_IPPOOL_NAME: ref[1]}
    await ctx.patch(NADS, nad, {"metadata": {"labels": labels}})


async def unlabel_nad(ctx: Context, ref: Ref, network: str, read: bool = False) -> None:
    """Remove the link labels from the NAD, if they still point at this pool (upstream
    leaves them behind); `read` it from the API server when the store lacks it."""
    nad_ref = split_network_name(network)
    nad = ctx.store.get(NADS, nad_ref)
    if nad is None and read:
        try:
            nad = await ctx.kube.get_object(
                NAD_GROUP, NAD_VERSION, nad_ref[0], NAD_PLURAL, nad_ref[1]
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
            return
    if nad is None or not _links_to(nad, ref):
        return
    labels = {LABEL_IPPOOL_NAMESPACE: None, LABEL_IPPOOL_NAME: None}
    try:
        await ctx.patch(NADS, nad, {"metadata": {"labels": labels}})
    except ApiError as exc:
        if not exc.not_found:
            raise


def agent_names(ctx: Context, ref: Ref) -> list[str]:
    """The names of the pool's agent pods: upstream's one, or `<base>-<i>` for each replica."""
    if ctx.config.agent_replicas == 1:
        return [agent_pod_name(*ref)]
    return [agent_replica_name(*ref, i) for i in range(ctx.config.agent_replicas)]


def _strays(ctx: Context, ref: Ref) -> list[Body]:
    """The pool's agent pods in the store that should not be there: upstream's single pod
    left by a run with one replica, or replicas left by a run with them (looked up by
    every name they can have, so no scan of the store). With replicas, how many of them
    is `_heal`'s business."""
    if ctx.config.agent_replicas > 1:
        single = ctx.store.get(PODS, (ctx.config.agent_namespace, agent_pod_name(*ref)))
        return [single] if single is not None and _links_to(single, ref) else []
    wanted = set(agent_names(ctx, ref))
    names = [
        agent_pod_name(*ref),
        *(agent_replica_name(*ref, i) for i in range(REPLICA_SLOTS)),
    ]
    found = []
    for name in dict.fromkeys(names):
        pod = ctx.store.get(PODS, (ctx.config.agent_namespace, name))
        if name not in wanted and pod is not None and _links_to(pod, ref):
            found.append(pod)
    return found


def _terminating(pod: Body | None) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


async def _delete_pod(ctx: Context, pod_ref: Ref, by_name: bool = False) -> None:
    """Delete the agent pod `pod_ref`: the one in the store (by uid), or `by_name` the one
    the API server has under that name when the store has none."""
    pod = ctx.store.get(PODS, pod_ref)
    if pod is None and not by_name:
        return
    if pod is not None and _terminating(pod):
        return
    try:
        await ctx.kube.delete_pod(*pod_ref, uid=uid(pod) or None)
        log.info("agent pod %s/%s deleted", *pod_ref)
    except ApiError as exc:
        if not exc.not_found:
            raise
    if pod is not None:
        ctx.store.drop(PODS, pod)


async def _ensure_pdb(ctx: Context, ref: Ref) -> None:
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
        if (
            all(
                spec.get(key) == wanted[key]
                for key in ("minAvailable", "unhealthyPodEvictionPolicy")
            )
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


async def _drop_pdb(ctx: Context, ref: Ref) -> None:
    namespace, name = ctx.config.agent_namespace, agent_base_name(*ref)
    try:
        pdb = await ctx.kube.read_pdb(namespace, name)
    except ApiError as exc:
        if not exc.not_found:
            raise
        return
    try:
        await ctx.kube.delete_pdb(namespace, name, uid=uid(pdb) or None)
    except ApiError as exc:
        if not (exc.not_found or exc.conflict):
            raise


async def delete_agent(ctx: Context, ref: Ref, by_name: bool = False) -> None:
    """Delete the pool's agent pods (and PodDisruptionBudget): the ones in the store (by
    uid), or `by_name` the ones the API server has under the agents' names when the store
    has none."""
    if ctx.config.no_agent:
        return
    for name in agent_names(ctx, ref):
        await _delete_pod(ctx, (ctx.config.agent_namespace, name), by_name)
    strays = _strays(ctx, ref)
    for pod in strays:
        await _delete_pod(ctx, ref_of(pod))
    if ctx.config.agent_replicas > 1 or strays:
        await _drop_pdb(ctx, ref)


def _pod_ref(pod: Body, image: str) -> dict[str, Any]:
    m = meta(pod)
    return {"namespace": m.get("namespace"), "name": m.get("name"), "image": image, "uid": uid(pod)}


def _manifest(
    ctx: Context,
    ref: Ref,
    body: Body,
    network: str,
    cluster_network: str,
    image: str,
    replica: int | None = None,
) -> Body:
    ipv4 = (body.get("spec") or {}).get("ipv4Config") or {}
    return agent_pod(
        pool_namespace=ref[0],
        pool_name=ref[1],
        network_name=network,
        server_ip=ipv4.get("serverIP", ""),
        cidr=ipv4.get("cidr", ""),
        cluster_network=cluster_network,
        agent_namespace=ctx.config.agent_namespace,
        service_account=ctx.config.agent_service_account,
        image=parse_image(image),
        dry_run=ctx.config.no_dhcp,
        replica=replica,
    )


async def _create_pod(ctx: Context, manifest: Body) -> Body:
    """Create the pod; when one of its name exists already, adopt it (upstream loses the
    uid)."""
    name = manifest["metadata"]["name"]
    try:
        created = await ctx.kube.create_pod(ctx.config.agent_namespace, manifest)
        log.info("agent pod %s/%s created", ctx.config.agent_namespace, name)
    except ApiError as exc:
        if exc.status != 409:
            raise
        created = await ctx.kube.read_pod(ctx.config.agent_namespace, name)
        log.info("agent pod %s/%s adopted", ctx.config.agent_namespace, name)
    ctx.store.remember(PODS, created, None)
    return created


async def ensure_agent(
    ctx: Context, ref: Ref, body: Body, network: str
) -> tuple[Condition, Condition, dict[str, Any] | None]:
    """The pool's agent pod, or pods, as they should be: (Registered, AgentReady,
    agentPodRef)."""
    agent_ref: dict[str, Any] | None = (body.get("status") or {}).get("agentPodRef")
    nad_namespace, nad_name = split_network_name(network)
    nad = ctx.store.get(NADS, (nad_namespace, nad_name))
    not_deployed = error(f"agent for ippool {ref[0]}/{ref[1]} is not deployed")
    if nad is None:
        missing = f'network-attachment-definitions.k8s.cni.cncf.io "{nad_name}" not found'
        return error(missing), not_deployed, agent_ref
    cluster_network = (meta(nad).get("labels") or {}).get(LABEL_CLUSTER_NETWORK)
    if not cluster_network:
        return error(f"could not find clusternetwork for nad {network}"), not_deployed, agent_ref
    image = str(ctx.config.agent_image)
    annotations = meta(body).get("annotations") or {}
    if ANNOTATION_HOLD_AGENT_UPGRADE in annotations and agent_ref and agent_ref.get("image"):
        image = agent_ref["image"]
    if ctx.config.agent_replicas > 1:
        return await _ensure_replicas(ctx, ref, body, network, cluster_network, image)
    strays = _strays(ctx, ref)  # the replicas of a run with --agent-replicas > 1
    for stray in strays:
        await _delete_pod(ctx, ref_of(stray))
    if strays:
        await _drop_pdb(ctx, ref)
    name = agent_pod_name(*ref)
    pod_ref = (ctx.config.agent_namespace, name)
    pod = ctx.store.get(PODS, pod_ref)
    if pod is not None:
        if meta(pod).get("deletionTimestamp"):
            message = f"agent pod {name} marked for deletion"
            ctx.queue.add_after((IPPOOLS, *ref), RETRY_SECONDS)
            return error(message), error(message), agent_ref
        if pod_image(pod) != image:
            await ctx.kube.delete_pod(*pod_ref, uid=uid(pod) or None)
            ctx.store.drop(PODS, pod)
            log.info(
                "agent pod %s/%s deleted: image %s replaced by %s", *pod_ref, pod_image(pod), image
            )
            ctx.events.post(
                body,
                "IPPool",
                "AgentRollout",
                f"agent pod {name}: image {pod_image(pod)} replaced by {image}",
            )
            ctx.queue.add_after((IPPOOLS, *ref), 1.0)
            purged = error(f"agent pod {name} obsolete and purged")
            return ok("AgentPodCreated"), purged, {**(agent_ref or {}), "image": image}
        ready = ok("AgentPodReady") if pod_is_ready(pod) else error(f"agent pod {name} not ready")
        return ok("AgentPodCreated"), ready, _pod_ref(pod, image)
    created = await _create_pod(ctx, _manifest(ctx, ref, body, network, cluster_network, image))
    ready = ok("AgentPodReady") if pod_is_ready(created) else error(f"agent pod {name} not ready")
    return ok("AgentPodCreated"), ready, _pod_ref(created, image)


# -- agent replicas (--agent-replicas > 1) -------------------------------------------------


def next_to_roll(replicas: list[Body], holder: str, image: str) -> Body | None:
    """The one replica to replace now for a new `image`, if any. One at a time (none while
    a replica is missing or going); the ones that are not Ready first (replacing them takes
    nothing away), then the standbys, the Lease's holder last; and a Ready one only while
    every other replica is Ready, so that a roll-out never leaves fewer than N - 1 Ready."""
    if any(_terminating(pod) for pod in replicas):
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


async def _lease_holder(ctx: Context, ref: Ref) -> str:
    """Who holds the pool's Lease: "" when no one does, there is no Lease yet, or the
    holder has not renewed it for its duration. That is judged as the agents judge it: on
    our own clock, since we last saw the record change (a dead leader's pod may still
    look Ready for a while; its Lease says it stopped)."""
    try:
        lease = await ctx.kube.read_agent_lease(ctx.config.agent_namespace, agent_lease_name(*ref))
    except ApiError as exc:
        if not exc.not_found:
            raise
        ctx.agent_leases.pop(ref, None)
        return ""
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    record = f"{holder}/{spec.get('renewTime')}/{meta(lease).get('resourceVersion')}"
    now = _monotonic()
    seen, since = ctx.agent_leases.get(ref, ("", now))
    if seen != record:
        since = now
    ctx.agent_leases[ref] = (record, since)
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if holder and duration and now - since > duration:
        return ""  # expired: no one serves until a standby takes it
    return holder


def agent_ready(replicas: list[Body], serving: Body | None, holder: str, lease: str) -> Condition:
    """AgentReady of a pool with replicas: true while the Lease's holder is Ready."""
    ready = [pod for pod in replicas if pod_is_ready(pod) and not _terminating(pod)]
    if serving is not None and pod_is_ready(serving):
        standbys = [pod for pod in replicas if pod is not serving]
        ready_standbys = [pod for pod in ready if pod is not serving]
        message = (
            f"agent pod {holder} serves; {len(ready_standbys)} of {len(standbys)} standbys ready"
        )
        return True, "AgentPodReady", message
    count = f"{len(ready)} of {len(replicas)} agent pods ready"
    if not holder:
        return error(f"no agent pod holds lease {lease} yet; {count}")
    if serving is None:
        return error(f"agent pod {holder} holds lease {lease} but is gone; {count}")
    return error(f"agent pod {holder} holds lease {lease} but is not ready; {count}")


def _stuck(ctx: Context, pod: Body) -> bool:
    """A replica that served (it was Ready) and has been Terminating, or not Ready (its
    node NotReady: Kubernetes marks its pods so), for longer than --agent-replace-after,
    measured on our own clock from when we first saw it so. One never Ready yet is
    starting (an image pull), not stuck."""
    key = uid(pod)
    if pod_is_ready(pod) and not _terminating(pod):
        ctx.agents_seen_ready.add(key)
        ctx.agents_unwell_since.pop(key, None)
        return False
    if not _terminating(pod) and key not in ctx.agents_seen_ready:
        return False
    if len(ctx.agents_unwell_since) > 10_000:  # uids of pods long gone: bound the memory
        ctx.agents_unwell_since.clear()
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
        pod = await _create_pod(ctx, make(index))
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
        if not _terminating(counted[index]):
            await _delete_pod(ctx, ref_of(counted[index]))
        del counted[index]
    return counted


async def _ensure_replicas(
    ctx: Context, ref: Ref, body: Body, network: str, cluster_network: str, image: str
) -> tuple[Condition, Condition, dict[str, Any] | None]:
    """The pool's N agent replicas and their PodDisruptionBudget, as they should be; the
    one serving is the holder of the pool's Lease."""
    namespace = ctx.config.agent_namespace
    # the first reconcile after a run without replicas
    strays = _strays(ctx, ref)
    for stray in strays:
        await _delete_pod(ctx, ref_of(stray))
    holder, _, holder_uid = (await _lease_holder(ctx, ref)).partition("_")
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
        lambda index: _manifest(ctx, ref, body, network, cluster_network, image, index),
        holder,
    )
    replicas = [counted[index] for index in sorted(counted)]
    await _ensure_pdb(ctx, ref)
    previous = ((body.get("status") or {}).get("agentPodRef") or {}).get("name")
    if (
        holder
        and previous
        and holder != previous
        and holder in {meta(pod).get("name") for pod in present.values()}
    ):
        ctx.events.post(
            body, "IPPool", "AgentFailover", f"agent pod {holder} serves (was {previous})"
        )
    deleted = any(_terminating(pod) for pod in counted.values()) or len(counted) < len(present)
    stale = None if deleted else next_to_roll(replicas, holder, image)
    if stale is not None and ANNOTATION_HOLD_AGENT_UPGRADE not in (
        meta(body).get("annotations") or {}
    ):
        await _delete_pod(ctx, ref_of(stale))
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
    shown = serving or next((p for p in replicas if not _terminating(p)), replicas[0])
    ctx.queue.add_after((IPPOOLS, *ref), POLL_SECONDS)
    return (
        ok("AgentPodCreated"),
        agent_ready(replicas, serving, holder, lease),
        _pod_ref(shown, image),
    )

"""What the single-pod and the replicated shapes of a pool's agents share: the pods'
names, their manifest, creating (or adopting) and deleting them, and the pool's
PodDisruptionBudget going."""

from __future__ import annotations

import logging
import time
from typing import Any

from vmdhcp.api.constants import LABEL_IPPOOL_NAME, LABEL_IPPOOL_NAMESPACE
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.config import parse_image
from vmdhcp.controller.context import PODS, Context
from vmdhcp.controller.manifests import (
    agent_base_name,
    agent_pod,
    agent_pod_name,
    agent_replica_name,
    pod_is_ready,
)
from vmdhcp.controller.store import Body, meta, ref_of, uid
from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.controller")

REPLICA_SLOTS = 10
"""Replica indices 0 to 9: N of them in use, the others for replacements of stuck pods."""


def links_to(nad: Body | None, ref: Ref) -> bool:
    labels = meta(nad).get("labels") or {}
    return bool(
        labels.get(LABEL_IPPOOL_NAMESPACE) == ref[0] and labels.get(LABEL_IPPOOL_NAME) == ref[1]
    )


def agent_names(ctx: Context, ref: Ref) -> list[str]:
    """The names of the pool's agent pods: upstream's one, or `<base>-<i>` for each replica."""
    if ctx.config.agent_replicas == 1:
        return [agent_pod_name(*ref)]
    return [agent_replica_name(*ref, i) for i in range(ctx.config.agent_replicas)]


def stray_pods(ctx: Context, ref: Ref) -> list[Body]:
    """The pool's agent pods in the store that should not be there: upstream's single pod
    left by a run with one replica, or replicas left by a run with them (looked up by
    every name they can have, so no scan of the store). With replicas, how many of them
    is `_heal`'s business."""
    if ctx.config.agent_replicas > 1:
        single = ctx.store.get(PODS, (ctx.config.agent_namespace, agent_pod_name(*ref)))
        return [single] if single is not None and links_to(single, ref) else []
    wanted = set(agent_names(ctx, ref))
    names = [
        agent_pod_name(*ref),
        *(agent_replica_name(*ref, i) for i in range(REPLICA_SLOTS)),
    ]
    found = []
    for name in dict.fromkeys(names):
        pod = ctx.store.get(PODS, (ctx.config.agent_namespace, name))
        if name not in wanted and pod is not None and links_to(pod, ref):
            found.append(pod)
    return found


_monotonic = time.monotonic  # our own clock (tests set it)


def waiting_message(names: list[str]) -> str:
    return f"waiting for agent pod {', '.join(names)} of the previous shape to go"


async def clear_the_way(ctx: Context, strays: list[Body]) -> list[str]:
    """Delete the pool's pods of the other shape (upstream's single pod when replicas are
    wanted, or the reverse) and name the ones the new shape must wait for: two shapes
    never serve at once (the single pod holds the server address without an election, so
    a replica could not fence it). One Terminating longer than --agent-replace-after is
    taken for a pod of a dead node and waited for no longer."""
    waiting = []
    now = _monotonic()
    for pod in strays:
        if not terminating(pod):
            await delete_pod(ctx, ref_of(pod))
        since = ctx.agents_unwell_since.setdefault(uid(pod), now)
        if now - since <= ctx.config.agent_replace_seconds:
            waiting.append(str(meta(pod).get("name")))
    return waiting


def terminating(pod: Body | None) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def node_lost(pod: Body) -> bool:
    """The pod's node stopped reporting: Kubernetes' node lifecycle controller turns only
    the pod's Ready condition False (MarkPodsNotReady) and leaves the containers as the
    kubelet last saw them, ready. A kubelet never reports that mix itself; it says that
    the pod served, durably (what we remember of it is lost when we restart)."""
    if pod_is_ready(pod):
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(status.get("ready") for status in statuses)


async def delete_pod(ctx: Context, pod_ref: Ref, by_name: bool = False) -> None:
    """Delete the agent pod `pod_ref`: the one in the store (by uid), or `by_name` the one
    the API server has under that name when the store has none."""
    pod = ctx.store.get(PODS, pod_ref)
    if pod is None and not by_name:
        return
    if pod is not None and terminating(pod):
        return
    try:
        await ctx.kube.delete_pod(*pod_ref, uid=uid(pod) or None)
        log.info("agent pod %s/%s deleted", *pod_ref)
    except ApiError as exc:
        if not exc.not_found:
            raise
    if pod is not None:
        ctx.store.drop(PODS, pod)


async def drop_pdb(ctx: Context, ref: Ref) -> None:
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


def pod_reference(pod: Body, image: str) -> dict[str, Any]:
    m = meta(pod)
    return {"namespace": m.get("namespace"), "name": m.get("name"), "image": image, "uid": uid(pod)}


def agent_manifest(
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


async def create_pod(ctx: Context, manifest: Body) -> Body:
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

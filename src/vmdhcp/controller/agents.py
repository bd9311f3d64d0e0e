"""An IPPool's agents: upstream's single pod (created, rolled to a new image, adopted,
deleted) or, with `--agent-replicas` > 1, its replicas (`replicas.py`); and the link
labels on its NetworkAttachmentDefinition."""

from __future__ import annotations

import logging
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
)
from vmdhcp.controller import replicas
from vmdhcp.controller.agentpods import (
    agent_manifest,
    agent_names,
    clear_the_way,
    create_pod,
    delete_pod,
    drop_pdb,
    links_to,
    pod_reference,
    stray_pods,
    waiting_message,
)
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.conditions import error, ok
from vmdhcp.controller.context import IPPOOLS, NADS, PODS, RETRY_SECONDS, Context
from vmdhcp.controller.manifests import agent_pod_name, pod_image, pod_is_ready
from vmdhcp.controller.store import Body, meta, ref_of, uid
from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.controller")

Condition = tuple[bool, str, str]


async def label_nad(ctx: Context, ref: Ref, network: str) -> None:
    nad = ctx.store.get(NADS, split_network_name(network))
    if nad is None or links_to(nad, ref):
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
    if nad is None or not links_to(nad, ref):
        return
    labels = {LABEL_IPPOOL_NAMESPACE: None, LABEL_IPPOOL_NAME: None}
    try:
        await ctx.patch(NADS, nad, {"metadata": {"labels": labels}})
    except ApiError as exc:
        if not exc.not_found:
            raise


async def delete_agent(ctx: Context, ref: Ref, by_name: bool = False) -> None:
    """Delete the pool's agent pods (and PodDisruptionBudget): the ones in the store (by
    uid), or `by_name` the ones the API server has under the agents' names when the store
    has none."""
    if ctx.config.no_agent:
        return
    for name in agent_names(ctx, ref):
        await delete_pod(ctx, (ctx.config.agent_namespace, name), by_name)
    strays = stray_pods(ctx, ref)
    for pod in strays:
        await delete_pod(ctx, ref_of(pod))
    if ctx.config.agent_replicas > 1 or strays:
        await drop_pdb(ctx, ref)


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
        return await replicas.ensure_replicas(ctx, ref, body, network, cluster_network, image)
    strays = stray_pods(ctx, ref)  # the replicas of a run with --agent-replicas > 1
    waiting = await clear_the_way(ctx, strays)
    if strays:
        await drop_pdb(ctx, ref)
    if waiting:
        ctx.queue.add_after((IPPOOLS, *ref), 1.0)
        return ok("AgentPodCreated"), error(waiting_message(waiting)), agent_ref
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
        return ok("AgentPodCreated"), ready, pod_reference(pod, image)
    created = await create_pod(ctx, agent_manifest(ctx, ref, body, network, cluster_network, image))
    ready = ok("AgentPodReady") if pod_is_ready(created) else error(f"agent pod {name} not ready")
    return ok("AgentPodCreated"), ready, pod_reference(created, image)


# -- agent replicas (--agent-replicas > 1) -------------------------------------------------

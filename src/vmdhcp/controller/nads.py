"""What happens for a NetworkAttachmentDefinition annotated
`network.harvesterhci.io/dhcp-pool: {<ipv4Config fields>}`: an IPPool of its namespace
and name, owned by the NAD, with the webhook's defaults for missing fields; later
annotation changes update the pool's mutable options."""

from __future__ import annotations

import json
import logging
from typing import Any

from vmdhcp.api import GROUP, VERSION
from vmdhcp.api.constants import ANNOTATION_DHCP_POOL, NAD_GROUP, NAD_VERSION
from vmdhcp.controller.allocator import Ref
from vmdhcp.controller.context import IPPOOLS, NADS, Context
from vmdhcp.controller.store import Body, meta
from vmdhcp.validation.mutate import ippool_defaults

log = logging.getLogger("vmdhcp.controller")

MUTABLE = ("dns", "domainName", "domainSearch", "ntp", "leaseTime")


def _apply_add(body: Body, path: str, value: Any) -> None:
    """Apply one JSON-patch `add` to nested dicts (the defaults' paths are all objects)."""
    *parents, last = path.strip("/").split("/")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def pool_config(raw: str) -> dict[str, Any]:
    """The annotation's ipv4Config with the webhook's defaults; ValueError if unusable."""
    config = json.loads(raw)
    if not isinstance(config, dict):
        raise ValueError("not a JSON object")
    body: Body = {"spec": {"ipv4Config": config}}
    for op in ippool_defaults(body):
        _apply_add(body, op["path"], op["value"])
    result: dict[str, Any] = body["spec"]["ipv4Config"]
    return result


def new_ippool(ref: Ref, nad: Body, spec: Body) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPPool",
        "metadata": {
            "name": ref[1],
            "namespace": ref[0],
            "ownerReferences": [
                {
                    "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}",
                    "kind": "NetworkAttachmentDefinition",
                    "name": ref[1],
                    "uid": meta(nad).get("uid"),
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


async def reconcile_nad(ctx: Context, ref: Ref) -> None:
    nad = ctx.store.get(NADS, ref)
    if nad is None or meta(nad).get("deletionTimestamp"):
        return
    raw = (meta(nad).get("annotations") or {}).get(ANNOTATION_DHCP_POOL)
    if not raw:
        return
    try:
        config = pool_config(raw)
    except ValueError as exc:
        message = f"annotation {ANNOTATION_DHCP_POOL} cannot make an IPPool: {exc}"
        log.warning("nad %s/%s: %s", *ref, message)
        ctx.events.post(
            nad, "NetworkAttachmentDefinition", "InvalidDHCPPool", message, warning=True
        )
        return
    spec = {"networkName": f"{ref[0]}/{ref[1]}", "ipv4Config": config}
    existing = ctx.store.get(IPPOOLS, ref)
    if existing is None:
        if await ctx.create(IPPOOLS, new_ippool(ref, nad, spec)) is not None:
            ctx.events.post(
                nad,
                "NetworkAttachmentDefinition",
                "IPPoolCreated",
                f"created ippool {ref[0]}/{ref[1]}",
            )
        return
    owners = meta(existing).get("ownerReferences") or []
    if not any(o.get("uid") == meta(nad).get("uid") for o in owners):
        return  # a pool someone else made: not ours to change
    current = (existing.get("spec") or {}).get("ipv4Config") or {}
    changes = {k: config.get(k) for k in MUTABLE if config.get(k) != current.get(k)}
    if changes:
        await ctx.patch(IPPOOLS, existing, {"spec": {"ipv4Config": changes}})

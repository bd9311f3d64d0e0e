"""Fill the validators' `Snapshot` from the API server, fresh for each admission request
(an informer cache would answer faster but could miss an object created a moment ago)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vmdhcp import k8s
from vmdhcp.api import GROUP, VERSION, IPPool, VirtualMachineNetworkConfig, split_network_name
from vmdhcp.api.constants import (
    IPPOOL_PLURAL,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    VMNETCFG_PLURAL,
)
from vmdhcp.validation import Snapshot

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def parse_all(model: type[M], items: Iterable[dict[str, Any]]) -> list[M]:
    """Parse listed objects; one the models cannot read is left out, with a warning."""
    parsed: list[M] = []
    for item in items:
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as exc:
            meta = item.get("metadata", {})
            logger.warning(
                "Ignoring unreadable %s %s/%s: %s",
                model.__name__,
                meta.get("namespace"),
                meta.get("name"),
                exc.errors()[0].get("msg"),
            )
    return parsed


async def nad_labels(kube: k8s.Kube, namespace: str, name: str) -> dict[str, str] | None:
    if not name:
        return None
    try:
        nad = await kube.get_object(NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, name)
    except k8s.ApiError as exc:
        if exc.not_found:
            return None
        raise
    return dict(nad.get("metadata", {}).get("labels") or {})


async def snapshot(
    kube: k8s.Kube,
    *,
    networks: Iterable[str] = (),
    ippools: bool = False,
    vmnetcfgs: bool = False,
) -> Snapshot:
    """The NADs of `networks` (`ns/name` or `name`), and all IPPools and all
    VirtualMachineNetworkConfigs when asked for, fetched concurrently."""
    keys = sorted({split_network_name(n) for n in networks})

    async def listed(plural: str, wanted: bool) -> list[dict[str, Any]]:
        if not wanted:
            return []
        found = await kube.list_objects(GROUP, VERSION, plural)
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    labels, pools, cfgs = await asyncio.gather(
        asyncio.gather(*(nad_labels(kube, ns, name) for ns, name in keys)),
        listed(IPPOOL_PLURAL, ippools),
        listed(VMNETCFG_PLURAL, vmnetcfgs),
    )
    return Snapshot(
        nads={key: found for key, found in zip(keys, labels, strict=True) if found is not None},
        ippools=parse_all(IPPool, pools),
        vmnetcfgs=parse_all(VirtualMachineNetworkConfig, cfgs),
    )

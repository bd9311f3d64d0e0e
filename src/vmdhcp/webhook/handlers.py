"""kopf admission handlers: parse the object, look the cluster up in the caches, call the
pure rules (a refusal is judged again on a live read of what it rests on, see `views`).

Registered on the main resources only, so status writes (the controller's) are never
validated. A refusal is a `kopf.AdmissionError` with code 422 (Invalid) whose message is
the validators' `cannot <operation> <kind> <ns>/<name> because ...`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from typing import Any, TypeVar

import kopf
import pydantic

from vmdhcp import k8s
from vmdhcp.api import GROUP, VERSION, IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import IPPOOL_KIND, IPPOOL_PLURAL, VMNETCFG_KIND, VMNETCFG_PLURAL
from vmdhcp.validation import (
    ClusterView,
    JsonPatchOp,
    Operation,
    ValidationError,
    mutate_ippool_create,
    validate_ippool_create,
    validate_ippool_delete,
    validate_ippool_update,
    validate_vmnetcfg_create,
    validate_vmnetcfg_update,
)
from vmdhcp.validation.ippool import being_deleted
from vmdhcp.webhook.caches import Caches
from vmdhcp.webhook.views import CachedView, confirm

logger = logging.getLogger(__name__)

INVALID = 422
UNAVAILABLE = 503
M = TypeVar("M", IPPool, VirtualMachineNetworkConfig)


@dataclass(frozen=True)
class Rules:
    """What the handlers need: the API (for confirming refusals), the caches, the
    `--service-cidr`, and how stale the caches may be before requests are refused."""

    kube: k8s.Kube
    caches: Caches
    service_cidr: IPv4Network
    max_stale: float


def refuse(exc: ValidationError) -> kopf.AdmissionError:
    logger.info("Refused: %s", exc)
    return kopf.AdmissionError(str(exc), code=INVALID)


def parse(model: type[M], body: Mapping[str, Any] | None, operation: Operation) -> M:
    """The typed object; an object the schema let through but the model cannot read is
    refused with the model's reason."""
    raw = dict(body or {})
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        meta = raw.get("metadata") or {}
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        kind = IPPOOL_KIND if model is IPPool else VMNETCFG_KIND
        raise refuse(
            ValidationError(
                operation,
                kind,
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                [f"{where}: {first.get('msg')}"],
            )
        ) from None


def request(
    kwargs: Mapping[str, Any],
) -> tuple[str, Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The operation and the new and old objects of a kopf admission call."""
    return str(kwargs.get("operation")), kwargs.get("new"), kwargs.get("old")


def merge_patch(ops: list[JsonPatchOp]) -> dict[str, Any]:
    """The merge-patch equivalent of `add` operations on object members (all the mutator
    makes); kopf turns it back into JSON-patch operations against the request's body."""
    merged: dict[str, Any] = {}
    for op in ops:
        if op["op"] != "add":
            raise ValueError(f"unsupported operation {op['op']!r}")
        *parents, leaf = op["path"].lstrip("/").split("/")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = op["value"]
    return merged


def create_pool(pool: IPPool, cidr: IPv4Network, view: ClusterView) -> None:
    validate_ippool_create(pool, view, service_cidr=cidr)


def update_pool(before: IPPool | None, pool: IPPool, cidr: IPv4Network, view: ClusterView) -> None:
    validate_ippool_update(before, pool, view, service_cidr=cidr)


def create_cfg(cfg: VirtualMachineNetworkConfig, view: ClusterView) -> None:
    validate_vmnetcfg_create(cfg, view)


def update_cfg(
    before: VirtualMachineNetworkConfig | None,
    cfg: VirtualMachineNetworkConfig,
    view: ClusterView,
) -> None:
    validate_vmnetcfg_update(before, cfg, view)


async def judge(rules: Rules, view: CachedView, check: Callable[[ClusterView], None]) -> None:
    """Apply `check` to the cached view; a refusal is judged again on the objects it rests
    on, read from the API server (`views.confirm`), and only a refusal that holds there is
    given. Caches not yet listed, or too stale, refuse every request with the reason."""
    problem = rules.caches.problem(rules.max_stale)
    if problem is not None:
        logger.warning("Refused without judging: %s", problem)
        raise kopf.AdmissionError(f"cannot judge the request: {problem}", code=UNAVAILABLE)
    try:
        check(view)
        return
    except ValidationError as exc:
        cached = exc
    live = await confirm(rules.kube, view)
    if live is None:
        raise refuse(cached)
    try:
        check(live)
    except ValidationError as exc:
        raise refuse(exc) from None
    logger.info("Accepted on a second look at the API server (the cache was behind): %s", cached)


def register(registry: kopf.OperatorRegistry, rules: Rules, suffix: str) -> None:
    """Register the three handlers; `suffix` (the namespace) makes the webhook names
    `ippool.validator.<namespace>.<name>` and so on, like upstream's
    `validator.<namespace>.<name>`."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        IPPOOL_PLURAL,
        id=f"ippool.validator.{suffix}",
        operations=["CREATE", "UPDATE", "DELETE"],
        persistent=True,
        registry=registry,
    )
    async def validate_ippool(**kwargs: Any) -> None:
        operation, new, old = request(kwargs)
        cidr = rules.service_cidr
        if operation == "CREATE":
            pool = parse(IPPool, new, Operation.CREATE)
            await judge(rules, CachedView(rules.caches), partial(create_pool, pool, cidr))
        elif operation == "UPDATE":
            pool = parse(IPPool, new, Operation.UPDATE)
            if being_deleted(pool.metadata):
                return
            before = parse(IPPool, old, Operation.UPDATE) if old else None
            check = partial(update_pool, before, pool, cidr)
            await judge(rules, CachedView(rules.caches), check)
        elif operation == "DELETE" and old:
            pool = parse(IPPool, old, Operation.DELETE)
            view = CachedView(rules.caches, every_user=True)
            await judge(rules, view, partial(validate_ippool_delete, pool))

    @kopf.on.validate(
        GROUP,
        VERSION,
        VMNETCFG_PLURAL,
        id=f"vmnetcfg.validator.{suffix}",
        operations=["CREATE", "UPDATE"],
        persistent=True,
        registry=registry,
    )
    async def validate_vmnetcfg(**kwargs: Any) -> None:
        operation, new, old = request(kwargs)
        step = Operation.CREATE if operation == "CREATE" else Operation.UPDATE
        cfg = parse(VirtualMachineNetworkConfig, new, step)
        if step is Operation.UPDATE and being_deleted(cfg.metadata):
            return
        if step is Operation.CREATE:
            await judge(rules, CachedView(rules.caches, [cfg]), partial(create_cfg, cfg))
            return
        before = parse(VirtualMachineNetworkConfig, old, step) if old else None
        view = CachedView(rules.caches, [cfg] if before is None else [cfg, before])
        await judge(rules, view, partial(update_cfg, before, cfg))

    @kopf.on.mutate(
        GROUP,
        VERSION,
        IPPOOL_PLURAL,
        id=f"ippool.mutator.{suffix}",
        operations=["CREATE"],
        persistent=True,
        ignore_failures=True,
        registry=registry,
    )
    async def mutate_ippool(body: Mapping[str, Any], patch: kopf.Patch, **_: Any) -> None:
        try:
            ops = mutate_ippool_create(dict(body))
        except ValidationError as exc:
            raise refuse(exc) from None
        if ops:
            logger.info(
                "Defaults for IPPool %s/%s: %s",
                body.get("metadata", {}).get("namespace"),
                body.get("metadata", {}).get("name"),
                ", ".join(f"{op['path']}={op['value']}" for op in ops),
            )
            patch.update(merge_patch(ops))

"""kopf admission handlers: parse the object, look the cluster up, call the pure rules.

Registered on the main resources only, so status writes (the controller's) are never
validated. A refusal is a `kopf.AdmissionError` with code 422 (Invalid) whose message is
the validators' `cannot <operation> <kind> <ns>/<name> because ...`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, TypeVar

import kopf
import pydantic

from vmdhcp import k8s
from vmdhcp.api import GROUP, VERSION, IPPool, VirtualMachineNetworkConfig
from vmdhcp.api.constants import IPPOOL_KIND, IPPOOL_PLURAL, VMNETCFG_KIND, VMNETCFG_PLURAL
from vmdhcp.validation import (
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
from vmdhcp.webhook.lookups import snapshot

logger = logging.getLogger(__name__)

INVALID = 422
M = TypeVar("M", IPPool, VirtualMachineNetworkConfig)


@dataclass(frozen=True)
class Rules:
    """What the handlers need: the API and the `--service-cidr`."""

    kube: k8s.Kube
    service_cidr: IPv4Network


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
        try:
            if operation == "CREATE":
                pool = parse(IPPool, new, Operation.CREATE)
                view = await snapshot(rules.kube, networks=[pool.spec.network_name], ippools=True)
                validate_ippool_create(pool, view, service_cidr=rules.service_cidr)
            elif operation == "UPDATE":
                pool = parse(IPPool, new, Operation.UPDATE)
                if being_deleted(pool.metadata):
                    return
                before = parse(IPPool, old, Operation.UPDATE) if old else None
                networks = [pool.spec.network_name]
                if before is not None:
                    networks.append(before.spec.network_name)
                view = await snapshot(rules.kube, networks=networks, ippools=True)
                validate_ippool_update(before, pool, view, service_cidr=rules.service_cidr)
            elif operation == "DELETE" and old:
                pool = parse(IPPool, old, Operation.DELETE)
                view = await snapshot(rules.kube, ippools=True, vmnetcfgs=True)
                validate_ippool_delete(pool, view)
        except ValidationError as exc:
            raise refuse(exc) from None

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
        before = (
            parse(VirtualMachineNetworkConfig, old, step)
            if old and step is Operation.UPDATE
            else None
        )
        networks = [nc.network_name for nc in cfg.spec.network_configs or ()]
        if before is not None:
            networks += [nc.network_name for nc in before.spec.network_configs or ()]
        view = await snapshot(rules.kube, networks=networks, ippools=True, vmnetcfgs=True)
        try:
            if step is Operation.CREATE:
                validate_vmnetcfg_create(cfg, view)
            else:
                validate_vmnetcfg_update(before, cfg, view)
        except ValidationError as exc:
            raise refuse(exc) from None

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

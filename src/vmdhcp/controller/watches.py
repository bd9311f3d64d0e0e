"""The kopf wiring, and nothing else: kopf watches VirtualMachines and NADs (and follows
their CRDs, so the watches start when KubeVirt or Multus arrive later), the controller
decides. `on.event` handlers only, so kopf writes no annotations or finalizers on any
object. IPPools, vmnetcfgs and agent pods come from the controller's own informers
(`informer.py` says why)."""

from __future__ import annotations

import os
from typing import Any

import kopf

from vmdhcp.api.constants import (
    KUBEVIRT_GROUP,
    KUBEVIRT_VERSION,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    VM_PLURAL,
)
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.engine import NADS, VMS, Controller

WATCHED = {
    VMS: (KUBEVIRT_GROUP, KUBEVIRT_VERSION, VM_PLURAL),
    NADS: (NAD_GROUP, NAD_VERSION, NAD_PLURAL),
}


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if os.environ.get("KUBECONFIG") and os.path.exists(os.environ["KUBECONFIG"]):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    def handler(kind: str) -> Any:
        async def event(event: kopf.RawEvent, **_: Any) -> None:
            controller.observe(kind, event.get("type"), dict(event["object"]))

        return event

    for kind, (group, version, plural) in WATCHED.items():
        kopf.on.event(group, version, plural, id=f"{kind}-event", registry=registry)(handler(kind))
    return registry


def operator_settings(config: ControllerConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # kopf gives up on the API server after about a minute by default; an outage must
    # not end the controller (it keeps its state and resynchronises by relisting).
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, *([10] * 360))
    return settings

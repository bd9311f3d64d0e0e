"""The kopf wiring, and nothing else: kopf watches, the controller decides.

Every event of the four watched kinds goes to `Controller.observe`; no state-keeping
handlers, so kopf writes no annotations or finalizers on any object. One index per kind
uses kopf's start-up guarantee: kopf fills every index from its initial listings before
it calls any other handler, so the first event handler call means "every initial listing
is complete", when the controller releases what its own start-up list had and those
listings did not (deleted in between: no watch will ever report it). The indexes store
nothing.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from vmdhcp.api import GROUP, VERSION
from vmdhcp.api.constants import (
    KUBEVIRT_GROUP,
    KUBEVIRT_VERSION,
    NAD_GROUP,
    NAD_PLURAL,
    NAD_VERSION,
    VM_PLURAL,
)
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.engine import IPPOOLS, NADS, VMNETCFGS, VMS, Controller

WATCHED = {
    IPPOOLS: (GROUP, VERSION, "ippools"),
    VMNETCFGS: (GROUP, VERSION, "virtualmachinenetworkconfigs"),
    VMS: (KUBEVIRT_GROUP, KUBEVIRT_VERSION, VM_PLURAL),
    NADS: (NAD_GROUP, NAD_VERSION, NAD_PLURAL),
}
# agent pods: not through kopf, which would watch every pod in the cluster (podwatch)


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    listed = False

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if os.environ.get("KUBECONFIG") and os.path.exists(os.environ["KUBECONFIG"]):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    def handlers(kind: str) -> tuple[Any, Any]:
        def index(uid: str | None, **_: Any) -> None:
            controller.confirm(kind, uid or "")

        async def event(event: kopf.RawEvent, **_: Any) -> None:
            nonlocal listed
            if not listed:
                listed = True
                controller.listings_complete()
            controller.observe(kind, event.get("type"), dict(event["object"]))

        return index, event

    for kind, (group, version, plural) in WATCHED.items():
        index, event = handlers(kind)
        kopf.index(group, version, plural, id=f"{kind}-listed", registry=registry)(index)
        kopf.on.event(group, version, plural, id=f"{kind}-event", registry=registry)(event)
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

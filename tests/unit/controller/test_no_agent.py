"""`--no-agent`: no agent pods, and still the NAD labelled with its pool, as upstream's
ensureNADLabels does whatever the mode (the webhook and the vmnetcfgs find the pool
through it: without the labels every vmnetcfg on that network would be refused)."""

from __future__ import annotations

import dataclasses

from tests.unit.controller.fakeapi import FakeKube
from tests.unit.controller.test_reconcilers import (  # noqa: F401 (an autouse fixture)
    AGENTS,
    NOW,
    NS,
    condition,
    nad_body,
    no_reconcile_errors,
    obj,
    pool_body,
    settle,
    start_watches,
)
from vmdhcp.api.constants import LABEL_IPPOOL_NAME, LABEL_IPPOOL_NAMESPACE
from vmdhcp.controller.config import load_config
from vmdhcp.controller.context import PODS
from vmdhcp.controller.engine import IPPOOLS, NADS, Controller
from vmdhcp.controller.metrics import ControllerMetrics


async def test_the_nad_names_its_pool_without_agents() -> None:
    fake = FakeKube()
    config = load_config(["--namespace", AGENTS, "--no-agent"], {})
    config = dataclasses.replace(config, status_flush_seconds=0.01)
    controller = Controller(config, fake, ControllerMetrics(), now=lambda: NOW)
    fake.user_create(NADS, nad_body())
    fake.user_create(IPPOOLS, pool_body())
    await controller.rebuild()
    await start_watches(controller, fake)
    await settle(controller, fake)
    labels = obj(fake, NADS, "net-48")["metadata"].get("labels") or {}
    assert (labels.get(LABEL_IPPOOL_NAMESPACE), labels.get(LABEL_IPPOOL_NAME)) == (NS, "net-48")
    assert not fake.objects[PODS]
    assert condition(obj(fake, IPPOOLS, "net-48"), "Registered")["reason"] == "AgentsDisabled"

"""vmdhcp.validation is shared by the webhook and the controller: pure, no I/O, no framework."""

from tests.unit.test_layering import violations

FORBIDDEN = {
    "asyncio",
    "socket",
    "subprocess",
    "threading",
    "time",
    "random",
    "logging",
    "kopf",
    "kubernetes",
    "aiohttp",
    "prometheus_client",
    "vmdhcp.k8s",
    "vmdhcp.agent",
    "vmdhcp.controller",
    "vmdhcp.webhook",
}


def test_validation_imports_nothing_with_io() -> None:
    assert violations("validation", FORBIDDEN) == []

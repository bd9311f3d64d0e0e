"""Run the webhook: certificates first, then the caches' first listings, then kopf's
admission server and its managed webhook configurations, with the certificate renewals
and the caches' watches alongside.

kopf serves HTTPS from the files the CertificateManager writes (and restarts its listener
when they change) and keeps the ValidatingWebhookConfiguration and the
MutatingWebhookConfiguration named `<name>` pointing at it, with our CA bundle. The
configurations stay when the webhook stops (`persistent`), as upstream's do: with
failurePolicy Fail, nothing is validated by nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import kopf

from vmdhcp import k8s
from vmdhcp.webhook import health
from vmdhcp.webhook.caches import Caches
from vmdhcp.webhook.config import WebhookConfig
from vmdhcp.webhook.handlers import Rules, register
from vmdhcp.webhook.tls import CertificateManager, service_names

logger = logging.getLogger(__name__)

SERVICE_PORT = 443
POOL_SIZE = 16
"""API connections kept open: admission requests look NADs up concurrently."""
FILE_CHECK_INTERVAL = 10.0
"""Seconds between kopf's looks at the certificate files (a renewal is seen this late)."""


class AdvertisedServer:
    """kopf's HTTPS webhook server, registered under the Service `<namespace>/<name>` (port
    443, as a Service in front of the pod exposes it) or under `--advertise-url`."""

    def __init__(self, inner: kopf.WebhookServer, config: WebhookConfig) -> None:
        self.inner = inner
        self.config = config

    async def __aenter__(self) -> AdvertisedServer:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, traceback)

    def client_config(self, served: kopf.WebhookClientConfig) -> kopf.WebhookClientConfig:
        rewritten = kopf.WebhookClientConfig()
        if "caBundle" in served:
            rewritten["caBundle"] = served["caBundle"]
        if self.config.advertise_url:
            rewritten["url"] = self.config.advertise_url
        else:
            rewritten["service"] = kopf.WebhookClientConfigService(
                namespace=self.config.namespace, name=self.config.name, port=SERVICE_PORT
            )
        return rewritten

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for served in self.inner(fn):
            logger.info("Serving admission reviews on port %d", self.config.https_port)
            yield self.client_config(served)


def hostnames(config: WebhookConfig) -> list[str]:
    names = service_names(config.name, config.namespace)
    if config.advertise_host:
        names.append(config.advertise_host)
    return names


def build_settings(
    config: WebhookConfig, certificates: CertificateManager
) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    files = certificates.files
    server = kopf.WebhookServer(
        addr=config.listen_address,
        port=config.https_port,
        certfile=files.pem,
        pkeyfile=files.pem,
        cafile=files.ca,
        file_check_interval=FILE_CHECK_INTERVAL,
    )
    settings.admission.server = AdvertisedServer(server, config)
    settings.admission.managed = config.name
    settings.posting.enabled = False
    return settings


def build_registry(config: WebhookConfig, kube: k8s.Kube, caches: Caches) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    rules = Rules(kube, caches, config.service_cidr, config.max_stale)
    register(registry, rules, config.namespace)

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        api = await asyncio.to_thread(k8s.api_client, config.kubeconfig)
        return kopf.ConnectionInfo(**k8s.kopf_connection(api))

    return registry


async def run(config: WebhookConfig) -> None:
    """Serve until SIGINT or SIGTERM; errors reaching the API server at start raise."""
    stop = asyncio.Event()  # kopf installs its own handlers later; this covers the start
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    api = await asyncio.to_thread(k8s.tuned_api_client, config.kubeconfig, None, POOL_SIZE)
    kube = k8s.Kube(api)
    with tempfile.TemporaryDirectory(prefix="vm-dhcp-webhook-") as directory:
        certificates = CertificateManager(
            kube,
            namespace=config.namespace,
            name=config.name,
            hostnames=hostnames(config),
            directory=Path(directory),
        )
        await certificates.ensure()
        caches = Caches(kube)
        caches.start()
        renewals = asyncio.create_task(certificates.run(), name="certificate renewals")
        try:
            async with health.serving(config, caches):
                if not await fill(caches, stop):
                    return
                await kopf.operator(
                    registry=build_registry(config, kube, caches),
                    settings=build_settings(config, certificates),
                    standalone=True,
                    clusterwide=True,
                    stop_flag=stop,
                )
        finally:
            caches.stop()
            renewals.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewals


async def fill(caches: Caches, stop: asyncio.Event) -> bool:
    """Wait for every cache's first listing (False: stopped first). Admission reviews are
    served only after it (the HTTPS port is not even open before), so none is answered from
    an empty cache."""
    began = time.monotonic()
    logger.info("Listing IPPools, vmnetcfgs and NADs before serving admission reviews")
    filled = asyncio.create_task(caches.wait_filled())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({filled, stopped}, return_when=asyncio.FIRST_COMPLETED)
    filled.cancel()
    stopped.cancel()
    if stop.is_set():
        return False
    sizes = ", ".join(f"{count} {name}" for name, count in caches.sizes().items())
    logger.info("Caches filled in %.2f s: %s", time.monotonic() - began, sizes)
    return True

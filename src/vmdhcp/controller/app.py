"""Composition of the controller: CRDs, leader election, IPAM rebuild, kopf watches
feeding the work queue, reconcile workers, HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import socket
import uuid
from importlib import resources
from typing import Any

import kopf
import yaml
from aiohttp import web

from vmdhcp import k8s
from vmdhcp.api.constants import (
    AGENT_LABEL_VALUE,
    LABEL_VM_DHCP_CONTROLLER,
)
from vmdhcp.controller import rogue
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.context import RESOURCES
from vmdhcp.controller.engine import AWAITED_AT_START, LOADED_AT_START, PODS, REPORTS, Controller
from vmdhcp.controller.http import make_app
from vmdhcp.controller.informer import Informer, PodWatch, custom_informer
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.controller.watches import build_registry, operator_settings
from vmdhcp.election import LeaderElector

log = logging.getLogger("vmdhcp.controller")

LEASE_NAME = "vm-dhcp-controllers"
"""Upstream's lock, in kube-system by default."""

WORKERS = 8
THREADS = 16


def packaged_crds() -> list[dict[str, Any]]:
    folder = resources.files("vmdhcp") / "crds"
    return [
        yaml.safe_load(entry.read_text())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    ]


async def run(config: ControllerConfig) -> int:
    """Serve until SIGTERM or SIGINT (exit 0) or until the lease is lost (exit 1)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(THREADS))
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig
    try:
        api = await asyncio.to_thread(k8s.tuned_api_client, config.kubeconfig, None, THREADS)
    except Exception as exc:
        log.error("cannot load a kubeconfig or the in-cluster configuration: %s", exc)
        return 1
    kube = k8s.Kube(api)
    controller = Controller(config, kube, ControllerMetrics())
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    standby = asyncio.Event()  # set while waiting for the lease: a standby is healthy

    def ready() -> bool:
        return controller.rebuilt or standby.is_set()

    runner = web.AppRunner(make_app(controller, ready, config.cache_dump_api), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.http_host, config.http_port).start()
    except OSError as exc:
        log.error("cannot serve http on %s:%d: %s", config.http_host, config.http_port, exc)
        await runner.cleanup()
        return 1
    tasks: list[asyncio.Task[Any]] = []
    informers: list[Informer] = []
    try:
        elector = None
        if config.leader_election:
            identity = f"{config.name}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
            elector = LeaderElector(
                kube,
                config.leader_election_namespace,
                LEASE_NAME,
                identity,
                lease_duration=config.lease_seconds,
                renew_deadline=config.renew_deadline_seconds,
                retry_period=config.retry_seconds,
            )
            kube.may_write = elector.is_leader  # every write asks, not only the first
            kube.write_budget = elector.time_left  # and none may land after a takeover
            standby.set()
            acquire = asyncio.create_task(elector.acquire())
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({acquire, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if stop.is_set():
                acquire.cancel()
                return 0
            standby.clear()
        lease = asyncio.create_task(elector.renew_until_lost(), name="lease") if elector else None
        if config.install_crds:  # by the leader only: a standby of another version must not
            for crd in packaged_crds():
                await kube.apply_crd(crd, field_manager=config.name)
            log.info("custom resource definitions installed or upgraded")
        # the IPAM is built from the informers' first listings, which their watches go on
        # from: nothing deleted in between can keep its addresses
        informers = [
            custom_informer(
                kube,
                RESOURCES[kind],
                on_list=functools.partial(controller.on_list, kind),
                on_event=functools.partial(controller.observe, kind),
            )
            for kind in LOADED_AT_START
        ]
        informers.append(
            PodWatch(
                kube,
                config.agent_namespace,
                f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}",
                on_list=functools.partial(controller.on_list, PODS),
                on_event=functools.partial(controller.observe, PODS),
            )
        )
        first_reports = controller.listed.setdefault(REPORTS, asyncio.Event())
        reports = rogue.Reports(controller.ctx, on_first=first_reports.set)
        informers.append(rogue.report_informer(kube, config.agent_namespace, reports))
        for informer in informers:
            informer.start(loop)
        listed = asyncio.create_task(controller.listed_once(AWAITED_AT_START))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {listed, stopped, *([lease] if lease else [])}, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        if not listed.done():  # a stop, or the lease lost, before the first listings
            listed.cancel()
            if lease is not None and not lease.done():
                lease.cancel()
            if elector is not None and stop.is_set():
                await elector.release()
            return 0 if stop.is_set() else 1
        controller.build_ipam()
        kopf_stop = asyncio.Event()
        kopf_ready = asyncio.Event()

        async def reclaim_signals() -> None:
            # kopf installs its own SIGTERM/SIGINT handlers when it starts; put ours back
            # so that a stop is immediate and orderly (kopf otherwise waits 5 s for itself).
            await kopf_ready.wait()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)

        tasks = [
            asyncio.create_task(controller.run_workers(WORKERS), name="workers"),
            asyncio.create_task(
                kopf.operator(
                    registry=build_registry(controller),
                    settings=operator_settings(config),
                    standalone=True,
                    clusterwide=True,
                    stop_flag=kopf_stop,
                    ready_flag=kopf_ready,
                ),
                name="kopf",
            ),
            asyncio.create_task(reclaim_signals(), name="signals"),
            asyncio.create_task(stop.wait(), name="signal"),
        ]
        if lease is not None:
            tasks.append(lease)
        if config.resync_seconds:
            tasks.append(
                asyncio.create_task(controller.resync_every(config.resync_seconds), name="resync")
            )
        watched = [t for t in tasks if t.get_name() != "signals"]
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finished = done.pop()
        # kopf answers SIGTERM and SIGINT itself and then returns: a clean stop too
        if finished.get_name() == "signal" or (
            finished.get_name() == "kopf" and finished.exception() is None
        ):
            log.info("stopping")
            kopf_stop.set()
            workers = [t for t in tasks if t.get_name() == "workers"]
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            tasks_kopf = [t for t in tasks if t.get_name() == "kopf"]
            await asyncio.wait(tasks_kopf, timeout=5)
            if elector is not None and lease is not None:
                lease.cancel()  # no renewal may race the release
                await asyncio.gather(lease, return_exceptions=True)
                # only once no write of ours can still land (their threads outlive the
                # cancelled workers); otherwise let the lease run out
                if await kube.writes_settled(within=min(5.0, elector.time_left())):
                    await elector.release()
                else:
                    log.warning("writes still in flight: leaving the lease to expire")
            return 0
        if finished.get_name() == "lease":
            # as upstream (and client-go's users) do: exit now, abandoning requests that
            # may hang for their whole timeout; a fresh start rebuilds from the API server
            log.error("lost the lease: exiting")
            logging.shutdown()
            os._exit(1)
        if finished.exception() is not None:
            log.error("%s stopped: %s", finished.get_name(), finished.exception())
        return 1
    except k8s.ApiError as exc:
        log.error("the API server refused: %s", exc)
        return 1
    finally:
        for informer in informers:
            informer.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()

"""Composition of the controller: CRDs, leader election, IPAM rebuild, kopf watches
feeding the work queue, reconcile workers, HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from vmdhcp.controller.config import ControllerConfig
from vmdhcp.controller.engine import PODS, Controller
from vmdhcp.controller.http import make_app
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.controller.podwatch import PodWatch
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
    pods: PodWatch | None = None
    try:
        if config.install_crds:
            for crd in packaged_crds():
                await kube.apply_crd(crd, field_manager=config.name)
            log.info("custom resource definitions installed or upgraded")
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
            standby.set()
            acquire = asyncio.create_task(elector.acquire())
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({acquire, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if stop.is_set():
                acquire.cancel()
                return 0
            standby.clear()
        await controller.rebuild()
        pods = PodWatch(
            kube,
            config.agent_namespace,
            f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}",
            on_list=lambda listing, first: asyncio.ensure_future(
                controller.correct(PODS, listing, initial=first)
            ),
            on_event=lambda kind, body: controller.observe(PODS, kind, body),
        )
        pods.start(loop)
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
        if elector is not None:
            tasks.append(asyncio.create_task(elector.renew_until_lost(), name="lease"))
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
            if elector is not None:  # only now: no write of ours is still under way
                await elector.release()
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
        if pods is not None:
            pods.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()

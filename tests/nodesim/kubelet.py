"""One pod on one simulated node: how it is run, reported, stopped and let go."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.netns.lab import Lab, Netns, _delete_namespace
from tests.nodesim.forward import PortForward

log = logging.getLogger("nodesim")

KUBELET_FINALIZER = "nodesim.vm-dhcp.test/kubelet"
"""Set when a pod is bound: a deleted pod stays Terminating until its node's kubelet has
stopped it (graceful deletion, which the test API server does not do by itself); a dead
node's pods stay Terminating, as in a real cluster."""
VENV_BIN = Path(sys.executable).parent


class AgentProcess(Protocol):
    """What the kubelet needs of a running agent (tests.netns.lab.Proc, or a container)."""

    @property
    def pid(self) -> int: ...
    def alive(self) -> bool: ...
    def send_signal(self, sig: int) -> None: ...
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int: ...
    def output(self) -> str: ...
    def tail(self, lines: int = 40) -> str: ...


@dataclass
class SimulatedPod:
    name: str
    uid: str
    node: str
    image: str
    netns: Netns
    forward: PortForward
    args: list[str]
    env: dict[str, str]
    grace: float = 30.0
    proc: AgentProcess | None = None
    restarts: int = 0
    ready: bool | None = None
    status_sent: dict[str, Any] = field(default_factory=dict)
    crashed: bool = False
    """Its node died: the process frozen, the link cut, no more status from its kubelet."""


Runner = Callable[[SimulatedPod, Path], AgentProcess]


def run_in_namespace(pod: SimulatedPod, kubeconfig: Path) -> AgentProcess:
    """The default runner: the venv's vm-dhcp-agent in the pod's network namespace."""
    argv = [
        str(VENV_BIN / "vm-dhcp-agent"),
        *pod.args,
        "--kubeconfig",
        str(kubeconfig),
        "--enable-cache-dump-api",
    ]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/root", **pod.env}
    return pod.netns.popen(argv, pod.netns.workdir / "agent.log", env=env)


def create_pod(obj: dict[str, Any], node: str, lab: Lab, api_port: int) -> SimulatedPod:
    """The pod's namespace on the lab's bridge, its init containers run, its agent not yet."""
    meta, spec = obj["metadata"], obj["spec"]
    container = spec["containers"][0]
    netns = lab.add_client(iface="eth1")
    for init in spec.get("initContainers") or []:
        netns.run(list(init.get("command") or []) + list(init.get("args") or []), timeout=30)
    downward = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
    }
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if e.get("value") is not None:
            env[e["name"]] = e["value"]
        path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if path in downward:  # the downward API's fields the agent uses
            env[e["name"]] = downward[path]
    return SimulatedPod(
        name=meta["name"],
        uid=meta["uid"],
        node=node,
        image=container["image"],
        netns=netns,
        forward=PortForward(netns.name, api_port),
        args=list(container.get("args") or []),
        env=env,
        grace=float(spec.get("terminationGracePeriodSeconds") or 30),
    )


def report(core: client.CoreV1Api, namespace: str, pod: SimulatedPod, ready: bool) -> None:
    """The pod's status as its kubelet posts it."""
    flag = "True" if ready else "False"
    address = pod.netns.addresses()
    body = {
        "status": {
            "phase": "Running",
            "podIP": str(address[0].ip) if address else None,
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag},
            ],
            "containerStatuses": [
                {
                    "name": "agent",
                    "image": pod.image,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": pod.restarts,
                    "started": True,
                    "state": {"running": {}},
                }
            ],
        }
    }
    try:
        core.patch_namespaced_pod_status(pod.name, namespace, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
    pod.status_sent = {"ready": ready, "restarts": pod.restarts}
    pod.ready = ready


def mark_not_ready(core: client.CoreV1Api, namespace: str, pod: SimulatedPod) -> None:
    """What the node lifecycle controller does to the pods of a node that stopped
    reporting (MarkPodsNotReady): the Ready condition False, nothing else; the containers
    stay as the kubelet last reported them."""
    was = "True" if pod.status_sent.get("ready") else "False"
    conditions = [
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": was},
        {"type": "Ready", "status": "False"},
    ]
    try:
        core.patch_namespaced_pod_status(
            pod.name, namespace, {"status": {"conditions": conditions}}
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
    pod.ready = False


def release(core: client.CoreV1Api, namespace: str, name: str, uid: str) -> None:
    """The kubelet's finalizer off pod `name` (that uid): the API server then removes it."""
    for _ in range(20):
        try:
            current = core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if current.metadata.uid != uid:
            return
        left = [f for f in current.metadata.finalizers or [] if f != KUBELET_FINALIZER]
        body = {
            "metadata": {
                "finalizers": left or None,
                "resourceVersion": current.metadata.resource_version,
            }
        }
        try:
            core.patch_namespaced_pod(name, namespace, body)
            return
        except ApiException as exc:
            if exc.status == 404:
                return
            if exc.status != 409:
                raise
        time.sleep(0.05)  # changed meanwhile (a status write): read it again
    raise RuntimeError(f"could not remove the kubelet finalizer of pod {name}")


def teardown(lab: Lab, pod: SimulatedPod) -> None:
    """The pod's agent stopped (killed on a crashed node) and its namespace removed."""
    if pod.proc is not None and pod.proc.alive():
        pod.proc.stop(signal.SIGKILL if pod.crashed else signal.SIGTERM)
    pod.forward.close()
    _delete_namespace(pod.netns.name)
    if pod.netns in lab.nodes:
        lab.nodes.remove(pod.netns)
    log.info("nodesim: removed pod %s", pod.name)

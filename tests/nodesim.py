"""A node simulator: the kubelet the test API server does not have, for agent pods.

It watches the agent pods the controller creates (label
`network.harvesterhci.io/vm-dhcp-controller=agent` in the agent namespace) and runs each as
local processes:

- the pod is a network namespace of a `tests.netns.lab.Lab`, attached to the lab's bridge
  (the NAD's VM network) through an interface named `eth1`, as Multus would;
- the init container's command (`ip-setter`) runs in it, then the agent container's
  command line (`vm-dhcp-agent` with the pod's args and env) with a kubeconfig for the
  agent's service account; the API server's loopback port is forwarded into the
  namespace, so the agent reaches `https://127.0.0.1:<port>` as it would through the pod
  network;
- the pod's status (phase, Ready, containerStatuses with the image and restart count)
  follows the agent's real `/readyz`; an agent process that dies is restarted, as the
  kubelet does with `restartPolicy: Always`;
- a deleted pod's processes are killed and its namespace removed.

"VMs" are further namespaces on the same bridge running a real DHCP client with the VM's
MAC (`Lab.add_client(mac)`). Nothing here needs a container runtime; it is also how a
contributor watches the whole system work without a cluster (`make demo`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from kubernetes import client, watch
from kubernetes.client import ApiClient

from tests.netns.lab import Lab, Netns, Proc, _delete_namespace

log = logging.getLogger("nodesim")

AGENT_SELECTOR = "network.harvesterhci.io/vm-dhcp-controller=agent"
CLONE_NEWNET = 0x40000000
VENV_BIN = Path(sys.executable).parent


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def listen_in_namespace(namespace: str, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:`port` inside network namespace `namespace`.

    A socket belongs to the namespace it was created in; the calling thread enters the
    namespace only for the socket() call and returns at once.
    """
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            listener = socket.create_server(("127.0.0.1", port))
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return listener


class PortForward:
    """Connections to 127.0.0.1:port inside a namespace reach 127.0.0.1:port here."""

    def __init__(self, namespace: str, port: int) -> None:
        self.port = port
        self.listener = listen_in_namespace(namespace, port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                inside, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                inside.close()
                continue
            threading.Thread(target=_pipe, args=(inside, outside, self._stop), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


def _pipe(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    selector = selectors.DefaultSelector()
    selector.register(a, selectors.EVENT_READ, b)
    selector.register(b, selectors.EVENT_READ, a)
    try:
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.5):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        selector.close()
        a.close()
        b.close()


@dataclass
class SimulatedPod:
    name: str
    uid: str
    image: str
    netns: Netns
    forward: PortForward
    args: list[str]
    env: dict[str, str]
    proc: Proc | None = None
    restarts: int = 0
    ready: bool | None = None
    status_sent: dict[str, Any] = field(default_factory=dict)
    crashed: bool = False
    """Its node died: the process frozen, the link cut, no more status from its kubelet."""


class NodeSimulator:
    """Run with `with NodeSimulator(...) as sim:`; it stops and cleans up on exit."""

    def __init__(
        self,
        lab: Lab,
        admin: ApiClient,
        agent_kubeconfig: Path,
        namespace: str,
        node_name: str = "sim-node-0",
    ) -> None:
        self.lab = lab
        self.admin = admin
        self.core = client.CoreV1Api(admin)
        self.agent_kubeconfig = agent_kubeconfig
        self.namespace = namespace
        self.node_name = node_name
        self.pods: dict[str, SimulatedPod] = {}
        self.api_port = _api_port(agent_kubeconfig)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_pods, name="nodesim-watch", daemon=True),
            threading.Thread(target=self._status_loop, name="nodesim-status", daemon=True),
        ]

    def __enter__(self) -> NodeSimulator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            for pod in list(self.pods.values()):
                self._teardown(pod)
            self.pods.clear()

    # -- the kubelet's two loops -----------------------------------------------------------

    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(
                    self.namespace, label_selector=AGENT_SELECTOR
                )
                seen = {p.metadata.name: p for p in listed.items}
                with self._lock:
                    for name in set(self.pods) - set(seen):
                        self._teardown(self.pods.pop(name))
                for pod in seen.values():
                    self._admit(pod)
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=AGENT_SELECTOR,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=5,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    pod = event["object"]
                    if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                        with self._lock:
                            known = self.pods.pop(pod.metadata.name, None)
                            if known is not None:
                                self._teardown(known)
                    else:
                        self._admit(pod)
            except Exception as exc:  # the loop's boundary: the API server may be away
                log.warning("nodesim: pod watch failed: %s", exc)
                self._stop.wait(0.5)

    def _status_loop(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                pods = list(self.pods.values())
            for pod in pods:
                try:
                    self._check(pod)
                except Exception as exc:  # the loop's boundary
                    log.warning("nodesim: pod %s: %s", pod.name, exc)

    # -- one pod ---------------------------------------------------------------------------

    def _admit(self, pod: Any) -> None:
        name = pod.metadata.name
        with self._lock:
            known = self.pods.get(name)
            if known is not None and known.uid == pod.metadata.uid:
                return
            if known is not None:
                self._teardown(self.pods.pop(name))
            container = pod.spec.containers[0]
            netns = self.lab.add_client(iface="eth1")
            for init in pod.spec.init_containers or []:
                netns.run(list(init.command or []) + list(init.args or []), timeout=30)
            env = {e.name: e.value for e in container.env or [] if e.value is not None}
            downward = {
                "metadata.name": name,
                "metadata.namespace": pod.metadata.namespace,
                "metadata.uid": pod.metadata.uid,
            }
            for e in container.env or []:  # the downward API's fields the agent uses
                field_path = (
                    e.value_from and e.value_from.field_ref and e.value_from.field_ref.field_path
                )
                if field_path in downward:
                    env[e.name] = downward[field_path]
            simulated = SimulatedPod(
                name=name,
                uid=pod.metadata.uid,
                image=container.image,
                netns=netns,
                forward=PortForward(netns.name, self.api_port),
                args=list(container.args or []),
                env=env,
            )
            self._start(simulated)
            self.pods[name] = simulated
            log.info("nodesim: started pod %s in %s", name, netns.name)

    def _start(self, pod: SimulatedPod) -> None:
        argv = [
            str(VENV_BIN / "vm-dhcp-agent"),
            *pod.args,
            "--kubeconfig",
            str(self.agent_kubeconfig),
            "--enable-cache-dump-api",
        ]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": "/root", **pod.env}
        pod.proc = pod.netns.popen(argv, pod.netns.workdir / "agent.log", env=env)

    def _check(self, pod: SimulatedPod) -> None:
        if pod.crashed:
            return
        if pod.proc is not None and not pod.proc.alive():
            pod.restarts += 1
            log.info("nodesim: agent of pod %s exited; restarting", pod.name)
            self._start(pod)
        status, _ = pod.netns.curl("http://127.0.0.1:8080/readyz", timeout=1)
        ready = status == 200
        if ready == pod.ready and pod.status_sent.get("restarts") == pod.restarts:
            return
        self._patch_status(pod, ready)
        pod.ready = ready

    def _patch_status(self, pod: SimulatedPod, ready: bool) -> None:
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
        self.core.patch_namespaced_pod_status(pod.name, self.namespace, body)
        pod.status_sent = {"ready": ready, "restarts": pod.restarts}

    def _teardown(self, pod: SimulatedPod) -> None:
        if pod.proc is not None and pod.proc.alive():
            pod.proc.stop(signal.SIGKILL if pod.crashed else signal.SIGTERM)
        pod.forward.close()
        _delete_namespace(pod.netns.name)
        if pod.netns in self.lab.nodes:
            self.lab.nodes.remove(pod.netns)
        log.info("nodesim: removed pod %s", pod.name)

    # -- for tests -------------------------------------------------------------------------

    def pod(self, name: str) -> SimulatedPod | None:
        with self._lock:
            return self.pods.get(name)

    def crash_node_of(self, name: str) -> None:
        """The node of pod `name` dies: its agent is frozen (its kernel would still hold
        its addresses), its link goes down, its kubelet reports nothing more; then, as the
        node lifecycle controller does once the node is NotReady, the pod is marked not
        Ready."""
        pod = self.pod(name)
        assert pod is not None, f"no pod {name}"
        assert pod.proc is not None, f"pod {name} runs no agent"
        pod.crashed = True
        pod.proc.send_signal(signal.SIGSTOP)
        pod.netns.ip("link", "set", pod.netns.iface, "down")
        self._patch_status(pod, ready=False)

    def kill_agent(self, name: str) -> int:
        """SIGKILL a pod's agent process (the simulator restarts it); returns its pid."""
        pod = self.pod(name)
        assert pod is not None, f"no pod {name}"
        assert pod.proc is not None
        pid = pod.proc.pid
        subprocess.run(["kill", "-9", str(pid)], check=True)
        return pid


def _api_port(kubeconfig: Path) -> int:
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    parsed = urlparse(server)
    if parsed.hostname not in ("127.0.0.1", "localhost") or parsed.port is None:
        raise ValueError(f"the simulator forwards a loopback API server only, not {server}")
    return parsed.port

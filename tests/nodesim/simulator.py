"""The simulator: Node objects, a scheduler, a kubelet per node and the node lifecycle
controller's part, over the agent pods of one namespace (see the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.netns.lab import Lab
from tests.nodesim.forward import api_port
from tests.nodesim.kubelet import (
    KUBELET_FINALIZER,
    Runner,
    SimulatedPod,
    create_pod,
    mark_not_ready,
    release,
    report,
    run_in_namespace,
    teardown,
)
from tests.nodesim.nodes import (
    UNREACHABLE,
    SimulatedNode,
    cordon,
    register,
    report_node,
    set_taints,
)
from tests.nodesim.scheduling import HOSTNAME, choose_node

log = logging.getLogger("nodesim")

AGENT_SELECTOR = "network.harvesterhci.io/vm-dhcp-controller=agent"


class NodeSimulator:
    """Run with `with NodeSimulator(...) as sim:`; it stops and cleans up on exit.

    `nodes` names the simulated nodes (or how many, named `sim-node-<i>`), each labelled
    `kubernetes.io/hostname` and `network.harvesterhci.io/<cluster_network>: "true"`;
    `unlabelled` adds nodes without the network label (no agent may land there).
    `node_grace` is how long a node goes unheard before the node lifecycle stand-in marks
    it NotReady and its pods not Ready (Kubernetes: --node-monitor-grace-period, 40 s);
    `evict_after`, if set, is when the pods of a NotReady node are then deleted (taint-based
    eviction, 300 s by default in Kubernetes): they stay Terminating while the node is down.
    """

    def __init__(
        self,
        lab: Lab,
        admin: ApiClient,
        agent_kubeconfig: Path,
        namespace: str,
        nodes: int | Sequence[str] = 1,
        cluster_network: str = "mgmt",
        unlabelled: Sequence[str] = (),
        node_grace: float = 0.0,
        evict_after: float | None = None,
        runner: Runner = run_in_namespace,
    ) -> None:
        self.lab = lab
        self.admin = admin
        self.core = client.CoreV1Api(admin)
        self.agent_kubeconfig = agent_kubeconfig
        self.namespace = namespace
        names = [f"sim-node-{i}" for i in range(nodes)] if isinstance(nodes, int) else nodes
        label = f"network.harvesterhci.io/{cluster_network}"
        self.nodes = {name: SimulatedNode(name, {HOSTNAME: name, label: "true"}) for name in names}
        for name in unlabelled:
            self.nodes[name] = SimulatedNode(name, {HOSTNAME: name})
        self.node_grace = node_grace
        self.evict_after = evict_after
        self.runner = runner
        self.pods: dict[str, SimulatedPod] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        """The agent pods as last seen or bound, in their JSON shape."""
        self.api_port = api_port(agent_kubeconfig)
        self._lock = threading.RLock()
        self._stopping: set[str] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_pods, name="nodesim-watch", daemon=True),
            threading.Thread(target=self._loop, name="nodesim-loop", daemon=True),
        ]

    def __enter__(self) -> NodeSimulator:
        for node in self.nodes.values():
            register(self.core, node)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            for pod in list(self.pods.values()):
                teardown(self.lab, pod)
            self.pods.clear()
            left = list(self.objects.values())
        for obj in left:  # nothing of ours holds a pod Terminating after the run
            if KUBELET_FINALIZER in (obj["metadata"].get("finalizers") or []):
                with contextlib.suppress(ApiException):
                    release(
                        self.core, self.namespace, obj["metadata"]["name"], obj["metadata"]["uid"]
                    )
        for name in self.nodes:
            with contextlib.suppress(ApiException):
                self.core.delete_node(name)

    # -- the scheduler, the kubelets' pod watch and their loop -----------------------------

    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_namespaced_pod(
                    self.namespace, label_selector=AGENT_SELECTOR
                )
                serialized = {
                    p.metadata.name: self.admin.sanitize_for_serialization(p) for p in listed.items
                }
                with self._lock:
                    for name in set(self.objects) - set(serialized):
                        self._gone(name)
                for obj in serialized.values():
                    self._sync(obj)
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
                    obj = self.admin.sanitize_for_serialization(event["object"])
                    if event["type"] == "DELETED":
                        with self._lock:
                            self._gone(obj["metadata"]["name"])
                    else:
                        self._sync(obj)
            except Exception as exc:  # the loop's boundary: the API server may be away
                log.warning("nodesim: pod watch failed: %s", exc)
                self._stop.wait(0.5)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._lifecycle()
                with self._lock:
                    pending = [o for o in self.objects.values() if not o["spec"].get("nodeName")]
                    pods = list(self.pods.values())
                for obj in pending:
                    self._sync(obj)
                for pod in pods:
                    self._kubelet_check(pod)
            except Exception as exc:  # the loop's boundary
                log.warning("nodesim: %s", exc)

    def _sync(self, obj: dict[str, Any]) -> None:
        """One agent pod as the API server has it now: bind it, run it, or stop it."""
        meta = obj["metadata"]
        name = meta["name"]
        with self._lock:
            self.objects[name] = obj
            node_name = obj["spec"].get("nodeName")
            if not node_name:
                if not meta.get("deletionTimestamp"):
                    self._bind(obj)
                return
            node = self.nodes.get(node_name)
            if node is None:
                return  # another simulator's node
            known = self.pods.get(name)
            if known is not None and known.uid != meta["uid"]:
                teardown(self.lab, self.pods.pop(name))
                known = None
            if meta.get("deletionTimestamp"):
                if node.up:
                    self._stop_gracefully(name, meta["uid"])
                return
            if known is None and node.up:
                self._admit(obj, node)

    def _gone(self, name: str) -> None:
        self.objects.pop(name, None)
        known = self.pods.pop(name, None)
        if known is not None:
            teardown(self.lab, known)

    def _bind(self, obj: dict[str, Any]) -> None:
        bound = [o for o in self.objects.values() if o["spec"].get("nodeName")]
        nodes = [self._node_object(n) for n in self.nodes.values()]
        chosen = choose_node(obj, nodes, bound)
        if chosen is None:
            return  # Pending until a node fits
        name = obj["metadata"]["name"]
        body = {
            "metadata": {
                "finalizers": [KUBELET_FINALIZER],
                "resourceVersion": obj["metadata"]["resourceVersion"],
            },
            "spec": {"nodeName": chosen},
        }
        try:
            self.core.patch_namespaced_pod(name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return  # changed or gone meanwhile: the watch brings the news
            raise
        obj["spec"]["nodeName"] = chosen
        log.info("nodesim: bound pod %s to %s", name, chosen)

    def _node_object(self, node: SimulatedNode) -> dict[str, Any]:
        read = self.core.read_node(node.name)
        result: dict[str, Any] = self.admin.sanitize_for_serialization(read)
        return result

    # -- one pod on one node ---------------------------------------------------------------

    def _admit(self, obj: dict[str, Any], node: SimulatedNode) -> None:
        pod = create_pod(obj, node.name, self.lab, self.api_port)
        pod.proc = self.runner(pod, self.agent_kubeconfig)
        self.pods[pod.name] = pod
        log.info("nodesim: started pod %s on %s in %s", pod.name, node.name, pod.netns.name)

    def _kubelet_check(self, pod: SimulatedPod) -> None:
        node = self.nodes[pod.node]
        if not node.up or pod.name in self._stopping:
            return
        if pod.proc is not None and not pod.proc.alive():
            pod.restarts += 1
            log.info("nodesim: agent of pod %s exited; restarting", pod.name)
            pod.proc = self.runner(pod, self.agent_kubeconfig)
        status, _ = pod.netns.curl("http://127.0.0.1:8080/readyz", timeout=1)
        ready = status == 200
        if ready == pod.ready and pod.status_sent.get("restarts") == pod.restarts:
            return
        report(self.core, self.namespace, pod, ready)

    def _stop_gracefully(self, name: str, uid: str) -> None:
        """A deleted pod on a live node: SIGTERM, its grace period, then the finalizer off."""
        if name in self._stopping:
            return
        self._stopping.add(name)

        def finish() -> None:
            try:
                pod = self.pods.get(name)
                if pod is not None and pod.uid == uid:
                    if pod.proc is not None and pod.proc.alive():
                        pod.proc.stop(signal.SIGTERM, timeout=pod.grace)
                    with self._lock:
                        if self.pods.get(name) is pod:
                            teardown(self.lab, self.pods.pop(name))
                release(self.core, self.namespace, name, uid)
            except Exception as exc:  # the thread's boundary
                log.warning("nodesim: stopping pod %s: %s", name, exc)
            finally:
                with self._lock:
                    self._stopping.discard(name)

        threading.Thread(target=finish, name=f"nodesim-stop-{name}", daemon=True).start()

    # -- the node lifecycle controller's part ----------------------------------------------

    def _lifecycle(self) -> None:
        now = time.monotonic()
        for node in list(self.nodes.values()):
            if node.up or node.down_since is None:
                continue
            if not node.marked_down and now - node.down_since >= self.node_grace:
                self._mark_down(node)
            if (
                node.marked_down
                and self.evict_after is not None
                and now - node.down_since >= self.node_grace + self.evict_after
            ):
                for pod in self.pods_on(node.name):
                    obj = self.objects.get(pod.name) or {}
                    if not (obj.get("metadata") or {}).get("deletionTimestamp"):
                        self._delete_pod(pod.name, pod.uid)

    def _mark_down(self, node: SimulatedNode) -> None:
        """NotReady (Unknown), tainted unreachable, and its pods marked not Ready."""
        node.marked_down = True
        report_node(self.core, node.name, up=False)
        set_taints(
            self.core, node.name, [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")], []
        )
        for pod in self.pods_on(node.name):
            mark_not_ready(self.core, self.namespace, pod)

    def _delete_pod(self, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name, self.namespace, body=client.V1DeleteOptions(preconditions={"uid": uid})
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- for tests: nodes ------------------------------------------------------------------

    def pods_on(self, node: str) -> list[SimulatedPod]:
        with self._lock:
            return [pod for pod in self.pods.values() if pod.node == node]

    def node_of(self, pod_name: str) -> str:
        pod = self.pod(pod_name)
        assert pod is not None, f"no pod {pod_name}"
        return pod.node

    def crash_node(self, name: str) -> None:
        """Node `name` dies: its agents frozen (its kernel would still hold their addresses),
        their links down, its kubelet silent; the lifecycle stand-in then marks it NotReady."""
        node = self.nodes[name]
        with self._lock:
            node.crashed, node.down_since = True, time.monotonic()
            for pod in self.pods_on(name):
                pod.crashed = True
                if pod.proc is not None:
                    pod.proc.send_signal(signal.SIGSTOP)
                pod.netns.ip("link", "set", pod.netns.iface, "down")
            if self.node_grace <= 0:
                self._mark_down(node)

    def cut_off(self, name: str) -> None:
        """Node `name` loses the API server (its kubelet and its agents alike) but stays on
        the VM network."""
        node = self.nodes[name]
        with self._lock:
            node.cut_off, node.down_since = True, time.monotonic()
            for pod in self.pods_on(name):
                pod.forward.cut()
            if self.node_grace <= 0:
                self._mark_down(node)

    def recover_node(self, name: str) -> None:
        """Node `name` is back: a crashed one rebooted (its agents killed, links up), a cut
        off one reconnected; Ready again and untainted. Its kubelet then finishes the pods
        deleted meanwhile and restarts the others."""
        node = self.nodes[name]
        with self._lock:
            for pod in self.pods_on(name):
                if pod.crashed:
                    if pod.proc is not None:
                        pod.proc.send_signal(signal.SIGKILL)
                        pod.proc.send_signal(signal.SIGCONT)
                    pod.netns.ip("link", "set", pod.netns.iface, "up")
                    pod.crashed = False
                pod.forward.restore()
                pod.ready = None  # report afresh
            node.crashed = node.cut_off = node.marked_down = False
            node.down_since = None
        report_node(self.core, name, up=True)
        set_taints(self.core, name, [], [UNREACHABLE])
        for obj in list(self.objects.values()):
            if obj["spec"].get("nodeName") == name:
                self._sync(obj)

    def drain(self, name: str, timeout: float = 120.0) -> list[str]:
        """What `kubectl drain` does: cordon, evict every pod of the node (an eviction refused
        by a PodDisruptionBudget is retried, as kubectl does), and wait until they are gone.
        The evictions are judged here (the test API server has no eviction subresource) by
        tests.nodesim.scheduling.eviction_allowed; returns the refusals seen."""
        from tests.nodesim.drain import drain

        cordon(self.core, name)
        return drain(self, name, timeout)

    def uncordon(self, name: str) -> None:
        cordon(self.core, name, unschedulable=False)

    # -- for tests: pods -------------------------------------------------------------------

    def pod(self, name: str) -> SimulatedPod | None:
        with self._lock:
            return self.pods.get(name)

    def crash_node_of(self, name: str) -> None:
        """The node of pod `name` dies (see crash_node)."""
        self.crash_node(self.node_of(name))

    def kill_agent(self, name: str) -> int:
        """SIGKILL a pod's agent process (the kubelet restarts it); returns its pid."""
        pod = self.pod(name)
        assert pod is not None, f"no pod {name}"
        assert pod.proc is not None, f"no agent runs in pod {name}"
        pid = pod.proc.pid
        pod.proc.send_signal(signal.SIGKILL)
        return pid

"""The controller's resync and its agent-pod watch against the real test API server: what a
broken watch never reported (deleted, changed, replaced objects) is corrected from a
relist, nothing the watch delivered after the list is undone, and the pod watch sees the
agent pods of its namespace only, across watch restarts (resumed, not relisted) and
across a real 410 Gone (relisted)."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.cluster import (
    Cluster,
    create_namespace,
    external_kubeconfig,
    start_cluster,
    stop_cluster,
    unique_namespace_name,
)
from tests.integration.test_controller import GROUP, POOL_SPEC, VERSION
from vmdhcp.api.constants import AGENT_LABEL_VALUE, LABEL_VM_DHCP_CONTROLLER
from vmdhcp.controller import informer as podwatch
from vmdhcp.controller.config import ConfigError, load_config
from vmdhcp.controller.engine import IPPOOLS, VMNETCFGS, Controller
from vmdhcp.controller.informer import PodWatch
from vmdhcp.controller.metrics import ControllerMetrics
from vmdhcp.k8s import Kube, pod_lister, pod_watcher
from vmdhcp.watching import list_then_watch

pytestmark = pytest.mark.cluster


def pool_body(namespace: str, name: str) -> dict[str, Any]:
    spec = copy.deepcopy(POOL_SPEC)
    spec["networkName"] = f"{namespace}/{name}"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def ghost(namespace: str, name: str, resource_version: int) -> dict[str, Any]:
    """A vmnetcfg as a watch would have delivered it; the API server has no such object."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": str(resource_version),
        },
        "spec": {"vmName": name, "networkConfigs": []},
    }


async def drain(controller: Controller) -> set[tuple[str, str, str]]:
    """The keys waiting in the work queue (no worker runs in these tests)."""
    keys = set()
    while len(controller.queue):
        key = await controller.queue.get()
        controller.queue.done(key)
        keys.add(key)
    return keys


def sample(metrics: ControllerMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "vmdhcpcontroller_resync_corrections_total", {"kind": kind}
    )
    assert value is not None
    return value


async def test_resync_corrects_what_the_watch_missed(
    api_client: ApiClient, custom_api: CustomObjectsApi, namespace: str
) -> None:
    config = load_config(["--namespace", namespace, "--no-agent"], {})
    metrics = ControllerMetrics()
    controller = Controller(config, Kube(api_client), metrics)
    ns = namespace
    created = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "kept")
    )
    replaced = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "replaced")
    )
    for _ in range(2):  # the store now mirrors the cluster, as after a first list
        await controller.resync()
    await drain(controller)
    store = controller.store
    assert (store.get(IPPOOLS, (ns, "kept")) or {})["metadata"]["uid"] == created["metadata"]["uid"]
    before = {kind: sample(metrics, kind) for kind in ("deleted", "added", "modified")}

    # what the watch "missed": a vmnetcfg deleted long ago, a pool change, a pool replaced
    controller.observe(VMNETCFGS, "ADDED", ghost(ns, "gone", 1))
    changed = custom_api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", "kept", {"spec": {"ipv4Config": {"dns": ["9.9.9.9"]}}}
    )
    custom_api.delete_namespaced_custom_object(GROUP, VERSION, ns, "ippools", "replaced")
    again = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "replaced")
    )
    assert again["metadata"]["uid"] != replaced["metadata"]["uid"]
    await drain(controller)

    assert await controller.resync() == 0, "a disagreement seen once may be an event on its way"
    corrections = await controller.resync()

    assert store.get(VMNETCFGS, (ns, "gone")) is None
    kept = store.get(IPPOOLS, (ns, "kept")) or {}
    assert kept["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]
    assert (store.get(IPPOOLS, (ns, "replaced")) or {})["metadata"]["uid"] == again["metadata"][
        "uid"
    ]
    queued = await drain(controller)
    assert {(VMNETCFGS, ns, "gone"), (IPPOOLS, ns, "kept"), (IPPOOLS, ns, "replaced")} <= queued
    # gone and the replaced pool's old self: deleted; its new self: added; kept: modified
    # (other tests' namespaces may still be going away, hence at least)
    assert sample(metrics, "deleted") - before["deleted"] >= 2
    assert sample(metrics, "added") - before["added"] >= 1
    assert sample(metrics, "modified") - before["modified"] >= 1
    assert corrections >= 4
    assert await controller.resync() == 0, "a second round finds nothing"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_a_bad_resync_period_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="resync-period"):
        load_config(["--namespace", "n", "--no-agent", "--resync-period", value], {})


def agent_pod_body(name: str, labelled: bool) -> dict[str, Any]:
    labels = {LABEL_VM_DHCP_CONTROLLER: AGENT_LABEL_VALUE} if labelled else {"app": "other"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example/none:1"}]},
    }


async def test_the_pod_watch_sees_only_labelled_pods_of_its_namespace_across_watch_restarts(
    api_client: ApiClient, core_api: CoreV1Api, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PodWatch alone, with the simplest consumer of its contract: a list replaces the
    picture, an event updates it."""
    loop = asyncio.get_running_loop()
    pods: dict[tuple[str, str], dict[str, Any]] = {}
    lists: list[bool] = []
    watched_from: list[str] = []

    def ref(body: dict[str, Any]) -> tuple[str, str]:
        return (body["metadata"]["namespace"], body["metadata"]["name"])

    def on_list(listing: dict[str, Any], first: bool) -> None:
        lists.append(first)
        pods.clear()
        pods.update({ref(body): body for body in listing["items"]})

    def on_event(kind: str, body: dict[str, Any]) -> None:
        if kind == "DELETED":
            pods.pop(ref(body), None)
        else:
            pods[ref(body)] = body

    def counting_watcher(*args: Any) -> Callable[[str], Iterator[tuple[str, dict[str, Any]]]]:
        watch_from = pod_watcher(*args)

        def counted(resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
            watched_from.append(resource_version)
            return watch_from(resource_version)

        return counted

    monkeypatch.setattr(podwatch, "pod_watcher", counting_watcher)
    core_api.create_namespaced_pod(namespace, agent_pod_body("before", True))
    watch = PodWatch(
        Kube(api_client),
        namespace,
        f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}",
        on_list=on_list,
        on_event=on_event,
        watch_seconds=1,  # the server ends each watch after a second: resumed all along
    )
    watch.start(loop)

    async def until(condition: Callable[[], bool], what: str) -> None:
        for _ in range(200):
            if condition():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {sorted(pods)}")

    try:
        await until(lambda: (namespace, "before") in pods, "the listed pod")
        core_api.create_namespaced_pod(namespace, agent_pod_body("agent", True))
        core_api.create_namespaced_pod(namespace, agent_pod_body("stranger", False))
        await until(lambda: (namespace, "agent") in pods, "the watched pod")
        # raw answer: a deletion with no kubelet answers with a Status the client cannot
        # decode as a Pod
        core_api.delete_namespaced_pod(
            "before", namespace, grace_period_seconds=0, _preload_content=False
        ).read()
        await until(lambda: (namespace, "before") not in pods, "the deletion")
        seen = len(watched_from)
        await until(lambda: len(watched_from) >= seen + 2, "two watch restarts")
        core_api.create_namespaced_pod(namespace, agent_pod_body("later", True))
        await until(lambda: (namespace, "later") in pods, "a pod after the restarts")
        assert lists == [True]  # each watch resumed where the last ended: never relisted
        assert set(pods) == {(namespace, "agent"), (namespace, "later")}
    finally:
        watch.stop()


async def test_a_store_ahead_of_the_list_is_not_taken_back(
    api_client: ApiClient, custom_api: CustomObjectsApi, namespace: str
) -> None:
    """The watch may deliver a newer version, a new object or a deletion while a list is on
    its way: the list must neither undo them nor bring a deleted object back. Versions are
    opaque, so each disagreement is settled by reading the object."""
    config = load_config(["--namespace", namespace, "--no-agent"], {})
    controller = Controller(config, Kube(api_client), ControllerMetrics())
    ns = namespace
    for name in ("changed", "deleted"):
        custom_api.create_namespaced_custom_object(
            GROUP, VERSION, ns, "ippools", pool_body(ns, name)
        )
    listing = await controller.kube.list_objects(GROUP, VERSION, "ippools")
    await controller.correct(IPPOOLS, listing, initial=True)
    await drain(controller)
    # what the watch brought after that list was taken
    changed = custom_api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", "changed", {"spec": {"ipv4Config": {"dns": ["9.9.9.9"]}}}
    )
    controller.observe(IPPOOLS, "MODIFIED", changed)
    born = custom_api.create_namespaced_custom_object(
        GROUP, VERSION, ns, "ippools", pool_body(ns, "born")
    )
    controller.observe(IPPOOLS, "ADDED", born)
    gone = copy.deepcopy(controller.store.get(IPPOOLS, (ns, "deleted")) or {})
    custom_api.delete_namespaced_custom_object(GROUP, VERSION, ns, "ippools", "deleted")
    controller.observe(IPPOOLS, "DELETED", gone)
    await drain(controller)

    for _ in range(2):  # a second round reads what the first only suspected
        assert await controller.correct(IPPOOLS, listing) == 0
    store = controller.store
    assert (store.get(IPPOOLS, (ns, "changed")) or {})["metadata"]["resourceVersion"] == changed[
        "metadata"
    ]["resourceVersion"]
    assert store.get(IPPOOLS, (ns, "born")) is not None
    assert store.get(IPPOOLS, (ns, "deleted")) is None
    assert await drain(controller) == set()
    # a late event of the deleted object cannot bring it back either
    controller.observe(IPPOOLS, "MODIFIED", gone)
    assert store.get(IPPOOLS, (ns, "deleted")) is None


def test_a_watch_that_fails_at_once_backs_off_and_is_not_relisted(
    api_client: ApiClient, namespace: str
) -> None:
    """A list that works and a watch that is refused (as without the watch verb) must not
    retry twice a second for ever: the watches back off as failures do, and retry from the
    list's resourceVersion (a refusal is not an expiry: no relist)."""
    real_list = pod_lister(Kube(api_client), namespace, "app=none")
    lists: list[float] = []
    watches: list[float] = []
    failures: list[float] = []

    def list_once() -> dict[str, Any]:
        lists.append(time.monotonic())
        return real_list()

    def refused_watch(resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        watches.append(time.monotonic())
        raise ApiException(status=403, reason="Forbidden")
        yield  # a generator, as a watch is

    stop = threading.Event()
    thread = threading.Thread(
        target=list_then_watch,
        args=(list_once, refused_watch),
        kwargs={
            "on_list": lambda listing, first: None,
            "on_event": lambda kind, body: None,
            "on_failure": lambda reason, retry_in: failures.append(retry_in),
            "stop": stop,
        },
        daemon=True,
    )
    thread.start()
    time.sleep(4)  # the behaviour under test is a rate: 4 s of it
    stop.set()
    thread.join(timeout=15)
    # 0.5 + 1 + 2 s of backoff: watches at about 0, 0.5, 1.5 and 3.5 s (without backoff: 8)
    assert 2 <= len(watches) <= 5, [round(t - watches[0], 2) for t in watches]
    assert len(lists) == 1
    assert failures[:3] == [0.5, 1.0, 2.0]


# -- a real 410 Gone: a server that serves watches from etcd and compacts every second --


@pytest.fixture(scope="module")
def compacting_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An API server of its own (pods only: no CRDs) without a watch cache, whose etcd
    history is compacted every second: a watch resumed from a resourceVersion a few
    seconds old, with writes since, gets 410 Gone."""
    if external_kubeconfig() is not None:
        pytest.skip("needs API server flags: runs only on a cluster started by this suite")
    rundir = tmp_path_factory.mktemp("k8s-compacting")
    started = start_cluster(rundir, "--watch-cache=false", "--etcd-compaction-interval=1s")
    try:
        yield started
    finally:
        stop_cluster(started)


def test_the_pod_watcher_raises_410_on_an_expired_version_and_the_loop_relists(
    compacting_cluster: Cluster,
) -> None:
    with compacting_cluster.api_client() as api:
        namespace = unique_namespace_name("expired")
        create_namespace(api, namespace)
        core, kube = CoreV1Api(api), Kube(api)
        selector = f"{LABEL_VM_DHCP_CONTROLLER}={AGENT_LABEL_VALUE}"
        core.create_namespaced_pod(namespace, agent_pod_body("first", True))
        listed = pod_lister(kube, namespace, selector)()
        old = listed["metadata"]["resourceVersion"]
        for n in range(3):
            core.create_namespaced_config_map(namespace, {"metadata": {"name": f"churn-{n}"}})
        time.sleep(3)  # two compactions: the list's version is gone
        with pytest.raises(ApiException) as raised:
            list(pod_watcher(kube, namespace, selector, 5)(old))
        assert raised.value.status == 410

        # the loop takes that for "relist": the listing reaches on_list as not the first
        lists: list[tuple[bool, set[str]]] = []
        events: list[tuple[str, str]] = []
        failures: list[str] = []
        stop = threading.Event()
        thread = threading.Thread(
            target=list_then_watch,
            args=(pod_lister(kube, namespace, selector), pod_watcher(kube, namespace, selector, 1)),
            kwargs={
                "on_list": lambda listing, first: lists.append(
                    (first, {i["metadata"]["name"] for i in listing["items"]})
                ),
                "on_event": lambda kind, body: events.append((kind, body["metadata"]["name"])),
                "on_failure": lambda reason, retry_in: failures.append(reason),
                "stop": stop,
            },
            daemon=True,
        )
        thread.start()
        try:
            deadline = time.monotonic() + 30
            n = 3
            while len(lists) < 2:
                assert time.monotonic() < deadline, lists
                core.create_namespaced_config_map(namespace, {"metadata": {"name": f"churn-{n}"}})
                n += 1
                time.sleep(0.2)
            core.create_namespaced_pod(namespace, agent_pod_body("second", True))
            deadline = time.monotonic() + 15
            while ("ADDED", "second") not in events:
                assert time.monotonic() < deadline, events
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(timeout=15)
        assert lists[0] == (True, {"first"})
        assert all(first is False for first, _ in lists[1:])
        assert failures == []  # an expiry is routine, not a failure

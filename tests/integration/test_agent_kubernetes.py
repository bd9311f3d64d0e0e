"""The agent fed from the API server: it loads the initial list (upstream waits for the
next update), follows every change live, survives the API server going away, and serves
exactly what the file mode serves for the same IPPool. Runs under a minted service-account
identity with only the rights the agent needs."""

import asyncio
import copy
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api

from tests.agentproc import AgentProcess, running_agent, wait_for
from tests.cluster import (
    Cluster,
    create_namespace,
    external_kubeconfig,
    prepare_cluster,
    start_cluster,
    stop_cluster,
    unique_namespace_name,
)
from vmdhcp.agent import kubeapi
from vmdhcp.agent.sources import WATCH_SECONDS_ENV

pytestmark = pytest.mark.cluster

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
SEED = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "data" / "ippool-net-48.yaml").read_text()
)


def create_pool(custom: CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    body = copy.deepcopy(body)
    body["metadata"] = {"name": "net-48", "namespace": namespace}
    status = body.pop("status")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", body)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "ippools", "net-48", {"status": status}
    )


@pytest.fixture
def agent_kubeconfig(cluster: Cluster, api_client: ApiClient, namespace: str) -> Path:
    """A kubeconfig for system:serviceaccount:<ns>:vm-dhcp-agent, allowed to read IPPools and
    post Events in the namespace, and nothing else."""
    rbac = RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "vm-dhcp-agent"},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["ippools"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "vm-dhcp-agent"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "vm-dhcp-agent",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "vm-dhcp-agent", "namespace": namespace}
            ],
        },
    )
    return cluster.mint(f"system:serviceaccount:{namespace}:vm-dhcp-agent")


def dns_of(leases: dict[str, dict[str, Any]]) -> set[str]:
    return {dns for record in leases.values() for dns in record["DNS"]}


def test_initial_list_live_changes_and_deletion(
    custom_api: CustomObjectsApi, namespace: str, agent_kubeconfig: Path, tmp_path: Path
) -> None:
    create_pool(custom_api, namespace, SEED)
    args = ["--ippool-ref", f"{namespace}/net-48", "--kubeconfig", str(agent_kubeconfig)]
    args += ["--dry-run", "--enable-cache-dump-api", "--name", "test-agent"]
    with running_agent(args, tmp_path / "agent.log") as agent:
        # ready only because the initial list was loaded: nothing changed since
        leases = agent.leases()
        assert {m: r["ClientIP"] for m, r in leases.items()} == {
            "fa:cf:8e:50:82:fc": "192.168.48.82"
        }
        assert dns_of(leases) == {"1.1.1.1"}

        custom_api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "ippools",
            "net-48",
            {"spec": {"ipv4Config": {"dns": ["9.9.9.9"], "leaseTime": 600}}},
        )
        wait_for(lambda: dns_of(agent.leases()) == {"9.9.9.9"}, 10, "the new DNS in /leases")
        assert {r["LeaseTime"] for r in agent.leases().values()} == {600}

        moved = {"192.168.48.85": "FA:CF:8E:50:82:FC", "192.168.48.81": "EXCLUDED"}
        custom_api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "ippools",
            "net-48",
            {"status": {"ipv4": {"allocated": None}}},
        )
        custom_api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "ippools",
            "net-48",
            {"status": {"ipv4": {"allocated": moved, "used": 1, "available": 7}}},
        )
        wait_for(
            lambda: {r["ClientIP"] for r in agent.leases().values()} == {"192.168.48.85"},
            10,
            "the lease to follow the MAC to its new address",
        )

        custom_api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", "net-48")
        wait_for(lambda: not agent.ready(), 10, "the agent to stop serving a deleted pool")
        assert agent.leases() == {}

        create_pool(custom_api, namespace, SEED)
        wait_for(agent.ready, 10, "the agent to serve the re-created pool")
    assert "Traceback" not in agent.output()


def test_kubernetes_mode_serves_what_file_mode_serves(
    custom_api: CustomObjectsApi, namespace: str, agent_kubeconfig: Path, tmp_path: Path
) -> None:
    create_pool(custom_api, namespace, SEED)
    fed = ["--ippool-ref", f"{namespace}/net-48", "--kubeconfig", str(agent_kubeconfig)]
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(SEED))
    common = ["--dry-run", "--enable-cache-dump-api"]
    with (
        running_agent([*fed, *common], tmp_path / "k8s.log") as from_api,
        running_agent(
            ["--ippool-file", str(pool_file), *common], tmp_path / "file.log"
        ) as from_file,
    ):
        assert from_api.leases() == from_file.leases()
        assert from_api.leases()  # and not trivially


def _gone(pid: int) -> bool:
    """True once `pid` has exited; reaps it when an earlier restart made it our child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: the toolkit started it
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def restart_apiserver_later(cluster: Cluster) -> Callable[[], None]:
    """Kill the API server now (etcd keeps the data); the returned function starts it again
    with the same command line, ports and storage."""
    assert cluster.rundir is not None
    pidfile = cluster.rundir / "apiserver.pid"
    pid = int(pidfile.read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    env_items = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in env_items if b"=" in item)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), 10, "the API server to die")

    log = str(pidfile.with_name("apiserver.log"))

    def restart() -> None:
        # posix_spawn rather than Popen: the server outlives this test (the session's
        # teardown stops it through the pid file), and no Popen object may be left behind.
        new_pid = os.posix_spawn(
            argv[0].decode(),
            [a.decode() for a in argv],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_APPEND, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        pidfile.write_text(f"{new_pid}\n")

    return restart


def test_keeps_serving_while_the_api_server_is_away(
    cluster: Cluster,
    custom_api: CustomObjectsApi,
    namespace: str,
    agent_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    if cluster.rundir is None:
        pytest.skip("needs a cluster started by this suite (it kills and restarts the API server)")
    create_pool(custom_api, namespace, SEED)
    args = ["--ippool-ref", f"{namespace}/net-48", "--kubeconfig", str(agent_kubeconfig)]
    args += ["--dry-run", "--enable-cache-dump-api"]
    with running_agent(args, tmp_path / "a.log") as agent:
        before = agent.leases()
        restart = restart_apiserver_later(cluster)
        try:
            wait_for(
                lambda: "API server unreachable" in agent.output(),
                30,
                "the agent to notice the API server is gone",
            )
            assert agent.ready()
            assert agent.leases() == before
        finally:
            restart()
        wait_for(lambda: api_ready(custom_api, namespace), 60, "the API server to return")
        custom_api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "ippools",
            "net-48",
            {"spec": {"ipv4Config": {"dns": ["8.8.4.4"]}}},
        )
        wait_for(lambda: dns_of(agent.leases()) == {"8.8.4.4"}, 30, "the agent to resynchronise")


def api_ready(custom_api: CustomObjectsApi, namespace: str) -> bool:
    try:
        custom_api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "ippools", "net-48", _request_timeout=2
        )
    except Exception:
        return False
    return True


async def test_decline_and_release_become_events_on_the_ippool(
    cluster: Cluster, custom_api: CustomObjectsApi, namespace: str, agent_kubeconfig: Path
) -> None:
    from ipaddress import IPv4Address

    from kubernetes.client import CoreV1Api

    from vmdhcp.agent.events import EventPoster
    from vmdhcp.agent.kubeapi import connect
    from vmdhcp.dhcp import Declined, Released

    create_pool(custom_api, namespace, SEED)
    uid = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", "net-48")[
        "metadata"
    ]["uid"]
    agent_api = connect(str(agent_kubeconfig))  # the agent's own client, its identity
    with cluster.api_client() as admin:
        poster = EventPoster(agent_api, namespace, "net-48", "default-net-48-agent")
        poster.uid = uid
        mac, address = "fa:cf:8e:50:82:fc", IPv4Address("192.168.48.82")
        poster.post(Declined(mac, address))
        poster.post(Declined(mac, address))  # rate-limited: one Event a minute per MAC
        poster.post(Released(mac, address))
        await asyncio.gather(*poster._tasks)

        def events() -> list[Any]:
            items = CoreV1Api(admin).list_namespaced_event(namespace).items
            return [e for e in items if e.involved_object.name == "net-48"]

        found = wait_for(lambda: len(events()) >= 2 and events(), 10, "two events")
    by_reason = {e.reason: e for e in found}
    assert sorted(by_reason) == ["AddressDeclined", "AddressReleased"]
    declined = by_reason["AddressDeclined"]
    assert declined.type == "Warning"
    assert declined.involved_object.kind == "IPPool"
    assert declined.involved_object.uid == uid
    assert "fa:cf:8e:50:82:fc declined 192.168.48.82" in declined.message
    assert len(found) == 2


APPLIED = 'vmdhcp_agent_pool_reloads_total{result="ok"}'
"""IPPool versions the agent applied: each one builds a new PoolState, whose reply memo
starts empty."""


def set_dns(custom: CustomObjectsApi, namespace: str, dns: str) -> None:
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "ippools", "net-48", {"spec": {"ipv4Config": {"dns": [dns]}}}
    )


def test_watch_restarts_that_bring_the_same_pool_keep_the_agent_state(
    custom_api: CustomObjectsApi, namespace: str, agent_kubeconfig: Path, tmp_path: Path
) -> None:
    create_pool(custom_api, namespace, SEED)
    args = ["--ippool-ref", f"{namespace}/net-48", "--kubeconfig", str(agent_kubeconfig)]
    args += ["--dry-run", "--enable-cache-dump-api"]
    # the server ends each watch after a second: the agent resumes it, again and again
    env = {WATCH_SECONDS_ENV: "1"}
    with running_agent(args, tmp_path / "agent.log", env=env) as agent:
        assert agent.metric(APPLIED) == 1
        time.sleep(4.5)  # four watches or so end and are resumed
        assert agent.metric(APPLIED) == 1

        set_dns(custom_api, namespace, "9.9.9.9")
        wait_for(lambda: dns_of(agent.leases()) == {"9.9.9.9"}, 10, "the change to be applied")
        assert agent.metric(APPLIED) == 2

        # a new resourceVersion with nothing the agent reads in it is not applied either
        custom_api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "ippools",
            "net-48",
            {"metadata": {"annotations": {"vm-dhcp.test/note": "not for the agent"}}},
        )
        time.sleep(2.5)
        set_dns(custom_api, namespace, "8.8.8.8")
        wait_for(lambda: dns_of(agent.leases()) == {"8.8.8.8"}, 10, "the next change")
        assert agent.metric(APPLIED) == 3
    output = agent.output()
    assert "listed again" not in output  # no watch expired: resumed, never relisted
    assert "Traceback" not in output


def test_the_agent_watch_gets_bookmarks(
    cluster: Cluster, custom_api: CustomObjectsApi, namespace: str, agent_kubeconfig: Path
) -> None:
    """The agent's own client asks for bookmarks: changes the field selector filters out
    still move its resourceVersion on (the server sends them before the watch ends)."""
    create_pool(custom_api, namespace, SEED)
    api = kubeapi.connect(str(agent_kubeconfig))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/ippools"
    query = {"fieldSelector": "metadata.name=net-48"}
    listed = api.request("GET", path, query)["metadata"]["resourceVersion"]

    def other_pools() -> None:
        time.sleep(0.5)
        for n in range(3):
            body = copy.deepcopy(SEED)
            body["metadata"] = {"name": f"other-{n}", "namespace": namespace}
            body.pop("status")
            custom_api.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", body)

    writer = threading.Thread(target=other_pools)
    writer.start()
    events = list(api.watch(path, {**query, "resourceVersion": listed}, 4))
    writer.join()
    kinds = {kind for kind, _ in events}
    assert kinds == {"BOOKMARK"}, events  # the other pools are filtered out, not delivered
    assert events[-1][1]["metadata"]["resourceVersion"] != listed


# -- a real 410 Gone: a server that serves watches from etcd and compacts every second --


@pytest.fixture(scope="module")
def compacting_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An API server of its own without a watch cache, whose etcd history is compacted
    every second: a watch resumed from a resourceVersion a few seconds old, with writes
    since, gets 410 Gone."""
    if external_kubeconfig() is not None:
        pytest.skip("needs API server flags: runs only on a cluster started by this suite")
    rundir = tmp_path_factory.mktemp("k8s-compacting")
    started = start_cluster(rundir, "--watch-cache=false", "--etcd-compaction-interval=1s")
    try:
        with started.api_client() as api:
            prepare_cluster(api)
        yield started
    finally:
        stop_cluster(started)


def churn(core: CoreV1Api, namespace: str, seconds: float) -> None:
    """Writes elsewhere, so that etcd's revision moves and compaction passes the agent's."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "churn-"}})
        time.sleep(0.2)


def listed_again(agent: AgentProcess) -> int:
    return agent.output().count("listed again (the watch had expired)")


def test_an_expired_watch_relists_and_the_same_pool_is_not_applied_again(
    compacting_cluster: Cluster, tmp_path: Path
) -> None:
    with compacting_cluster.api_client() as api:
        namespace = unique_namespace_name("expired")
        create_namespace(api, namespace)
        custom, core = CustomObjectsApi(api), CoreV1Api(api)
        create_pool(custom, namespace, SEED)
        args = ["--ippool-ref", f"{namespace}/net-48"]
        args += ["--kubeconfig", str(compacting_cluster.kubeconfig)]
        args += ["--dry-run", "--enable-cache-dump-api"]
        with running_agent(args, tmp_path / "agent.log", env={WATCH_SECONDS_ENV: "1"}) as agent:
            assert agent.metric(APPLIED) == 1
            began = time.monotonic()
            while listed_again(agent) < 2:
                assert time.monotonic() - began < 30, agent.output()
                churn(core, namespace, 1.0)
            assert agent.ready()
            assert agent.metric(APPLIED) == 1  # relisted twice, the same pool: kept

            set_dns(custom, namespace, "9.9.9.9")
            wait_for(lambda: dns_of(agent.leases()) == {"9.9.9.9"}, 15, "the change")
            assert agent.metric(APPLIED) == 2
        assert "Traceback" not in agent.output()
        assert "unreachable" not in agent.output()  # an expiry is routine, not a failure

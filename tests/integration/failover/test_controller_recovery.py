"""vm-dhcp-controller across its own lifecycle, against the real test API server: restart
recovery from the durable state (vmnetcfg and IPPool status), leader election between two
processes, and the agent image roll-out (and its hold) when a new controller starts with
another --image.

Each test starts its own controllers (tests/agentproc.py `running_controller`); the
module-scoped controller of test_controller.py is not running here."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from tests.agentproc import AgentProcess, running_controller, wait_for
from tests.cluster import Cluster
from tests.integration.test_controller import GROUP, VERSION, Env

pytestmark = pytest.mark.cluster

IMAGE_A = "registry.example:5000/vm-dhcp-agent:v1"
IMAGE_B = "registry.example:5000/vm-dhcp-agent:v2"
HOLD = "network.harvesterhci.io/hold-ippool-agent-upgrade"
VMNETCFGS = "virtualmachinenetworkconfigs"
LEASE = "vm-dhcp-controllers"
LEASE_SECONDS = 15  # LeaderElector's lease duration (no flag sets it)
RETRY_SECONDS = 2  # LeaderElector's retry period for a standby

#: serverIP inside the range (RESERVED) and one exclude (EXCLUDED): both marks in the status.
IPV4 = {
    "serverIP": "192.168.48.80",
    "cidr": "192.168.48.0/24",
    "pool": {"start": "192.168.48.80", "end": "192.168.48.99", "exclude": ["192.168.48.82"]},
    "router": "192.168.48.1",
}
MARKED = {"192.168.48.80": "RESERVED", "192.168.48.82": "EXCLUDED"}


def controller_args(
    cluster: Cluster,
    agent_namespace: str,
    *,
    name: str = "vm-dhcp-controller-recovery",
    image: str = IMAGE_A,
    lease_namespace: str | None = None,
) -> list[str]:
    args = [
        "--name", name,
        "--namespace", agent_namespace,
        "--image", image,
        "--kubeconfig", str(cluster.kubeconfig),
        "--agent-replicas", "1",  # upstream's one pod (agent replicas: test_agent_failover)
    ]  # fmt: skip
    if lease_namespace is None:
        return [*args, "--no-leader-election"]
    return [*args, "--leader-election-namespace", lease_namespace]


def clean(process: AgentProcess) -> None:
    output = process.output()
    assert "Traceback" not in output, output


def allocations(env: Env) -> dict[str, tuple[str, str]]:
    """vmnetcfg name -> (mac, address) of every Allocated entry in the namespace."""
    listing = env.custom.list_namespaced_custom_object(GROUP, VERSION, env.ns, VMNETCFGS)
    held: dict[str, tuple[str, str]] = {}
    for item in cast(dict[str, Any], listing)["items"]:
        for entry in (item.get("status") or {}).get("networkConfigs") or []:
            if entry.get("state") == "Allocated":
                held[item["metadata"]["name"]] = (entry["macAddress"], entry["allocatedIPAddress"])
    return held


def allocated_all(env: Env, names: set[str]) -> Callable[[], dict[str, tuple[str, str]] | None]:
    def check() -> dict[str, tuple[str, str]] | None:
        held = allocations(env)
        return held if names <= held.keys() else None

    return check


def pool_status(env: Env, pool: str = "net-48") -> dict[str, Any]:
    return dict((env.get("ippools", pool) or {}).get("status") or {})


def agent_image(env: Env, pool: str) -> str | None:
    """The image the pool's status.agentPodRef records."""
    return (pool_status(env, pool).get("agentPodRef") or {}).get("image")


def pool_events(env: Env, pool: str, reason: str) -> list[Any]:
    """core/v1 Events about ippool `pool` with `reason`."""
    events = env.core.list_namespaced_event(
        env.ns, field_selector=f"reason={reason},involvedObject.name={pool}"
    )
    return list(events.items)


def wait_cache_ready(env: Env, pool: str = "net-48") -> None:
    wait_for(
        lambda: (env.condition("ippools", pool, "CacheReady") or {}).get("status") == "True",
        15,
        f"ippool {pool} CacheReady",
    )


# -- (a) restart recovery ------------------------------------------------------------------------


def test_restart_rebuilds_from_vmnetcfgs_not_from_a_corrupted_pool_status(
    cluster: Cluster, env: Env, agent_namespace: str, tmp_path: Path
) -> None:
    env.nad()
    env.pool(ipv4Config=IPV4)
    args = controller_args(cluster, agent_namespace)
    vms = {f"vm-{n}": f"02:00:00:00:0a:{n:02x}" for n in range(4)}
    with running_controller(args, tmp_path / "first.log") as first:
        wait_cache_ready(env)
        for name, mac in vms.items():
            env.vm(name, mac)
        held = wait_for(allocated_all(env, set(vms)), 15, "every VM allocated")
        assert {name: mac for name, (mac, _) in held.items()} == vms
        expected = {**MARKED, **{ip: mac for mac, ip in held.values()}}
        wait_for(lambda: env.allocated() == expected, 15, "the pool status to list them")
    clean(first)

    # while no controller runs: vm-2's vmnetcfg loses its status (as after a crash between
    # the pool's status write and its own); in the pool status, vm-0's entry goes, vm-1's
    # address is given to another MAC, and a MAC no vmnetcfg has gets an address
    env.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, env.ns, VMNETCFGS, "vm-2", {"status": None}
    )
    assert allocations(env).keys() == {"vm-0", "vm-1", "vm-3"}
    untouched = ("vm-0", "vm-1", "vm-3")
    versions = {
        name: (env.get(VMNETCFGS, name) or {})["metadata"]["resourceVersion"] for name in untouched
    }
    victim_mac, victim_ip = held["vm-0"]
    claimed_mac, claimed_ip = held["vm-1"]
    impostor = "02:00:00:00:0b:01"
    taken = set(expected)
    orphan_ip = next(f"192.168.48.{n}" for n in range(83, 100) if f"192.168.48.{n}" not in taken)
    orphan_mac = "02:00:00:00:0b:ff"
    env.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        env.ns,
        "ippools",
        "net-48",
        {
            "status": {
                "ipv4": {
                    "allocated": {victim_ip: None, claimed_ip: impostor, orphan_ip: orphan_mac}
                }
            }
        },
    )
    corrupted = env.allocated()
    assert victim_ip not in corrupted
    assert corrupted[orphan_ip] == orphan_mac
    assert corrupted[claimed_ip] == impostor

    with running_controller(args, tmp_path / "second.log") as second:
        wait_for(
            lambda: env.allocated().get(victim_ip) == victim_mac,
            15,
            f"{victim_ip} restored to the pool status from vm-0's vmnetcfg",
        )
        wait_for(
            lambda: env.allocated().get(claimed_ip) == claimed_mac,
            15,
            f"{claimed_ip} given back to vm-1's MAC in the pool status",
        )
        # the conflicting claim is reported, not resolved silently
        conflicts = wait_for(
            lambda: pool_events(env, "net-48", "AllocationConflict"),
            15,
            "an AllocationConflict event on the pool",
        )
        conflicts = wait_for(
            lambda: (
                (found := pool_events(env, "net-48", "AllocationConflict"))
                and len(found) >= 2
                and found
            ),
            15,
            "the impostor and the orphan reported",
        )
        assert {c.type for c in conflicts} == {"Warning"}
        assert any(claimed_ip in c.message and impostor in c.message for c in conflicts)
        assert any(orphan_ip in c.message and "released" in c.message for c in conflicts)
        # and in the pool's status
        reported = env.condition("ippools", "net-48", "Conflicts") or {}
        assert reported["status"] == "True"
        assert reported["reason"] == "RestoreConflict"
        assert reported["message"].startswith("2 at rebuild: ")
        assert orphan_ip in reported["message"]
        # every vmnetcfg keeps its address: vm-2 gets its own back from the pool status,
        # the others are not even rewritten
        wait_for(
            lambda: allocations(env).get("vm-2") == held["vm-2"],
            15,
            "vm-2's address back from the pool status",
        )
        assert allocations(env) == held
        assert {
            name: (env.get(VMNETCFGS, name) or {})["metadata"]["resourceVersion"]
            for name in untouched
        } == versions

        # a VM created after the restart never gets an address a vmnetcfg holds
        env.vm("vm-new", "02:00:00:00:0a:ff")
        after = wait_for(allocated_all(env, {"vm-new"}), 15, "the new VM allocated")
        new_ip = after["vm-new"][1]
        assert new_ip not in {ip for _, ip in held.values()}
        assert new_ip not in MARKED

        # the pool status is the union of the vmnetcfgs' allocations, plus the marks: the
        # orphan (a MAC no vmnetcfg has) does not keep its address
        union = {**MARKED, **{ip: mac for mac, ip in allocations(env).values()}}
        with contextlib.suppress(AssertionError):
            wait_for(lambda: env.allocated() == union, 5, "the pool status to settle")
        assert env.allocated() == union, f"orphan {orphan_ip}={orphan_mac} kept"
        ipv4 = pool_status(env)["ipv4"]
        assert ipv4["used"] == len(vms) + 1
    clean(second)


# -- (b) leader election -------------------------------------------------------------------------


def lease_holder(api: ApiClient, namespace: str) -> str:
    try:
        lease = CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str((lease.spec and lease.spec.holder_identity) or "")


def test_one_leader_reconciles_and_the_standby_takes_over(
    cluster: Cluster,
    api_client: ApiClient,
    env: Env,
    agent_namespace: str,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    env.nad()
    env.pool(ipv4Config=IPV4)

    def args(name: str) -> list[str]:
        return controller_args(cluster, agent_namespace, name=name, lease_namespace=lease_namespace)

    with contextlib.ExitStack() as stack:
        leader = stack.enter_context(running_controller(args("ctl-a"), tmp_path / "a.log"))
        wait_for(
            lambda: lease_holder(api_client, lease_namespace).startswith("ctl-a-"),
            15,
            "ctl-a to hold the lease",
        )
        standby = stack.enter_context(running_controller(args("ctl-b"), tmp_path / "b.log"))
        assert standby.ready(), "a standby answers /readyz with 200"
        env.vm("vm-1", "02:00:00:00:0c:01")
        first = wait_for(allocated_all(env, {"vm-1"}), 15, "vm-1 allocated by the leader")
        wait_for(
            lambda: env.allocated().get(first["vm-1"][1]) == "02:00:00:00:0c:01",
            15,
            "the pool status to list vm-1",
        )
        assert env.allocated() == {**MARKED, first["vm-1"][1]: "02:00:00:00:0c:01"}
        listing = env.custom.list_namespaced_custom_object(GROUP, VERSION, env.ns, VMNETCFGS)
        names = [item["metadata"]["name"] for item in cast(dict[str, Any], listing)["items"]]
        assert names == ["vm-1"], "exactly one vmnetcfg"
        assert lease_holder(api_client, lease_namespace).startswith("ctl-a-")
        assert "ipam rebuilt" in leader.output()
        assert "became leader" not in standby.output()
        assert "ipam rebuilt" not in standby.output(), "the standby must not reconcile"

        leader.process.send_signal(signal.SIGTERM)
        leader.process.wait(timeout=15)
        assert leader.process.returncode == 0, leader.output()
        exited = time.monotonic()
        wait_for(
            lambda: lease_holder(api_client, lease_namespace).startswith("ctl-b-"),
            LEASE_SECONDS + RETRY_SECONDS + 3,
            "the standby to take the lease over",
        )
        assert time.monotonic() - exited <= LEASE_SECONDS + RETRY_SECONDS + 3
        wait_for(standby.ready, 15, "the new leader to be ready")

        # the new leader rebuilt the IPAM: it keeps vm-1's address and hands out another
        env.vm("vm-2", "02:00:00:00:0c:02")
        second = wait_for(allocated_all(env, {"vm-2"}), 15, "vm-2 allocated by the new leader")
        assert second["vm-1"] == first["vm-1"]
        assert second["vm-2"][1] != first["vm-1"][1]
        expected = {**MARKED, **{ip: mac for mac, ip in second.values()}}
        wait_for(lambda: env.allocated() == expected, 15, "the pool status to list both")
        assert "became leader" in standby.output()
    clean(leader)
    clean(standby)


# -- (c) agent image roll-out -------------------------------------------------------------------


def test_new_image_rolls_the_agent_unless_the_pool_holds_it(
    cluster: Cluster, env: Env, agent_namespace: str, tmp_path: Path
) -> None:
    env.nad("net-a")
    env.nad("net-b")
    env.pool("roll", network="net-a", ipv4Config=IPV4)
    env.pool("held", network="net-b", ipv4Config=IPV4)
    with running_controller(
        controller_args(cluster, agent_namespace, image=IMAGE_A), tmp_path / "a.log"
    ) as old:
        for pool in ("roll", "held"):
            wait_for(
                lambda p=pool: agent_image(env, p) == IMAGE_A,  # type: ignore[misc]
                15,
                f"ippool {pool}'s agent pod with image A",
            )
        pods = {pool: env.agent_pod(pool) for pool in ("roll", "held")}
        for pool, pod in pods.items():
            assert pod is not None, pool
            assert pod["spec"]["containers"][0]["image"] == IMAGE_A
        env.patch("ippools", "held", {"metadata": {"annotations": {HOLD: "true"}}})
    clean(old)
    uid = {pool: (pod or {})["metadata"]["uid"] for pool, pod in pods.items()}

    with running_controller(
        controller_args(cluster, agent_namespace, image=IMAGE_B), tmp_path / "b.log"
    ) as new:
        rolled = wait_for(
            lambda: (
                (pod := env.agent_pod("roll")) is not None
                and pod["metadata"]["uid"] != uid["roll"]
                and pod
            ),
            15,
            "a new agent pod for ippool roll",
        )
        assert rolled["spec"]["containers"][0]["image"] == IMAGE_B
        assert rolled["spec"]["initContainers"][0]["image"] == IMAGE_B
        wait_for(
            lambda: (
                pool_status(env, "roll").get("agentPodRef")
                == {
                    "namespace": agent_namespace,
                    "name": rolled["metadata"]["name"],
                    "image": IMAGE_B,
                    "uid": rolled["metadata"]["uid"],
                }
            ),
            15,
            "agentPodRef to name the new pod",
        )
        events = wait_for(
            lambda: pool_events(env, "roll", "AgentRollout"), 15, "an AgentRollout event"
        )
        assert len(events) == 1
        assert events[0].type == "Normal"
        assert events[0].involved_object.kind == "IPPool"
        assert IMAGE_A in events[0].message
        assert IMAGE_B in events[0].message

        # held: once the new controller has reconciled it (its metrics name the pool),
        # the pod is still the old one, with image A
        wait_for(
            lambda: f'ippool="{env.ns}/held"' in str(new.get("/metrics")[1]),
            15,
            "the new controller to reconcile ippool held",
        )
        held = env.agent_pod("held")
        assert held is not None
        assert held["metadata"]["uid"] == uid["held"]
        assert held["spec"]["containers"][0]["image"] == IMAGE_A
        assert agent_image(env, "held") == IMAGE_A
        assert pool_events(env, "held", "AgentRollout") == []

        # releasing the hold rolls it too
        env.patch("ippools", "held", {"metadata": {"annotations": {HOLD: None}}})
        released = wait_for(
            lambda: (
                (pod := env.agent_pod("held")) is not None
                and pod["metadata"]["uid"] != uid["held"]
                and pod
            ),
            15,
            "a new agent pod for ippool held once the hold is released",
        )
        assert released["spec"]["containers"][0]["image"] == IMAGE_B
    clean(new)


# -- (d) killed in the middle of a burst -------------------------------------------------------


def test_controller_killed_mid_burst_of_200_vms_loses_nothing(
    cluster: Cluster, env: Env, agent_namespace: str, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env.nad()
    config = {
        "serverIP": "10.30.0.1",
        "cidr": "10.30.0.0/23",
        "pool": {"start": "10.30.0.10", "end": "10.30.1.250"},
    }
    env.pool(ipv4Config=config)
    names = {f"burst-{n}" for n in range(200)}
    args = controller_args(cluster, agent_namespace)
    killed = -signal.SIGKILL
    with running_controller(
        [*args, "--no-agent"], tmp_path / "first.log", expect_exit=killed
    ) as first:
        wait_cache_ready(env)
        with ThreadPoolExecutor(16) as pool:
            futures = [
                pool.submit(env.vm, name, f"02:00:00:01:{n >> 8:02x}:{n & 0xFF:02x}")
                for n, name in enumerate(sorted(names))
            ]
            # kill -9 once some, not all, of the burst is allocated
            wait_for(lambda: len(allocations(env)) >= 20, 30, "the burst to be under way")
            first.process.send_signal(signal.SIGKILL)
            for future in futures:
                future.result()
    assert len(allocations(env)) < 200, "the kill came too late to prove anything"
    with running_controller([*args, "--no-agent"], tmp_path / "second.log") as second:
        held = wait_for(allocated_all(env, names), 60, "every vmnetcfg Allocated after the restart")
        addresses = [address for _, address in held.values()]
        assert len(addresses) == len(set(addresses)), "an address is shared"
        union = {address: mac for mac, address in held.values()}

        def pool_matches() -> bool:
            allocated = dict(pool_status(env).get("ipv4", {}).get("allocated") or {})
            return allocated == union

        wait_for(pool_matches, 30, "the IPPool status to equal the union of vmnetcfg statuses")
        clean(second)


def test_no_agent_mode_allocates_without_agent_pods(
    cluster: Cluster, env: Env, agent_namespace: str, tmp_path: Path
) -> None:
    env.nad()
    env.pool()
    args = [*controller_args(cluster, agent_namespace), "--no-agent"]
    with running_controller(args, tmp_path / "no-agent.log") as process:
        wait_cache_ready(env)
        for kind in ("Registered", "AgentReady"):
            wait_for(
                lambda k=kind: (
                    (env.condition("ippools", "net-48", k) or {}).get("status") == "True"
                ),
                15,
                f"{kind} in --no-agent mode",
            )
        assert env.agent_pod() is None
        env.vm("vm-na", "02:00:00:00:00:61")
        wait_for(lambda: allocations(env).get("vm-na"), 15, "an allocation without agents")
        clean(process)

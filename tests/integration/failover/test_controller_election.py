"""Two controllers, one Lease, against the real test API server: a controller whose wall
clock is skewed (run under libfaketime, the whole process: TLS, kopf, the elector) never
takes the Lease from a healthy leader, a 200-VM burst then gets no address twice; a leader
cut off from the API server (its requests hang) stops leading before the standby may take
over, and exits; the standby then carries on from the durable state."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, CoordinationV1Api

from tests.agentproc import running_controller, wait_for
from tests.cluster import Cluster
from tests.integration.failover.test_controller_recovery import (
    LEASE,
    allocated_all,
    clean,
    controller_args,
    lease_holder,
    pool_status,
    wait_cache_ready,
)
from tests.integration.test_controller import Env
from tests.netproxy import proxied_kubeconfig

pytestmark = pytest.mark.cluster

LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)
needs_faketime = pytest.mark.skipif(
    LIBFAKETIME is None, reason="libfaketime (Debian package faketime) is not installed"
)


def skewed(offset: str) -> dict[str, str]:
    """The environment that runs a process with its clocks `offset` from ours (preloaded
    into the process itself, so that signals reach it)."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset}


BURST_POOL = {
    "serverIP": "10.31.0.1",
    "cidr": "10.31.0.0/23",
    "pool": {"start": "10.31.0.10", "end": "10.31.1.250"},
}
# short timings, so that a failover test takes seconds: lease 6, deadline 4, retry 1
FAST = [
    "--leader-election-lease-duration", "6",
    "--leader-election-renew-deadline", "4",
    "--leader-election-retry-period", "1",
]  # fmt: skip


def transitions(api: ApiClient, namespace: str) -> int:
    lease = CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    return int(lease.spec.lease_transitions or 0)


def burst(env: Env, count: int, prefix: str, first_mac: int = 0) -> set[str]:
    """`count` VMs created at once from 16 threads, MACs numbered from `first_mac`."""
    names = {f"{prefix}-{n}" for n in range(count)}
    with ThreadPoolExecutor(16) as pool:
        for n, name in enumerate(sorted(names), start=first_mac):
            pool.submit(env.vm, name, f"02:00:00:02:{n >> 8:02x}:{n & 0xFF:02x}")
    return names


def assert_unique_and_recorded(env: Env, names: set[str]) -> None:
    held = wait_for(allocated_all(env, names), 90, "every VM of the burst Allocated")
    addresses = [address for _, address in held.values()]
    assert len(addresses) == len(set(addresses)), "an address was handed out twice"
    union = {address: mac for mac, address in held.values()}
    wait_for(
        lambda: dict(pool_status(env).get("ipv4", {}).get("allocated") or {}) == union,
        30,
        "the IPPool status to equal the union of the vmnetcfg statuses",
    )


@needs_faketime
@pytest.mark.parametrize(
    ("leader_skew", "standby_skew"),
    [("+0s", "+30s"), ("+0s", "-30s"), ("+30s", "-30s")],
)
def test_a_skewed_standby_never_takes_a_healthy_lease(
    cluster: Cluster,
    api_client: ApiClient,
    env: Env,
    agent_namespace: str,
    lease_namespace: str,
    tmp_path: Path,
    leader_skew: str,
    standby_skew: str,
) -> None:
    env.nad()
    env.pool(ipv4Config=BURST_POOL)

    def args(name: str) -> list[str]:
        base = controller_args(cluster, agent_namespace, name=name, lease_namespace=lease_namespace)
        return [*base, "--no-agent"]

    with contextlib.ExitStack() as stack:
        leader = stack.enter_context(
            running_controller(args("ctl-a"), tmp_path / "a.log", env=skewed(leader_skew))
        )
        wait_for(
            lambda: lease_holder(api_client, lease_namespace).startswith("ctl-a-"),
            15,
            "ctl-a to hold the lease",
        )
        before = transitions(api_client, lease_namespace)
        standby = stack.enter_context(
            running_controller(args("ctl-b"), tmp_path / "b.log", env=skewed(standby_skew))
        )
        wait_cache_ready(env)
        names = burst(env, 200, "skew")
        assert_unique_and_recorded(env, names)
        # the standby has been trying all along (every 2 s or so, for the whole burst)
        assert "became leader" not in standby.output(), standby.output()
        assert "ipam rebuilt" not in standby.output(), "the standby must not reconcile"
        assert lease_holder(api_client, lease_namespace).startswith("ctl-a-")
        assert transitions(api_client, lease_namespace) == before
    clean(leader)
    clean(standby)


def test_a_leader_cut_off_stops_before_the_standby_takes_over(
    cluster: Cluster,
    api_client: ApiClient,
    env: Env,
    agent_namespace: str,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    env.nad()
    env.pool(ipv4Config=BURST_POOL)

    def args(name: str, kubeconfig: Path) -> list[str]:
        base = controller_args(cluster, agent_namespace, name=name, lease_namespace=lease_namespace)
        base[base.index("--kubeconfig") + 1] = str(kubeconfig)
        return [*base, "--no-agent", *FAST]

    with contextlib.ExitStack() as stack:
        kubeconfig, proxy = stack.enter_context(
            proxied_kubeconfig(Path(cluster.kubeconfig), tmp_path)
        )
        leader = stack.enter_context(
            running_controller(args("ctl-a", kubeconfig), tmp_path / "a.log", expect_exit=1)
        )
        wait_for(
            lambda: lease_holder(api_client, lease_namespace).startswith("ctl-a-"),
            15,
            "ctl-a to hold the lease",
        )
        standby = stack.enter_context(
            running_controller(args("ctl-b", Path(cluster.kubeconfig)), tmp_path / "b.log")
        )
        wait_cache_ready(env)
        first = burst(env, 20, "before")
        wait_for(allocated_all(env, first), 30, "the first VMs allocated by the leader")

        proxy.freeze()  # every request of the leader now hangs, none fails
        frozen = time.monotonic()
        stopped: list[float] = []
        taken: list[float] = []

        def progress() -> bool:
            now = time.monotonic()
            if not stopped and "stopped leading" in leader.output():
                stopped.append(now)
            if not taken and lease_holder(api_client, lease_namespace).startswith("ctl-b-"):
                taken.append(now)
            return bool(stopped and taken)

        wait_for(progress, 30, "the leader to stop and the standby to take over", interval=0.02)
        assert stopped[0] < taken[0], (stopped[0] - frozen, taken[0] - frozen)
        assert stopped[0] - frozen <= 4 + 1.0  # within the renew deadline (and log polling)
        assert taken[0] - stopped[0] >= 1.0  # lease 6 - deadline 4, less polling and latency
        leader.process.wait(timeout=15)  # it exits when it stops leading (upstream does too)
        assert leader.process.returncode == 1

        second = burst(env, 20, "after", first_mac=100)
        assert_unique_and_recorded(env, first | second)
        assert "became leader" in standby.output()
    clean(standby)
    assert "Traceback" not in leader.output(), leader.output()

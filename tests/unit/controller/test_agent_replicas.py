"""`--agent-replicas N` (N > 1) over the in-memory API server: N agent pods per IPPool and a
PodDisruptionBudget, scaled up and down, rolled to a new image one replica at a time (the
ones not Ready first, then the standbys, the Lease's holder last, never fewer than N - 1
Ready), and a status that follows the holder of the pool's Lease (the agents write it; the
tests play them, and the kubelet, through the fake)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.controller.fakeapi import LEASES, PDBS, Body, Call, FakeKube
from tests.unit.controller.test_reconcilers import (  # noqa: F401 (an autouse fixture)
    AGENTS,
    IMAGE,
    NS,
    condition,
    events,
    nad_body,
    new_controller,
    no_reconcile_errors,
    obj,
    pool_body,
    settle,
    start_watches,
)
from vmdhcp.api.constants import ANNOTATION_HOLD_AGENT_UPGRADE, agent_lease_name
from vmdhcp.controller import replicas
from vmdhcp.controller.context import PODS
from vmdhcp.controller.engine import IPPOOLS, NADS, Controller
from vmdhcp.controller.manifests import LABEL_AGENT_REPLICA, pod_image, pod_is_ready

IMAGE_2 = "registry.example/agent:v2"
SINGLE = f"{NS}-net-48-agent"
BASE = SINGLE  # short names: the replicas are <upstream's name>-<i>
LEASE = agent_lease_name(NS, "net-48")
POOL = (NS, "net-48")


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


def replica(index: int) -> str:
    return f"{BASE}-{index}"


def agent_pods(fake: FakeKube) -> dict[str, Body]:
    return {
        name: pod for (namespace, name), pod in fake.objects[PODS].items() if namespace == AGENTS
    }


def ready_count(fake: FakeKube) -> int:
    return sum(pod_is_ready(pod) for pod in agent_pods(fake).values())


def make_ready(fake: FakeKube, *names: str, ready: bool = True) -> None:
    """The kubelet's part: the agent's readiness probe passes (or fails)."""
    status = "True" if ready else "False"
    for name in names:
        fake.user_patch_status(
            PODS, (AGENTS, name), {"conditions": [{"type": "Ready", "status": status}]}
        )


def hold_lease(fake: FakeKube, holder: str) -> None:
    """The agents' part: the elected one holds the pool's Lease ("" once released)."""
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 15}
    if fake.get(LEASES, (AGENTS, LEASE)) is None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": AGENTS}, "spec": spec}  # fmt: skip
        fake.user_create(LEASES, body)
    else:
        fake.user_patch(LEASES, (AGENTS, LEASE), {"spec": spec})


def agent_ready(fake: FakeKube) -> tuple[str, str, str]:
    found = condition(obj(fake, IPPOOLS, "net-48"), "AgentReady")
    return found["status"], found["reason"], found["message"]


def pod_ref(fake: FakeKube) -> dict[str, Any]:
    ref: dict[str, Any] = obj(fake, IPPOOLS, "net-48")["status"]["agentPodRef"]
    return ref


async def start(
    fake: FakeKube, replicas: int, image: str = IMAGE, *, first: bool = False
) -> Controller:
    """A controller with `replicas` per pool starts (the first: the NAD and pool appear)."""
    fake.take_changes()
    controller = new_controller(fake, replicas=replicas, image=image)
    if first:
        fake.user_create(NADS, nad_body())
        fake.user_create(IPPOOLS, pool_body())
    await controller.rebuild()
    await start_watches(controller, fake)
    return controller


async def poll(controller: Controller, fake: FakeKube) -> None:
    """The periodic reconcile of a pool with replicas (POLL_SECONDS), now."""
    controller.queue.add((IPPOOLS, *POOL))
    await settle(controller, fake)


# -- replicas and their PodDisruptionBudget ----------------------------------------------


async def test_a_pool_gets_n_replicas_a_pdb_and_reports_that_no_one_serves_yet(
    fake: FakeKube,
) -> None:
    await start(fake, 2, first=True)

    pods = agent_pods(fake)
    assert sorted(pods) == [replica(0), replica(1)]
    for index in (0, 1):
        pod = pods[replica(index)]
        assert pod["metadata"]["labels"][LABEL_AGENT_REPLICA] == str(index)
        assert "--leader-election" in pod["spec"]["containers"][0]["args"]
        assert "initContainers" not in pod["spec"]
    pdb = obj(fake, PDBS, BASE, namespace=AGENTS)
    selector = {
        "network.harvesterhci.io/vm-dhcp-controller": "agent",
        "network.harvesterhci.io/ippool-namespace": NS,
        "network.harvesterhci.io/ippool-name": "net-48",
    }
    assert pdb["spec"] == {
        "selector": {"matchLabels": selector},
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert pdb["metadata"]["labels"] == selector

    pool = obj(fake, IPPOOLS, "net-48")
    assert condition(pool, "Registered")["status"] == "True"
    assert agent_ready(fake) == (
        "False",
        "Error",
        f"no agent pod holds lease {AGENTS}/{LEASE} yet; 0 of 2 agent pods ready",
    )
    # no holder yet: replica 0 stands for the pool
    assert pod_ref(fake) == {"namespace": AGENTS, "name": replica(0), "image": IMAGE,
                             "uid": pods[replica(0)]["metadata"]["uid"]}  # fmt: skip


async def test_agent_pod_ref_and_agent_ready_follow_the_lease_holder(fake: FakeKube) -> None:
    controller = await start(fake, 3, first=True)
    make_ready(fake, replica(0), replica(1), replica(2))
    hold_lease(fake, replica(1))
    await poll(controller, fake)
    assert pod_ref(fake)["name"] == replica(1)
    assert agent_ready(fake) == (
        "True",
        "AgentPodReady",
        f"agent pod {replica(1)} serves; 2 of 2 standbys ready",
    )

    make_ready(fake, replica(2), ready=False)  # a pod event: reconciled at once
    await settle(controller, fake)
    assert agent_ready(fake)[2] == f"agent pod {replica(1)} serves; 1 of 2 standbys ready"

    # failover: the Lease passes to replica 0, which is not Ready yet
    make_ready(fake, replica(0), ready=False)
    hold_lease(fake, replica(0))
    await poll(controller, fake)
    assert pod_ref(fake)["name"] == replica(0)
    assert agent_ready(fake) == (
        "False",
        "Error",
        f"agent pod {replica(0)} holds lease {AGENTS}/{LEASE} but is not ready; "
        "1 of 3 agent pods ready",
    )

    # a holder that is no agent pod of the pool (any more)
    hold_lease(fake, "someone-else")
    await poll(controller, fake)
    assert agent_ready(fake)[2] == (
        f"agent pod someone-else holds lease {AGENTS}/{LEASE} but is gone; 1 of 3 agent pods ready"
    )
    assert pod_ref(fake)["name"] == replica(0)  # the lowest replica that is not going

    hold_lease(fake, "")  # released
    await poll(controller, fake)
    assert agent_ready(fake)[2] == (
        f"no agent pod holds lease {AGENTS}/{LEASE} yet; 1 of 3 agent pods ready"
    )


async def test_agent_failover_events_name_a_change_of_holder_not_the_first_election(
    fake: FakeKube,
) -> None:
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    await poll(controller, fake)  # the status shows replica 0 while no one holds the Lease
    hold_lease(fake, replica(1))  # the first election: no failover
    await poll(controller, fake)
    await poll(controller, fake)
    assert events(fake, "AgentFailover") == []
    hold_lease(fake, "")  # a handover: released on SIGTERM, then taken
    await poll(controller, fake)
    hold_lease(fake, replica(0))
    await poll(controller, fake)
    await poll(controller, fake)
    assert [e["message"] for e in events(fake, "AgentFailover")] == [
        f"agent pod {replica(0)} serves (was {replica(1)})"
    ]


async def test_a_lease_change_is_noticed_without_any_pod_event(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader cut off from the API server stays Ready, and the Lease passes to a standby:
    nothing but the periodic reconcile of the pool can notice."""
    monkeypatch.setattr(replicas, "POLL_SECONDS", 0.02)
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(0))
    await settle(controller, fake, until=lambda: pod_ref(fake)["name"] == replica(0))
    hold_lease(fake, replica(1))
    await settle(controller, fake, until=lambda: pod_ref(fake)["name"] == replica(1))
    assert agent_ready(fake)[0] == "True"


async def test_scaling_up_and_down_and_back_to_one_pod(fake: FakeKube) -> None:
    await start(fake, 2, first=True)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]
    pdb_uid = obj(fake, PDBS, BASE, namespace=AGENTS)["metadata"]["uid"]

    await start(fake, 3)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1), replica(2)]
    # the budget follows: all but one available (bare pods: an integer minAvailable)
    pdb = obj(fake, PDBS, BASE, namespace=AGENTS)
    assert (pdb["metadata"]["uid"] != pdb_uid, pdb["spec"]["minAvailable"]) == (True, 2)

    gone = obj(fake, PODS, replica(2), namespace=AGENTS)["metadata"]["uid"]
    await start(fake, 2)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]
    assert Call("delete", PODS, (AGENTS, replica(2)), {"preconditions": {"uid": gone}}) in (
        fake.calls
    )

    # one: upstream's single pod (with its ip-setter), and no PodDisruptionBudget
    await start(fake, 1)
    assert sorted(agent_pods(fake)) == [SINGLE]
    assert "initContainers" in obj(fake, PODS, SINGLE, namespace=AGENTS)["spec"]
    assert fake.get(PDBS, (AGENTS, BASE)) is None
    assert pod_ref(fake)["name"] == SINGLE

    # and back: the single pod goes, the replicas and their budget come
    await start(fake, 2)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]
    assert fake.get(PDBS, (AGENTS, BASE)) is not None


async def test_a_new_shape_waits_until_the_old_one_is_gone(fake: FakeKube) -> None:
    """The single pod holds the server address without an election: replicas created
    while it is still stopping could serve beside it."""
    await start(fake, 1, first=True)
    make_ready(fake, SINGLE)
    # its kubelet has not confirmed the deletion yet (a finalizer stands in for that)
    fake.objects[PODS][(AGENTS, SINGLE)]["metadata"]["finalizers"] = ["nodesim/kubelet"]
    controller = await start(fake, 2)
    assert sorted(agent_pods(fake)) == [SINGLE]
    assert agent_ready(fake)[2] == f"waiting for agent pod {SINGLE} of the previous shape to go"
    fake.objects[PODS].pop((AGENTS, SINGLE))
    fake.changes.append(("DELETED", PODS, {"metadata": {"name": SINGLE, "namespace": AGENTS}}))
    await poll(controller, fake)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]


async def test_one_replica_makes_no_pdb_or_lease_call(fake: FakeKube) -> None:
    controller = await start(fake, 1, first=True)
    make_ready(fake, SINGLE)
    await poll(controller, fake)
    assert agent_ready(fake) == ("True", "AgentPodReady", "")
    assert not [c for c in fake.calls if c.kind in (PDBS, LEASES)]
    assert not controller.queue._timers  # no periodic reconcile either


async def test_a_paused_or_deleted_pool_loses_its_replicas_and_pdb(fake: FakeKube) -> None:
    controller = await start(fake, 2, first=True)
    fake.user_patch(IPPOOLS, POOL, {"spec": {"paused": True}})
    await settle(controller, fake)
    assert agent_pods(fake) == {}
    assert fake.get(PDBS, (AGENTS, BASE)) is None
    assert "agentPodRef" not in obj(fake, IPPOOLS, "net-48")["status"]

    fake.user_patch(IPPOOLS, POOL, {"spec": {"paused": False}})
    await settle(controller, fake)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]
    assert fake.get(PDBS, (AGENTS, BASE)) is not None

    fake.user_delete(IPPOOLS, POOL)
    await settle(controller, fake)
    assert fake.get(IPPOOLS, POOL) is None
    assert agent_pods(fake) == {}
    assert fake.get(PDBS, (AGENTS, BASE)) is None


# -- rolling out a new agent image -------------------------------------------------------


async def roll_out(controller: Controller, fake: FakeKube, replicas: int, image: str) -> None:
    """Play the kubelet and the agents through a roll-out: after each reconcile the new
    pods become Ready, and a standby takes the Lease over when its holder went. Checks
    that no moment had fewer than N - 1 Ready, nor two replicas going at once."""
    for _ in range(3 * replicas):
        seen = len(fake.calls)
        await settle(controller, fake)
        gone = [c for c in fake.calls[seen:] if c.verb == "delete" and c.kind == PODS]
        assert len(gone) <= 1, gone
        assert ready_count(fake) >= replicas - 1
        pods = agent_pods(fake)
        if all(pod_image(pod) == image and pod_is_ready(pod) for pod in pods.values()):
            return
        make_ready(fake, *[n for n, p in pods.items() if pod_image(p) == image])
        lease = fake.get(LEASES, (AGENTS, LEASE))
        if lease is not None and lease["spec"]["holderIdentity"] not in pods:
            hold_lease(fake, sorted(pods)[0])
    raise AssertionError("the roll-out did not finish")


def deleted_pods(fake: FakeKube, since: int = 0) -> list[str]:
    return [c.ref[1] for c in fake.calls[since:] if c.verb == "delete" and c.kind == PODS]


async def test_a_new_image_rolls_the_standbys_first_and_the_leader_last(
    fake: FakeKube,
) -> None:
    controller = await start(fake, 3, first=True)
    make_ready(fake, replica(0), replica(1), replica(2))
    hold_lease(fake, replica(0))
    await poll(controller, fake)

    seen = len(fake.calls)
    controller = await start(fake, 3, IMAGE_2)
    assert ready_count(fake) == 2  # the first standby went at once
    await roll_out(controller, fake, 3, IMAGE_2)
    assert deleted_pods(fake, seen) == [replica(1), replica(2), replica(0)]
    assert len(events(fake, "AgentRollout")) == 3
    assert "(the serving agent)" in events(fake, "AgentRollout")[-1]["message"]
    assert pod_ref(fake)["image"] == IMAGE_2
    assert agent_ready(fake)[0] == "True"


async def test_a_roll_out_waits_while_another_replica_is_not_ready(fake: FakeKube) -> None:
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(1))
    await poll(controller, fake)
    make_ready(fake, replica(1), ready=False)  # the leader is not Ready

    controller = await start(fake, 2, IMAGE_2)
    # replica 1 (not Ready) goes first: replacing it takes nothing away
    assert deleted_pods(fake) == [replica(1)]
    # then nothing while replica 1's replacement is not Ready: replica 0 serves alone
    await poll(controller, fake)
    assert deleted_pods(fake) == [replica(1)]
    assert pod_image(obj(fake, PODS, replica(0), namespace=AGENTS)) == IMAGE

    make_ready(fake, replica(1))
    await settle(controller, fake)
    assert deleted_pods(fake) == [replica(1), replica(0)]


async def test_a_broken_image_is_replaced_even_when_no_replica_is_ready(fake: FakeKube) -> None:
    await start(fake, 2, first=True)  # never Ready, no holder
    controller = await start(fake, 2, IMAGE_2)
    await poll(controller, fake)
    assert deleted_pods(fake) == [replica(0), replica(1)]
    assert {pod_image(p) for p in agent_pods(fake).values()} == {IMAGE_2}


async def test_the_hold_annotation_holds_a_roll_out(fake: FakeKube) -> None:
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(0))
    annotations = {ANNOTATION_HOLD_AGENT_UPGRADE: "true"}
    fake.user_patch(IPPOOLS, POOL, {"metadata": {"annotations": annotations}})
    await settle(controller, fake)

    controller = await start(fake, 2, IMAGE_2)
    await poll(controller, fake)
    assert not [c for c in fake.calls if c.verb == "delete"]
    assert {pod_image(p) for p in agent_pods(fake).values()} == {IMAGE}
    assert pod_ref(fake)["image"] == IMAGE


async def test_a_roll_out_confirms_its_choice_on_fresh_reads(fake: FakeKube) -> None:
    """A drain evicted the standby a moment ago and the watch has not shown it yet: the
    serving agent, the last to roll, must not go too (the budget does not guard our own
    deletes)."""
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(0))
    annotations = {ANNOTATION_HOLD_AGENT_UPGRADE: "true"}
    fake.user_patch(IPPOOLS, POOL, {"metadata": {"annotations": annotations}})
    fake.objects[PODS][(AGENTS, replica(1))]["spec"]["containers"][0]["image"] = IMAGE_2
    controller = await start(fake, 2, IMAGE_2)
    await poll(controller, fake)
    # the eviction, not yet seen by the controller's watch
    fake.objects[PODS][(AGENTS, replica(1))]["metadata"]["deletionTimestamp"] = "now"
    released = {ANNOTATION_HOLD_AGENT_UPGRADE: None}
    fake.user_patch(IPPOOLS, POOL, {"metadata": {"annotations": released}})
    await poll(controller, fake)
    assert not [c for c in fake.calls if c.verb == "delete" and c.ref[1] == replica(0)]


async def test_a_stuck_replica_does_not_hold_a_roll_out_up(fake: FakeKube) -> None:
    controller = await start(fake, 2, first=True)
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.05}
    )
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(1))
    await poll(controller, fake)
    stick(fake, replica(0))  # its node died for good: Terminating for ever
    await settle(controller, fake, until=lambda: replica(2) in agent_pods(fake))
    make_ready(fake, replica(2))
    controller = await start(fake, 2, IMAGE_2)
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.05}
    )
    await settle(controller, fake, until=lambda: any(
        c.verb == "delete" and c.ref[1] == replica(2) for c in fake.calls
    ))  # fmt: skip


# -- healing: a replica that stopped serving is replaced -----------------------------------


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas, "POLL_SECONDS", 0.05)


def stick(fake: FakeKube, name: str) -> None:
    """Its node dies: Kubernetes deletes the pod, which stays Terminating for ever (no
    kubelet confirms it) and not Ready."""
    pod = fake.objects[PODS][(AGENTS, name)]
    # what holds it: no kubelet confirms the deletion (a finalizer stands in for that here)
    pod["metadata"]["finalizers"] = ["nodesim/no-kubelet"]
    fake.user_delete(PODS, (AGENTS, name))
    make_ready(fake, name, ready=False)


async def test_a_replica_stuck_terminating_is_replaced_without_force_and_the_spare_goes_later(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(0))
    await poll(controller, fake)
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.5}
    )
    stick(fake, replica(0))  # the serving agent's node died; the standby takes over
    hold_lease(fake, replica(1))
    await poll(controller, fake)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)], "within the grace: wait"

    await settle(controller, fake, until=lambda: replica(2) in agent_pods(fake))
    assert sorted(agent_pods(fake)) == [replica(0), replica(1), replica(2)]
    assert not any(c.verb == "delete" and c.ref[1] == replica(0) for c in fake.calls)
    assert [e["reason"] for e in events(fake, "AgentReplaced")] == ["AgentReplaced"]
    assert [e["message"] for e in events(fake, "AgentFailover")] == [
        f"agent pod {replica(1)} serves (was {replica(0)})"
    ]
    assert agent_ready(fake)[:2] == ("True", "AgentPodReady")
    assert pod_ref(fake)["name"] == replica(1)

    # the node comes back: the old pod is gone at last, the pool has its two replicas
    fake.objects[PODS].pop((AGENTS, replica(0)))
    fake.changes.append(("DELETED", PODS, {"metadata": {"name": replica(0), "namespace": AGENTS}}))
    make_ready(fake, replica(2))
    await poll(controller, fake)
    assert sorted(agent_pods(fake)) == [replica(1), replica(2)]


async def test_a_stuck_replica_that_recovers_makes_the_spare_go_never_the_holder(
    fake: FakeKube,
) -> None:
    controller = await start(fake, 2, first=True)
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.05}
    )
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(1))
    await poll(controller, fake)
    make_ready(fake, replica(0), ready=False)  # its node NotReady: the pod marked so
    await settle(controller, fake, until=lambda: replica(2) in agent_pods(fake))
    make_ready(fake, replica(0), replica(2))  # the node is back
    await poll(controller, fake)
    pods = agent_pods(fake)
    assert len(pods) == 2
    assert replica(1) in pods  # the holder stays


def node_lost(fake: FakeKube, name: str) -> None:
    """Its node stopped reporting: Kubernetes' node lifecycle turns only the pod's Ready
    condition False; the containers stay as its kubelet last reported them, ready."""
    fake.user_patch_status(
        PODS,
        (AGENTS, name),
        {
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "agent", "ready": True}],
        },
    )


async def test_a_restarted_controller_heals_a_replica_whose_node_died(fake: FakeKube) -> None:
    """The controller's memory of which pods served is gone with it (its node may have died
    with the agent's): the node lifecycle's mark on the pod says it served."""
    first = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(1))
    await poll(first, fake)
    node_lost(fake, replica(0))
    make_ready(fake, replica(1))
    controller = await start(fake, 2)  # a new controller, no memory
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.05}
    )
    await settle(controller, fake, until=lambda: replica(2) in agent_pods(fake))
    assert not any(c.verb == "delete" and c.ref[1] == replica(0) for c in fake.calls)
    assert [e["reason"] for e in events(fake, "AgentReplaced")] == ["AgentReplaced"]


async def test_a_replica_never_ready_yet_is_starting_not_stuck(fake: FakeKube) -> None:
    controller = await start(fake, 2, first=True)
    controller.ctx.config = controller.config = type(controller.config)(
        **{**controller.config.__dict__, "agent_replace_seconds": 0.01}
    )
    await poll(controller, fake)
    await poll(controller, fake)
    assert sorted(agent_pods(fake)) == [replica(0), replica(1)]


async def test_a_lease_its_holder_stopped_renewing_is_not_taken_for_a_serving_agent(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead leader's pod may look Ready for a while (its node's NotReady takes ~40 s):
    the controller judges its Lease on its own clock: a holder that has not renewed for
    its renew deadline (2/3 of the lease) has stopped serving by its own rule."""
    clock = [1000.0]
    monkeypatch.setattr(replicas, "_monotonic", lambda: clock[0])
    controller = await start(fake, 2, first=True)
    make_ready(fake, replica(0), replica(1))
    hold_lease(fake, replica(0))
    await poll(controller, fake)
    assert agent_ready(fake)[0] == "True"
    clock[0] += 9.5  # no renewal for 9.5 s of a 15 s lease (deadline 10 s): still serving
    await poll(controller, fake)
    assert agent_ready(fake)[0] == "True"
    clock[0] += 1.0  # past its deadline: no one serves until a standby takes it
    await poll(controller, fake)
    status, reason, message = agent_ready(fake)
    assert (status, reason) == ("False", "Error")
    assert message.startswith("no agent pod holds lease")
    hold_lease(fake, replica(1))  # the standby takes over
    await poll(controller, fake)
    assert agent_ready(fake)[0] == "True"
    assert pod_ref(fake)["name"] == replica(1)

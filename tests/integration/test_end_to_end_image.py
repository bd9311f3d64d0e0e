"""End to end with the agent image: as tests/integration/test_end_to_end.py, but the node
simulator runs each agent pod as a container of the built agent image (podman, the pod's
network namespace, the user and capabilities of the controller's pod spec), so the agent pod
is tested as the image a kubelet would run. The controller runs from the venv and names the
built image in the pods it creates.

Needs root, the lab's binaries and podman; skipped with the reason otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from tests.agentproc import wait_for
from tests.cluster import Cluster
from tests.containers import Container, ImageError, build_images, podman_runner
from tests.containers import skip_reason as images_skip_reason
from tests.integration.test_end_to_end import System, _try, running_system
from tests.netns.lab import Dhclient, skip_reason

pytestmark = [pytest.mark.cluster, pytest.mark.netns, pytest.mark.timeout(900)]

MAC = "fa:cf:8e:50:82:fc"


@pytest.fixture(scope="module")
def agent_image() -> str:
    reason = skip_reason() or images_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        return build_images().agent  # once per session; podman's cache keeps the layers
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def system(
    agent_image: str, cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> Iterator[System]:
    runner = podman_runner(agent_image)
    with running_system(
        cluster, api_client, namespace, tmp_path, agent_image, "e2e-image", runner
    ) as system:
        yield system


def agent_container(system: System) -> Container:
    pod = system.sim.pod(f"{system.ns}-net-48-agent")
    assert pod is not None
    assert isinstance(pod.proc, Container), pod.proc
    return pod.proc


def test_a_vm_gets_its_address_from_the_agent_container(system: System) -> None:
    wait_for(lambda: system.condition("AgentReady") == "True", 60, "the agent pod to be ready")
    container = agent_container(system)
    assert container.status("Uid").split()[:2] == ["0", "0"]
    system.vm("test-vm", MAC)
    assert wait_for(lambda: system.allocated("test-vm"), 15, "the allocation") == "192.168.48.82"
    client = Dhclient(system.lab.add_client(mac=MAC), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "dhclient to get a lease")
    assert lease.ip == IPv4Address("192.168.48.82")
    assert lease.routers == (IPv4Address("192.168.48.1"),)
    assert lease.dns == (IPv4Address("1.1.1.1"),)
    assert lease.ntp == (IPv4Address("192.168.48.5"),)
    assert lease.server_id == IPv4Address("192.168.48.77")
    assert "not permitted" not in container.output(), container.output()


def test_a_killed_agent_container_is_restarted_and_renews(system: System) -> None:
    wait_for(lambda: system.condition("AgentReady") == "True", 60, "the agent pod to be ready")
    system.vm("vm-kill", "02:00:00:00:48:02")
    wait_for(lambda: system.allocated("vm-kill"), 15, "the allocation")
    client = Dhclient(system.lab.add_client(mac="02:00:00:00:48:02"), timeout=10)
    lease = wait_for(lambda: _try(client), 30, "a first lease")
    client.stop()
    name = f"{system.ns}-net-48-agent"
    killed = system.sim.kill_agent(name)
    pod = system.sim.pod(name)
    assert pod is not None
    wait_for(
        lambda: pod.restarts == 1 and isinstance(pod.proc, Container) and pod.proc.pid != killed,
        30,
        "the agent container to be restarted",
    )
    renewed = wait_for(lambda: _try(client), 30, "a renewal from the new container")
    assert renewed.ip == lease.ip
    wait_for(lambda: system.condition("AgentReady") == "True", 30, "the pod to be ready again")

"""The agent image, run as a kubelet runs an agent pod: in a network namespace on the VM
network, its `ip-setter` init container first, then the agent container, each with exactly
the user and capabilities of the controller's pod spec (the runtime's default capabilities
dropped), serving a real DHCP client; from a pool file, and from the API server under the
agent's minted service-account identity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi

import vmdhcp
from tests.cluster import (
    Cluster,
    api_request,
    create_namespace,
    delete_namespace,
    unique_namespace_name,
)
from tests.containers import (
    FIGURES,
    KUBECONFIG_IN_CONTAINER,
    Container,
    Images,
    Security,
    agent_pod_security,
    container_name,
    run_once,
)
from tests.netns.lab import Lab, Netns, PoolSpec, Udhcpc, skip_reason, wait_for, write_ippool
from tests.nodesim import PortForward, api_port
from vmdhcp.controller.manifests import SET_IP_SCRIPT

pytestmark = [pytest.mark.netns, pytest.mark.timeout(900)]  # the first test builds the images

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
NETWORK = IPv4Network("192.168.48.0/24")
SERVER_IP = IPv4Address("192.168.48.77")
MAC = "fa:cf:8e:50:82:fc"
ADDRESS = IPv4Address("192.168.48.82")
GRACE_SECONDS = 30  # the pod spec sets no terminationGracePeriodSeconds: Kubernetes' default
CAPABILITY_BITS = {"NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13}


def pool_spec() -> PoolSpec:
    return PoolSpec(
        network=NETWORK,
        server_ip=SERVER_IP,
        router=IPv4Address("192.168.48.1"),
        dns=(IPv4Address("1.1.1.1"),),
        domain_name="aibao.moe",
        lease_time=300,
        start=IPv4Address("192.168.48.81"),
        end=IPv4Address("192.168.48.90"),
        allocated={ADDRESS: MAC},
        name="net-48",
    )


@pytest.fixture
def lab(images: Images, tmp_path: Path) -> Iterator[Lab]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with Lab(tmp_path, network=NETWORK, server_ip=SERVER_IP) as opened:
        yield opened


def ip_setter(images: Images, pod: Netns) -> None:
    """The agent pod's init container: the controller's command, user and capabilities."""
    init, _ = agent_pod_security()
    script = SET_IP_SCRIPT.format(server_ip=SERVER_IP, prefix=NETWORK.prefixlen)
    pod.ip("address", "flush", "dev", pod.iface)
    container = Container.start(
        images.agent,
        ["-c", script],
        pod.workdir / "ip-setter.log",
        name=container_name("ip-setter"),
        network=f"ns:/run/netns/{pod.name}",
        security=init,
        entrypoint="/bin/sh",
    )
    assert container.wait(60) == 0, container.output()
    assert pod.addresses() == [IPv4Interface(f"{SERVER_IP}/{NETWORK.prefixlen}")]


def launch_agent(
    images: Images,
    pod: Netns,
    args: list[str],
    mounts: dict[Path, str],
    what: str,
    security: Security | None = None,
) -> Container:
    """The agent container, with the pod spec's user and capabilities unless `security`."""
    return Container.start(
        images.agent,
        args,
        pod.workdir / f"agent-{what.replace(' ', '-')}.log",
        name=container_name(f"agent-{what.replace(' ', '-')}"),
        network=f"ns:/run/netns/{pod.name}",
        security=security or agent_pod_security()[1],
        env={"VM_DHCP_AGENT_NAME": "net-48-agent"},
        mounts=mounts,
    )


def start_agent(
    images: Images, pod: Netns, args: list[str], mounts: dict[Path, str], what: str
) -> Container:
    """The agent container; ready when its /readyz answers 200 (the pod's readiness probe)."""
    agent = launch_agent(images, pod, args, mounts, what)

    def ready() -> bool:
        if not agent.alive():
            raise AssertionError(f"the agent container exited\n{agent.output()}")
        return pod.curl("http://127.0.0.1:8080/readyz", timeout=1)[0] == 200

    wait_for("the agent container's /readyz", ready, 60, interval=0.05, details=agent.tail)
    FIGURES[f"start-up agent ({what})"] = f"{time.monotonic() - agent.started:.2f} s to /readyz"
    return agent


def check_pod_identity(agent: Container) -> None:
    """Root, as the pod spec says, with exactly its capabilities."""
    _, security = agent_pod_security()
    assert security.capabilities is not None
    assert agent.status("Uid").split()[:2] == ["0", "0"]
    expected = sum(1 << CAPABILITY_BITS[cap] for cap in security.capabilities)
    assert int(agent.status("CapEff"), 16) == expected, agent.status("CapEff")
    assert int(agent.status("CapBnd"), 16) == expected


def serve_and_stop(agent: Container, lab: Lab, what: str) -> None:
    """A real client gets its allocated address; health endpoints answer; SIGTERM stops the
    agent with exit 0 well within the grace period."""
    bound = Udhcpc(lab.add_client(MAC)).acquire()
    assert (bound.ip, bound.server_id, bound.lease_time) == (ADDRESS, SERVER_IP, 300)
    assert bound.dns == (IPv4Address("1.1.1.1"),)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert lab.srv.curl(f"http://127.0.0.1:8080{path}")[0] == 200, path
    # a capability it lacks makes the agent degrade, not die: it says so in its log
    assert "not permitted" not in agent.output(), agent.output()
    stopping = time.monotonic()
    code = agent.stop(timeout=GRACE_SECONDS)
    assert code == 0, f"exited {code}:\n{agent.output()}"
    FIGURES[f"stop agent ({what})"] = f"{time.monotonic() - stopping:.2f} s after SIGTERM"
    assert "Traceback" not in agent.output()


def run_agent_pod(
    images: Images, lab: Lab, args: list[str], mounts: dict[Path, str], what: str
) -> None:
    """The pod in the lab's server namespace: ip-setter, then the agent, checked and stopped."""
    ip_setter(images, lab.srv)
    agent = start_agent(images, lab.srv, args, mounts, what)
    try:
        check_pod_identity(agent)
        serve_and_stop(agent, lab, what)
    finally:
        agent.stop(timeout=5)


def test_the_images_print_the_package_version(images: Images) -> None:
    for image in (images.agent, images.controller, images.webhook):
        done = run_once(image, ["--version"])
        assert done.returncode == 0, done.stderr
        assert vmdhcp.__version__ in done.stdout, done.stdout


def test_the_images_run_as_their_users(images: Images) -> None:
    """Controller and webhook: the numeric non-root user of the chart's podSecurityContext;
    agent: the image's root, which its pod spec asks for."""
    for image in (images.controller, images.webhook):
        assert images.config(image, "User") == "65532:65532"
        done = run_once(image, ["-u"], entrypoint="id")
        assert done.stdout.strip() == "65532", done.stdout + done.stderr
    assert run_once(images.agent, ["-u"], entrypoint="id").stdout.strip() == "0"


def test_agent_image_serves_a_pool_file(images: Images, lab: Lab) -> None:
    pool = write_ippool(lab.srv.workdir / "pool.yaml", pool_spec())
    args = ["--ippool-file", "/etc/vm-dhcp/pool.yaml", "--nic", "eth1"]
    run_agent_pod(images, lab, args, {pool: "/etc/vm-dhcp/pool.yaml"}, "file mode")


def grant_agent(api: ApiClient, namespace: str) -> None:
    """What the chart gives the agent's service account: read IPPools, post Events."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": [GROUP], "resources": ["ippools"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    role: dict[str, Any] = {"metadata": {"name": "vm-dhcp-agent"}, "rules": rules}
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    api_request(api, "POST", f"{rbac}/roles", body=role)
    subject = {"kind": "ServiceAccount", "name": "vm-dhcp-agent", "namespace": namespace}
    binding: dict[str, Any] = {
        "metadata": {"name": "vm-dhcp-agent"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "vm-dhcp-agent",
        },
        "subjects": [subject],
    }
    api_request(api, "POST", f"{rbac}/rolebindings", body=binding)


def test_agent_image_serves_a_pool_from_the_api_server(
    images: Images, lab: Lab, image_cluster: Cluster, image_api: ApiClient
) -> None:
    namespace = unique_namespace_name("agent-image")
    create_namespace(image_api, namespace)
    try:
        grant_agent(image_api, namespace)
        kubeconfig = image_cluster.mint(f"system:serviceaccount:{namespace}:vm-dhcp-agent")
        spec = pool_spec()
        spec.namespace = namespace
        manifest = spec.manifest()
        status = manifest.pop("status")
        custom = CustomObjectsApi(image_api)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", manifest)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "ippools", "net-48", {"status": status}
        )
        forward = PortForward(lab.srv.name, api_port(kubeconfig))
        args = ["--ippool-ref", f"{namespace}/net-48", "--kubeconfig", KUBECONFIG_IN_CONTAINER]
        try:
            run_agent_pod(
                images, lab, args, {kubeconfig: KUBECONFIG_IN_CONTAINER}, "Kubernetes mode"
            )
        finally:
            forward.close()
    finally:
        delete_namespace(image_api, namespace)


def test_agent_without_a_capability_says_so(images: Images, lab: Lab) -> None:
    """The checks above can fail: without NET_RAW (which some runtimes drop by default) the
    agent has no layer-2 socket and no rogue-server check, and logs that it was refused."""
    _, security = agent_pod_security()
    assert security.capabilities is not None
    fewer = Security(security.user, tuple(c for c in security.capabilities if c != "NET_RAW"))
    pod = lab.srv
    pool = write_ippool(pod.workdir / "pool.yaml", pool_spec())
    args = ["--ippool-file", "/etc/vm-dhcp/pool.yaml", "--nic", "eth1"]
    agent = launch_agent(images, pod, args, {pool: "/etc/vm-dhcp/pool.yaml"}, "no NET_RAW", fewer)
    try:
        wait_for(
            "the agent to report the missing capability",
            lambda: "Operation not permitted" in agent.output(),
            60,
            interval=0.05,
            details=agent.tail,
        )
    finally:
        code = agent.stop(timeout=GRACE_SECONDS)
    assert code == 0, f"exited {code}:\n{agent.output()}"

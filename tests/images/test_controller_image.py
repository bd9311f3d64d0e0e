"""The controller and webhook images, run as the chart's Deployments run them: the image's
user (the chart's podSecurityContext), a read-only root with /tmp writable, every capability
dropped and no privilege escalation (the chart's securityContext), the chart's arguments; on
the host's network against the test API server. The controller allocates a VM's address and
creates its agent pod; the webhook refuses a bad IPPool through real admission."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.agentproc import free_port, wait_for
from tests.cluster import api_error, api_request, create_namespace, delete_namespace
from tests.cluster import unique_namespace_name as unique
from tests.containers import (
    FIGURES,
    KUBECONFIG_IN_CONTAINER,
    REPO,
    Container,
    Images,
    Security,
    container_name,
    container_security,
)
from tests.integration.test_end_to_end import seed_network

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]  # the first test builds the images

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
GRACE_SECONDS = 30  # the chart sets no terminationGracePeriodSeconds: Kubernetes' default
SERVICE_CIDR = "10.53.0.0/16"
MAC = "fa:cf:8e:50:82:fc"
POOL = {
    "serverIP": "192.168.48.77",
    "cidr": "192.168.48.0/24",
    "pool": {"start": "192.168.48.81", "end": "192.168.48.90"},
    "router": "192.168.48.1",
    "leaseTime": 300,
}


def chart_security() -> Security:
    values = yaml.safe_load((REPO / "chart" / "values.yaml").read_text())
    return container_security(values["securityContext"], values["podSecurityContext"])


@pytest.fixture
def namespace(image_api: ApiClient) -> Iterator[str]:
    name = unique("images")
    create_namespace(image_api, name)
    try:
        yield name
    finally:
        delete_namespace(image_api, name)


def start(images: Images, image: str, args: list[str], kubeconfig: Path, log: Path) -> Container:
    return Container.start(
        image,
        [*args, "--kubeconfig", KUBECONFIG_IN_CONTAINER],
        log,
        name=container_name(image.rsplit("/", 1)[-1].split(":")[0]),
        network="host",
        security=chart_security(),
        mounts={kubeconfig: KUBECONFIG_IN_CONTAINER},
    )


def stop_within_grace(container: Container, what: str) -> int:
    """SIGTERM, as the kubelet sends it; SIGKILL after the grace period. The exit code."""
    stopping = time.monotonic()
    code = container.stop(timeout=GRACE_SECONDS)
    FIGURES[f"stop {what}"] = f"{time.monotonic() - stopping:.2f} s after SIGTERM"
    return code


def assert_clean_exit(container: Container, code: int) -> None:
    assert code == 0, f"exited {code}:\n{container.output()}"
    assert "Traceback" not in container.output(), container.output()


def non_root(container: Container) -> None:
    assert container.status("Uid").split()[:2] == ["65532", "65532"]
    assert int(container.status("CapEff"), 16) == 0


def get(port: int, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def allocated(api: ApiClient, namespace: str, vm: str) -> str | None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachinenetworkconfigs/{vm}"
    try:
        cfg: dict[str, Any] = api_request(api, "GET", path)
    except ApiException:
        return None
    for entry in (cfg.get("status") or {}).get("networkConfigs") or []:
        if entry.get("state") == "Allocated":
            return str(entry["allocatedIPAddress"])
    return None


def seed(custom: CustomObjectsApi, namespace: str) -> None:
    """The end-to-end suite's VM network and pool (`<namespace>/net-48`), and a VM on it."""
    seed_network(custom, namespace)
    nic = {"name": "nic-1", "bridge": {}, "macAddress": MAC}
    networks = [{"name": "nic-1", "multus": {"networkName": f"{namespace}/net-48"}}]
    template = {"spec": {"domain": {"devices": {"interfaces": [nic]}}, "networks": networks}}
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm-1"},
        "spec": {"template": template},
    }
    custom.create_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines", vm)


def test_controller_image_allocates_and_creates_the_agent_pod(
    images: Images,
    image_api: ApiClient,
    readable_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    args = [
        "--name", "vm-dhcp-controller",
        "--namespace", namespace,
        "--image", images.agent,
        "--service-account-name", "vm-dhcp-agent",
        "--agent-replicas", "1",
        "--no-leader-election",
        "--service-cidr", SERVICE_CIDR,
        "--http-address", "127.0.0.1",
        "--http-port", str(port),
    ]  # fmt: skip
    controller = start(images, images.controller, args, readable_kubeconfig, tmp_path / "c.log")
    try:

        def ready() -> bool:
            assert controller.alive(), controller.output()
            return get(port, "/readyz") == 200

        try:
            wait_for(ready, 60, "the controller container's /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{controller.output()}") from None
        FIGURES["start-up controller"] = f"{time.monotonic() - controller.started:.2f} s to /readyz"
        assert get(port, "/healthz") == 200
        assert get(port, "/metrics") == 200
        non_root(controller)

        custom = CustomObjectsApi(image_api)
        seed(custom, namespace)
        address = wait_for(lambda: allocated(image_api, namespace, "vm-1"), 30, "vm-1's address")
        assert address == "192.168.48.82", address  # .81 is excluded

        def agent_pod() -> dict[str, Any] | None:
            path = f"/api/v1/namespaces/{namespace}/pods/{namespace}-net-48-agent"
            try:
                found: dict[str, Any] = api_request(image_api, "GET", path)
            except ApiException:
                return None
            return found

        pod = wait_for(agent_pod, 30, "the agent pod")
        assert pod["spec"]["containers"][0]["image"] == images.agent
        assert pod["spec"]["initContainers"][0]["image"] == images.agent
        assert "Traceback" not in controller.output(), controller.output()
    finally:
        code = stop_within_grace(controller, "controller")
    assert_clean_exit(controller, code)


def refuses_a_bad_pool(api: ApiClient, namespace: str, webhook: str) -> bool:
    """A dry-run IPPool inside the service CIDR: refused by this webhook's validator."""
    bad = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPPool",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "networkName": f"{namespace}/none",
            "ipv4Config": {**POOL, "cidr": "10.53.1.0/24", "serverIP": "10.53.1.2",
                           "pool": {"start": "10.53.1.10", "end": "10.53.1.20"}},
        },
    }  # fmt: skip
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/ippools"
    try:
        api_request(api, "POST", path, body=bad, query={"dryRun": "All"})
    except ApiException as exc:
        message = api_error(exc)[1]
        return f"ippool.validator.{namespace}.{webhook}" in message
    return False


def test_webhook_image_refuses_a_bad_pool_through_admission(
    images: Images,
    image_api: ApiClient,
    readable_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    name = f"wh-{uuid.uuid4().hex[:8]}"
    args = [
        "--name", name,
        "--namespace", namespace,
        "--https-port", str(port),
        "--service-cidr", SERVICE_CIDR,
        "--listen-address", "127.0.0.1",
        "--advertise-url", f"https://127.0.0.1:{port}",
    ]  # fmt: skip
    webhook = start(images, images.webhook, args, readable_kubeconfig, tmp_path / "w.log")
    try:

        def answers() -> bool:
            assert webhook.alive(), webhook.output()
            return refuses_a_bad_pool(image_api, namespace, name)

        try:
            wait_for(answers, 60, "the webhook container to refuse a bad IPPool", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{webhook.output()}") from None
        FIGURES["start-up webhook"] = (
            f"{time.monotonic() - webhook.started:.2f} s to its first refusal"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the chart's probes: a TCP connection to the HTTPS port
        non_root(webhook)
    finally:
        code = stop_within_grace(webhook, "webhook")
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            try:
                api_request(
                    image_api, "DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
    assert_clean_exit(webhook, code)

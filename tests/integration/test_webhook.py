"""`vm-dhcp-webhook` end to end: the real process, registered with the test API server
through `--advertise-url`, judging what `kubectl` and the client send.

One webhook serves the whole module (its configurations apply to the whole cluster, so it
is stopped, and its configurations deleted, before any other module runs). Objects live in
per-test namespaces.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.agentproc import free_port, wait_for
from tests.cluster import Cluster, api_error, api_request, create_namespace, delete_namespace

pytestmark = pytest.mark.cluster

WEBHOOK = Path(sys.executable).parent / "vm-dhcp-webhook"
GROUP_PATH = "/apis/network.harvesterhci.io/v1alpha1"
NAD_PATH = "/apis/k8s.cni.cncf.io/v1"
ADMISSION_PATH = "/apis/admissionregistration.k8s.io/v1"
CONFIG_KINDS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")


# --------------------------------------------------------------------------------------------
# Running the webhook


@dataclass
class Webhook:
    name: str
    namespace: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def validator(self) -> str:
        return f"ippool.validator.{self.namespace}.{self.name}"


def probe_pool(namespace: str) -> dict[str, Any]:
    """A schema-valid pool every version of the rules refuses (it overlaps the service
    CIDR and names no NAD)."""
    return ippool(namespace, "probe", "probe/none", "10.53.0.0/24", "10.53.0.2", ".10", ".20")


def answers(api: ApiClient, webhook: Webhook) -> bool:
    """True once this webhook refuses a dry-run create (configurations reach the API
    server's informers a few milliseconds after they are written)."""
    path = f"{GROUP_PATH}/namespaces/{webhook.namespace}/ippools"
    try:
        api_request(api, "POST", path, body=probe_pool(webhook.namespace), query={"dryRun": "All"})
    except ApiException as exc:
        return webhook.validator in api_error(exc)[1]
    return False


def delete_configurations(api: ApiClient, name: str) -> None:
    for kind in CONFIG_KINDS:
        try:
            api_request(api, "DELETE", f"{ADMISSION_PATH}/{kind}/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise


@contextmanager
def running_webhook(
    cluster: Cluster,
    api: ApiClient,
    namespace: str,
    log: Path,
    *,
    name: str | None = None,
    advertise: bool = True,
    port: int | None = None,
    extra: tuple[str, ...] = (),
    cleanup: bool = True,
) -> Iterator[Webhook]:
    """Start `vm-dhcp-webhook`, wait until it refuses a bad IPPool, and at the end stop it
    with SIGTERM (it must exit 0) and delete its webhook configurations (`cleanup`)."""
    name = name or f"wh-{uuid.uuid4().hex[:8]}"
    port = port or free_port()
    args = [str(WEBHOOK), "--name", name, "--namespace", namespace, "--https-port", str(port)]
    if advertise:
        args += ["--advertise-url", f"https://127.0.0.1:{port}"]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [*args, *extra], stdout=out, stderr=subprocess.STDOUT, text=True, env=env
        )
    webhook = Webhook(name, namespace, port, process, log)
    try:
        wait_for(
            lambda: process.poll() is not None or answers(api, webhook),
            20,
            "the webhook to answer",
        )
        assert process.poll() is None, f"exited {process.returncode}:\n{webhook.output()}"
        yield webhook
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if cleanup:
            delete_configurations(api, name)
    assert process.returncode == 0, f"exited {process.returncode}:\n{webhook.output()}"
    assert "Traceback" not in webhook.output()


@pytest.fixture(scope="module")
def webhook(
    cluster: Cluster, api_client: ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhook]:
    home = f"vm-dhcp-system-{uuid.uuid4().hex[:6]}"
    create_namespace(api_client, home)
    log = tmp_path_factory.mktemp("webhook") / "webhook.log"
    try:
        with running_webhook(cluster, api_client, home, log) as running:
            yield running
    finally:
        delete_namespace(api_client, home)


# --------------------------------------------------------------------------------------------
# Objects


def ippool(
    namespace: str,
    name: str,
    network: str,
    cidr: str,
    server: str | None = None,
    start: str | None = None,
    end: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An IPPool; `start`/`end` beginning with `.` complete the CIDR's first three octets."""
    prefix = cidr.rsplit(".", 1)[0]
    config: dict[str, Any] = {"cidr": cidr, **extra}
    if server is not None:
        config["serverIP"] = server
    pool = {
        key: prefix + value if value.startswith(".") else value
        for key, value in (("start", start), ("end", end))
        if value is not None
    }
    if pool:
        config["pool"] = pool
    return {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"networkName": network, "ipv4Config": config},
    }


def create(api: ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    namespace = body["metadata"]["namespace"]
    root, plural = path.rsplit("/", 1)
    created: dict[str, Any] = api_request(
        api, "POST", f"{root}/namespaces/{namespace}/{plural}", body=body
    )
    return created


def refusal(api: ApiClient, method: str, path: str, body: Any = None, **kw: Any) -> str:
    """The API server's message for a request that must be refused."""
    with pytest.raises(ApiException) as caught:
        api_request(api, method, path, body=body, **kw)
    status, message = api_error(caught.value)
    assert status == 422, message
    return message


def nad(api: ApiClient, namespace: str, name: str, pool: tuple[str, str] | None = None) -> None:
    labels = {}
    if pool is not None:
        labels = {
            "network.harvesterhci.io/ippool-namespace": pool[0],
            "network.harvesterhci.io/ippool-name": pool[1],
        }
    body = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"config": "{}"},
    }
    create(api, f"{NAD_PATH}/network-attachment-definitions", body)


def vmnetcfg(
    namespace: str, name: str, *nics: tuple[str, str] | tuple[str, str, str]
) -> dict[str, Any]:
    configs = [
        {"networkName": n[0], "macAddress": n[1], **({"ipAddress": n[2]} if len(n) == 3 else {})}
        for n in nics
    ]
    return {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "VirtualMachineNetworkConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"vmName": name, "networkConfigs": configs},
    }


IPPOOLS = f"{GROUP_PATH}/ippools"
VMNETCFGS = f"{GROUP_PATH}/virtualmachinenetworkconfigs"


# --------------------------------------------------------------------------------------------
# IPPools


def test_kubectl_apply_of_a_bad_ippool_prints_the_message(
    webhook: Webhook, cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> None:
    nad(api_client, namespace, "net-48")
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        f"""
apiVersion: network.harvesterhci.io/v1alpha1
kind: IPPool
metadata: {{name: net-48, namespace: {namespace}}}
spec:
  networkName: {namespace}/net-48
  ipv4Config:
    cidr: 10.53.4.0/24
    serverIP: 10.53.4.2
    router: 10.53.5.1
    pool: {{start: 10.53.4.10, end: 10.53.4.200}}
"""
    )
    done = cluster.kubectl("apply", "-f", str(manifest), check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f'Error from server: error when creating "{manifest}": admission webhook '
        f'"{webhook.validator}" denied the request: cannot create IPPool {namespace}/net-48 '
        "because cidr 10.53.4.0/24 overlaps cluster service cidr 10.53.0.0/16; "
        "router ip 10.53.5.1 is not within subnet"
    )


def test_a_new_ippool_gets_its_defaults(
    webhook: Webhook, api_client: ApiClient, namespace: str
) -> None:
    nad(api_client, namespace, "net-1")
    body = ippool(
        namespace, "net-1", f"{namespace}/net-1", "192.168.10.0/24", router="192.168.10.1"
    )
    created = create(api_client, IPPOOLS, body)
    assert created["spec"]["ipv4Config"] == {
        "cidr": "192.168.10.0/24",
        "router": "192.168.10.1",
        "serverIP": "192.168.10.2",
        "pool": {"start": "192.168.10.1", "end": "192.168.10.254"},
    }


def test_a_malformed_start_is_refused_not_replaced(
    webhook: Webhook, api_client: ApiClient, namespace: str
) -> None:
    nad(api_client, namespace, "net-1")
    body = ippool(namespace, "net-1", "net-1", "192.168.0.0/24", start="192.168.0.1000")
    message = refusal(api_client, "POST", f"{GROUP_PATH}/namespaces/{namespace}/ippools", body)
    assert message == (
        f'admission webhook "ippool.mutator.{webhook.namespace}.{webhook.name}" denied the '
        f'request: cannot create IPPool {namespace}/net-1 because ParseAddr("192.168.0.1000"): '
        "IPv4 field has value >255"
    )


def test_one_ippool_per_network(webhook: Webhook, api_client: ApiClient, namespace: str) -> None:
    nad(api_client, namespace, "net-1")
    create(api_client, IPPOOLS, ippool(namespace, "first", f"{namespace}/net-1", "10.0.0.0/24"))
    second = ippool(namespace, "second", f"{namespace}/net-1", "10.0.1.0/24")
    message = refusal(api_client, "POST", f"{GROUP_PATH}/namespaces/{namespace}/ippools", second)
    assert message.endswith(
        f"cannot create IPPool {namespace}/second because network {namespace}/net-1 "
        f"is already served by IPPool {namespace}/first"
    )


def test_deleting_a_pool_in_use_is_refused(
    webhook: Webhook, cluster: Cluster, api_client: ApiClient, namespace: str
) -> None:
    """Keyed by spec.networkName: the pool's own name differs from its NAD's
    (harvester#10380, where upstream lets this deletion through)."""
    nad(api_client, namespace, "vlan-7", pool=(namespace, "pool-7"))
    create(api_client, IPPOOLS, ippool(namespace, "pool-7", f"{namespace}/vlan-7", "10.7.0.0/24"))
    create(
        api_client,
        VMNETCFGS,
        vmnetcfg(namespace, "vm-1", (f"{namespace}/vlan-7", "52:54:00:00:07:01")),
    )
    done = cluster.kubectl("delete", "-n", namespace, "ippool", "pool-7", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"denied the request: cannot delete IPPool {namespace}/pool-7 because it's still used "
        f"by VirtualMachineNetworkConfig(s) {namespace}/vm-1, which must be removed at first"
    )
    cluster.kubectl("delete", "-n", namespace, "vmnetcfg", "vm-1")
    cluster.kubectl("delete", "-n", namespace, "ippool", "pool-7")


def test_status_writes_and_unrelated_updates_pass_on_a_broken_pool(
    webhook: Webhook, api_client: ApiClient, namespace: str
) -> None:
    """The controller must be able to label, finalize and report on a pool whose NAD went
    away: status is not validated, and an update is judged on what it changes."""
    nad(api_client, namespace, "net-1")
    create(api_client, IPPOOLS, ippool(namespace, "net-1", f"{namespace}/net-1", "10.1.0.0/24"))
    api_request(
        api_client,
        "DELETE",
        f"{NAD_PATH}/namespaces/{namespace}/network-attachment-definitions/net-1",
    )
    path = f"{GROUP_PATH}/namespaces/{namespace}/ippools/net-1"
    merge = "application/merge-patch+json"
    status = {
        "status": {"ipv4": {"allocated": {"10.1.0.1": "RESERVED"}, "used": 0, "available": 253}}
    }
    api_request(api_client, "PATCH", f"{path}/status", body=status, content_type=merge)
    labels = {"metadata": {"labels": {"team": "a"}}}
    api_request(api_client, "PATCH", path, body=labels, content_type=merge)
    worse = {"spec": {"ipv4Config": {"leaseTime": 4294967296}}}
    assert refusal(api_client, "PATCH", path, worse, content_type=merge).endswith(
        f"cannot update IPPool {namespace}/net-1 because "
        "lease time 4294967296 is more than 4294967295 seconds"
    )


def test_a_lease_time_of_zero_means_one_year_and_is_accepted(
    webhook: Webhook, api_client: ApiClient, namespace: str
) -> None:
    """The CRD says unset, 0 or negative means one year (the agent serves 31536000), and
    upstream's webhook has no lease time rule: the webhook agrees, on create and update."""
    nad(api_client, namespace, "net-1")
    body = ippool(namespace, "net-1", f"{namespace}/net-1", "10.1.0.0/24", leaseTime=0)
    assert create(api_client, IPPOOLS, body)["spec"]["ipv4Config"]["leaseTime"] == 0
    path = f"{GROUP_PATH}/namespaces/{namespace}/ippools/net-1"
    patch = {"spec": {"ipv4Config": {"leaseTime": -1}}}
    patched = api_request(
        api_client, "PATCH", path, body=patch, content_type="application/merge-patch+json"
    )
    assert patched["spec"]["ipv4Config"]["leaseTime"] == -1


# --------------------------------------------------------------------------------------------
# VirtualMachineNetworkConfigs


def test_vmnetcfg_rules(webhook: Webhook, api_client: ApiClient, namespace: str) -> None:
    vmnetcfgs = f"{GROUP_PATH}/namespaces/{namespace}/virtualmachinenetworkconfigs"
    nad(api_client, namespace, "unlabelled")
    message = refusal(
        api_client,
        "POST",
        vmnetcfgs,
        vmnetcfg(namespace, "vm-0", (f"{namespace}/unlabelled", "52:54:00:00:00:01")),
    )
    assert message.endswith(
        f"cannot create VirtualMachineNetworkConfig {namespace}/vm-0 because "
        "network.harvesterhci.io/ippool-namespace label not found"
    )

    nad(api_client, namespace, "net-1", pool=(namespace, "pool-1"))
    pool = ippool(
        namespace, "pool-1", f"{namespace}/net-1", "10.9.0.0/24", "10.9.0.2", ".10", ".20"
    )
    create(api_client, IPPOOLS, pool)
    outside = vmnetcfg(namespace, "vm-1", (f"{namespace}/net-1", "52:54:00:00:00:01", "10.9.0.30"))
    assert refusal(api_client, "POST", vmnetcfgs, outside).endswith(
        "because ip address 10.9.0.30 is not within pool range 10.9.0.10-10.9.0.20"
    )
    create(
        api_client,
        VMNETCFGS,
        vmnetcfg(namespace, "vm-1", (f"{namespace}/net-1", "52:54:00:00:00:01", "10.9.0.11")),
    )
    create(
        api_client,
        VMNETCFGS,
        vmnetcfg(namespace, "vm-2", (f"{namespace}/net-1", "52:54:00:00:00:02")),
    )

    # updates are validated too: vm-2 takes vm-1's MAC
    path = f"{vmnetcfgs}/vm-2"
    stolen = {
        "spec": {
            "networkConfigs": [
                {"networkName": f"{namespace}/net-1", "macAddress": "52-54-00-00-00-01"}
            ]
        }
    }
    message = refusal(
        api_client, "PATCH", path, stolen, content_type="application/merge-patch+json"
    )
    assert message.endswith(
        f"cannot update VirtualMachineNetworkConfig {namespace}/vm-2 because mac address "
        f"52:54:00:00:00:01 is already used on network {namespace}/net-1 by "
        f"VirtualMachineNetworkConfig {namespace}/vm-1"
    )
    # the namespace purge deletes pools and configs concurrently: the pool must not go first
    api_request(api_client, "DELETE", vmnetcfgs)


# --------------------------------------------------------------------------------------------
# Registration and certificates


def secret_pem(api: ApiClient, namespace: str, name: str) -> tuple[bytes, bytes, str]:
    secret = api_request(api, "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    assert secret["type"] == "kubernetes.io/tls"
    data = secret["data"]
    return (
        base64.b64decode(data["tls.crt"]),
        base64.b64decode(data["tls.key"]),
        secret["metadata"]["resourceVersion"],
    )


def test_webhook_configurations(webhook: Webhook, api_client: ApiClient) -> None:
    ca, _, _ = secret_pem(api_client, webhook.namespace, f"{webhook.name}-ca")
    url = f"https://127.0.0.1:{webhook.port}"
    found = {}
    for kind in CONFIG_KINDS:
        config = api_request(api_client, "GET", f"{ADMISSION_PATH}/{kind}/{webhook.name}")
        for hook in config["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
            assert hook["clientConfig"]["url"].startswith(url + "/")
            (rule,) = hook["rules"]
            found[hook["name"]] = (
                kind,
                hook["failurePolicy"],
                rule["resources"],
                sorted(rule["operations"]),
            )
    suffix = f"{webhook.namespace}.{webhook.name}"
    assert found == {
        f"ippool.validator.{suffix}": (
            "validatingwebhookconfigurations",
            "Fail",
            ["ippools"],
            ["CREATE", "DELETE", "UPDATE"],
        ),
        f"vmnetcfg.validator.{suffix}": (
            "validatingwebhookconfigurations",
            "Fail",
            ["virtualmachinenetworkconfigs"],
            ["CREATE", "UPDATE"],
        ),
        f"ippool.mutator.{suffix}": (
            "mutatingwebhookconfigurations",
            "Ignore",
            ["ippools"],
            ["CREATE"],
        ),
    }


def test_certificates_live_in_secrets(webhook: Webhook, api_client: ApiClient) -> None:
    ca_pem, _, _ = secret_pem(api_client, webhook.namespace, f"{webhook.name}-ca")
    cert_pem, _, _ = secret_pem(api_client, webhook.namespace, f"{webhook.name}-tls")
    ca, cert = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{webhook.name}.{webhook.namespace}.svc" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

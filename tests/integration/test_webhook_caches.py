"""The webhook answers from caches kept by watches: what it sees of writes made just before
an admission, how a refusal from a cache that is behind is checked against the API server,
and what /readyz and the admissions say while a cache is not filled or a watch keeps failing.

The webhooks here run as a user of their own whose RBAC a test narrows (the test API server
enforces RBAC), so that a listing or a watch can be refused on purpose. One webhook at a time
(their configurations apply to the whole cluster).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.agentproc import free_port, wait_for
from tests.cluster import Cluster, api_request, create_namespace, delete_namespace
from tests.integration.test_webhook import (
    GROUP_PATH,
    IPPOOLS,
    NAD_PATH,
    VMNETCFGS,
    WEBHOOK,
    Webhook,
    create,
    delete_configurations,
    ippool,
    nad,
    refusal,
    running_webhook,
    vmnetcfg,
)

pytestmark = pytest.mark.cluster

RBAC = "/apis/rbac.authorization.k8s.io/v1"
NET = "network.harvesterhci.io"
NADS = "k8s.cni.cncf.io"


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def rules(*, nad_list: bool = True, cfg_watch: bool = True) -> list[dict[str, Any]]:
    """What the webhook needs (as the chart should grant it), less what a test takes away."""
    return [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "update"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
            "verbs": ["create", "patch"],
        },
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [NET], "resources": ["ippools"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [NET],
            "resources": ["virtualmachinenetworkconfigs"],
            "verbs": ["get", "list", *(["watch"] if cfg_watch else [])],
        },
        {
            "apiGroups": [NADS],
            "resources": ["network-attachment-definitions"],
            "verbs": ["get", *(["list"] if nad_list else []), "watch"],
        },
    ]


@pytest.fixture
def identity(cluster: Cluster, api_client: ApiClient) -> Iterator[tuple[str, Path]]:
    """A user of its own with the webhook's ClusterRole (a test may replace the rules)."""
    user = f"webhook-{uuid.uuid4().hex[:6]}"
    role = {"metadata": {"name": user}, "rules": rules()}
    api_request(api_client, "POST", f"{RBAC}/clusterroles", body=role)
    binding = {
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    api_request(api_client, "POST", f"{RBAC}/clusterrolebindings", body=binding)
    try:
        yield user, cluster.mint(user)
    finally:
        api_request(api_client, "DELETE", f"{RBAC}/clusterrolebindings/{user}")
        api_request(api_client, "DELETE", f"{RBAC}/clusterroles/{user}")


def grant(api: ApiClient, user: str, **narrowed: bool) -> None:
    role = api_request(api, "GET", f"{RBAC}/clusterroles/{user}")
    role["rules"] = rules(**narrowed)
    api_request(api, "PUT", f"{RBAC}/clusterroles/{user}", body=role)


@pytest.fixture
def home(api_client: ApiClient) -> Iterator[str]:
    name = f"vm-dhcp-system-{uuid.uuid4().hex[:6]}"
    create_namespace(api_client, name)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


def network(api: ApiClient, namespace: str) -> str:
    """A labelled NAD and its pool, 10.9.0.10-20; the network's name."""
    nad(api, namespace, "net-1", pool=(namespace, "pool-1"))
    body = ippool(
        namespace, "pool-1", f"{namespace}/net-1", "10.9.0.0/24", "10.9.0.2", ".10", ".20"
    )
    create(api, IPPOOLS, body)
    return f"{namespace}/net-1"


@dataclass
class Env:
    """What a test here works with: the cluster, an admin client, its namespace, the
    webhook's home namespace and the webhook's own user (`identity`)."""

    cluster: Cluster
    api: ApiClient
    namespace: str
    home: str
    user: str
    kubeconfig: Path
    tmp_path: Path

    @property
    def scoped(self) -> Cluster:
        """The cluster as the webhook's own user sees it."""
        return Cluster(self.kubeconfig, self.cluster.rundir, self.cluster.toolkit)

    def start(self, *extra: str) -> tuple[int, AbstractContextManager[Webhook]]:
        """The webhook as its own user, with /readyz on a port of its own (returned)."""
        port = free_port()
        log = self.tmp_path / f"webhook-{port}.log"
        extra = ("--http-port", str(port), *extra)
        return port, running_webhook(self.scoped, self.api, self.home, log, extra=extra)


@pytest.fixture
def env(
    cluster: Cluster,
    api_client: ApiClient,
    namespace: str,
    home: str,
    identity: tuple[str, Path],
    tmp_path: Path,
) -> Env:
    return Env(cluster, api_client, namespace, home, *identity, tmp_path)


def cached_vmnetcfgs(port: int) -> int:
    status, text = readyz(port)
    assert status == 200, text
    return int(json.loads(text.removeprefix("ready: "))["vmnetcfgs"])


def test_objects_written_before_an_admission_are_judged_against(env: Env) -> None:
    """What was written before an admission is judged against: a NAD and a pool created a
    moment ago are found, a vmnetcfg deleted a moment ago no longer holds its MAC and its
    address (a refusal is read again live, so with no wait at all); a vmnetcfg created
    before holds them against the next one, in any notation, once its watch event has
    arrived (milliseconds; docs/webhook.md says why that is not guaranteed sooner and what
    guards the window)."""
    port, running = env.start()
    with running:
        path = f"{GROUP_PATH}/namespaces/{env.namespace}/virtualmachinenetworkconfigs"
        base = cached_vmnetcfgs(port)
        net = network(env.api, env.namespace)  # then at once:
        create(env.api, VMNETCFGS, vmnetcfg(env.namespace, "first", (net, "52:54:00:00:01:00")))
        base += 1
        for n in range(1, 21):
            mac, ip = f"52:54:00:00:01:{n:02x}", f"10.9.0.{10 + n % 10}"
            create(env.api, VMNETCFGS, vmnetcfg(env.namespace, f"a-{n}", (net, mac, ip)))
            wait_for(lambda: cached_vmnetcfgs(port) == base + 1, 10, "the watch event")
            same_mac = vmnetcfg(env.namespace, f"b-{n}", (net, mac.upper()))
            assert refusal(env.api, "POST", path, same_mac).endswith(
                f"mac address {mac} is already used on network {net} by "
                f"VirtualMachineNetworkConfig {env.namespace}/a-{n}"
            )
            same_ip = vmnetcfg(env.namespace, f"c-{n}", (net, f"52:54:00:00:02:{n:02x}", ip))
            assert refusal(env.api, "POST", path, same_ip).endswith(
                f"duplicate desired ip {ip} on network {net}"
            )
            api_request(env.api, "DELETE", f"{path}/a-{n}")  # then at once:
            create(env.api, VMNETCFGS, vmnetcfg(env.namespace, f"d-{n}", (net, mac, ip)))
            api_request(env.api, "DELETE", f"{path}/d-{n}")
            wait_for(lambda: cached_vmnetcfgs(port) == base, 10, "the watch events")
        api_request(env.api, "DELETE", path)


def test_a_refusal_from_a_cache_that_is_behind_is_checked_against_the_api_server(env: Env) -> None:
    """Without the right to watch vmnetcfgs, the webhook's cache keeps what it first listed.
    A vmnetcfg deleted since still blocks its MAC in that cache, but the refusal is judged
    again on the objects read live, so the create passes; the log says so. A vmnetcfg
    created since is unknown to the cache and blocks nothing."""
    grant(env.api, env.user, cfg_watch=False)
    net = network(env.api, env.namespace)
    path = f"{GROUP_PATH}/namespaces/{env.namespace}/virtualmachinenetworkconfigs"
    mac = "52:54:00:00:03:01"
    create(env.api, VMNETCFGS, vmnetcfg(env.namespace, "old", (net, mac)))
    port, running = env.start()
    with running as webhook:
        api_request(env.api, "DELETE", f"{path}/old")
        create(env.api, VMNETCFGS, vmnetcfg(env.namespace, "new", (net, mac)))
        assert "Accepted on a second look at the API server" in webhook.output()
        assert "vmnetcfgs: list or watch failed" in webhook.output()
        assert readyz(port)[0] == 200  # failing for less than --max-stale-seconds
        # the other direction: what the cache never saw does not block. "new" holds the
        # MAC, but a vmnetcfg taking it is let through; this is the window the controller
        # guards (docs/webhook.md), and --max-stale-seconds bounds how long it stays open
        create(env.api, VMNETCFGS, vmnetcfg(env.namespace, "other", (net, mac.upper())))
        assert "Refused" not in webhook.output().split("Accepted on a second look")[1]
    api_request(env.api, "DELETE", path)


def test_not_ready_until_listed_and_refusing_once_a_watch_failed_for_too_long(env: Env) -> None:
    """Started without the right to list NADs, the webhook does not open its HTTPS port and
    /readyz says which cache is missing; granted the right, it fills and serves. Then, with
    a watch refused for longer than --max-stale-seconds, /readyz reports it and every
    admission is refused with the reason."""
    grant(env.api, env.user, nad_list=False)
    port, https = free_port(), free_port()
    log = env.tmp_path / "webhook.log"
    name = f"wh-{uuid.uuid4().hex[:8]}"
    args = [str(WEBHOOK), "--name", name, "--namespace", env.home, "--https-port", str(https)]
    args += ["--advertise-url", f"https://127.0.0.1:{https}", "--http-port", str(port)]
    environ = {**os.environ, "KUBECONFIG": str(env.kubeconfig)}
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ)
    try:
        missing = (503, "not ready: the webhook has not yet listed NADs\n")
        wait_for(
            lambda: readyz(port) == missing and "NADs: list or watch failed" in log.read_text(),
            20,
            "/readyz and the log to report the missing listing (the others listed)",
        )
        assert "forbidden" in log.read_text()
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", https), timeout=2),
        ):
            pass  # nothing is served from an empty cache
        grant(env.api, env.user)
        wait_for(lambda: readyz(port)[0] == 200, 30, "/readyz once the NADs may be listed")
        assert "Caches filled in" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        delete_configurations(env.api, name)
    extra = ("--http-port", str(port), "--max-stale-seconds", "1")

    # ready once it may list; then a watch refused for longer than 1 s makes it refuse
    grant(env.api, env.user, cfg_watch=False)
    with running_webhook(env.scoped, env.api, env.home, env.tmp_path / "again.log", extra=extra):
        _, text = wait_for(
            lambda: (r := readyz(port))[0] == 503 and r, 30, "/readyz to report the stale watch"
        )
        assert text.startswith("not ready: the webhook's watch of vmnetcfgs has failed for ")
        body = vmnetcfg(env.namespace, "late", ("default/none", "52:54:00:00:04:01"))
        with pytest.raises(ApiException) as refused:
            create(env.api, VMNETCFGS, body)
        assert "cannot judge the request: the webhook's watch of vmnetcfgs has failed for" in str(
            refused.value.body
        )


def test_readyz_names_the_caches_and_their_sizes(env: Env) -> None:
    network(env.api, env.namespace)
    port, running = env.start()
    with running:
        status, text = readyz(port)
    assert status == 200
    assert text.startswith('ready: {"NADs": ')
    assert '"IPPools": ' in text
    assert '"vmnetcfgs": ' in text
    api_request(
        env.api,
        "DELETE",
        f"{NAD_PATH}/namespaces/{env.namespace}/network-attachment-definitions/net-1",
    )

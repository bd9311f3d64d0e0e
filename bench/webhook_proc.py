"""Run `vm-dhcp-webhook` against a test API server for the benchmarks: registered through
`--advertise-url`, ready once it refuses a dry-run IPPool that every version of the rules
refuses, stopped with SIGTERM and its webhook configurations deleted at the end."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from tests.agentproc import wait_for
from tests.integration.test_webhook import WEBHOOK, Webhook, answers, delete_configurations


def rss_mib(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_network(
    custom: CustomObjectsApi, namespace: str, name: str, ipv4: dict[str, Any], **labels: str
) -> None:
    """A NAD `namespace/name` labelled with its IPPool of the same name (as the controller
    labels it when agents run), plus `labels`, and that IPPool with `ipv4` as its
    ipv4Config."""
    labels |= {
        "network.harvesterhci.io/ippool-namespace": namespace,
        "network.harvesterhci.io/ippool-name": name,
    }
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"config": "{}"},
    }
    custom.create_namespaced_custom_object(
        "k8s.cni.cncf.io", "v1", namespace, "network-attachment-definitions", nad
    )
    pool = {
        "apiVersion": "network.harvesterhci.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"networkName": f"{namespace}/{name}", "ipv4Config": ipv4},
    }
    custom.create_namespaced_custom_object(
        "network.harvesterhci.io", "v1alpha1", namespace, "ippools", pool
    )


@contextmanager
def running_webhook(
    api: ApiClient,
    kubeconfig: Path,
    namespace: str,
    port: int,
    log: Path,
    *,
    name: str = "bench-webhook",
    pythonpath: str | None = None,
    timeout: float = 120.0,
) -> Iterator[Webhook]:
    """`pythonpath` runs another copy of the package (e.g. an older checkout's `src`)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [str(WEBHOOK), "--name", name, "--namespace", namespace, "--https-port", str(port)]
    args += ["--advertise-url", f"https://127.0.0.1:{port}"]
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    webhook = Webhook(name, namespace, port, process, log)
    try:
        wait_for(
            lambda: process.poll() is not None or answers(api, webhook),
            timeout,
            "the webhook to answer",
        )
        if process.poll() is not None:
            raise RuntimeError(f"the webhook exited {process.returncode}: {log.read_text()}")
        yield webhook
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        delete_configurations(api, name)

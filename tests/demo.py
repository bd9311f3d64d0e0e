"""`make demo`: the whole system on one machine, a VM getting its address.

Starts the test API server (../shared/k8s-test-env), the webhook, the controller and the
node simulator (tests/nodesim.py), applies the seed's NAD `default/net-48`, the seed's
IPPool and a VirtualMachine `test-vm` with MAC fa:cf:8e:50:82:fc, runs dhclient in a
network namespace with that MAC, and prints what a user wants to see. Everything is
cleaned up on exit; `DEMO_KEEP=1 make demo` keeps it running until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from kubernetes.client import CustomObjectsApi

from tests.agentproc import free_port, running_controller, wait_for
from tests.cluster import create_namespace, prepare_cluster, start_cluster, stop_cluster
from tests.integration.test_end_to_end import grant_agent
from tests.netns.lab import Dhclient, Lab, skip_reason
from tests.nodesim import NodeSimulator

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
AGENTS = "harvester-system"
MAC = "fa:cf:8e:50:82:fc"
WEBHOOK = Path(sys.executable).parent / "vm-dhcp-webhook"

NAD = {
    "apiVersion": "k8s.cni.cncf.io/v1",
    "kind": "NetworkAttachmentDefinition",
    "metadata": {
        "name": "net-48",
        "namespace": "default",
        "labels": {"network.harvesterhci.io/clusternetwork": "mgmt"},
    },
    "spec": {"config": '{"cniVersion":"0.3.1","name":"net-48","type":"bridge","ipam":{}}'},
}
POOL = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "IPPool",
    "metadata": {"name": "net-48", "namespace": "default"},
    "spec": {
        "ipv4Config": {
            "serverIP": "192.168.48.77",
            "cidr": "192.168.48.0/24",
            "pool": {
                "start": "192.168.48.81",
                "end": "192.168.48.90",
                "exclude": ["192.168.48.81", "192.168.48.90"],
            },
            "router": "192.168.48.1",
            "dns": ["1.1.1.1"],
            "domainName": "aibao.moe",
            "domainSearch": ["aibao.moe"],
            "ntp": ["pool.ntp.org"],
            "leaseTime": 300,
        },
        "networkName": "default/net-48",
    },
}
VM = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachine",
    "metadata": {"name": "test-vm", "namespace": "default"},
    "spec": {
        "template": {
            "spec": {
                "domain": {
                    "devices": {"interfaces": [{"name": "nic-1", "bridge": {}, "macAddress": MAC}]}
                },
                "networks": [{"name": "nic-1", "multus": {"networkName": "default/net-48"}}],
            }
        }
    },
}


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(text: str) -> None:
    print(text.rstrip(), flush=True)


def condition(custom: CustomObjectsApi, kind: str) -> str | None:
    pool: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, "default", "ippools", "net-48"
    )
    for entry in (pool.get("status") or {}).get("conditions") or []:
        if entry["type"] == kind:
            return str(entry["status"])
    return None


def main() -> int:
    reason = skip_reason()
    if reason is not None:
        print(f"make demo needs network namespaces and DHCP clients: {reason}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vm-dhcp-demo-"))
    say(f"starting the test API server (logs in {work})")
    cluster = start_cluster(work / "k8s")
    with ExitStack() as stack:
        stack.callback(stop_cluster, cluster)
        api = stack.enter_context(cluster.api_client())
        prepare_cluster(api)
        create_namespace(api, AGENTS)
        grant_agent(api, AGENTS)
        agent_kubeconfig = cluster.mint(f"system:serviceaccount:{AGENTS}:vm-dhcp-agent")
        custom = CustomObjectsApi(api)

        say("starting vm-dhcp-webhook, vm-dhcp-controller and the node simulator")
        port = free_port()
        webhook_log = (work / "webhook.log").open("w")
        stack.callback(webhook_log.close)
        webhook = subprocess.Popen(
            [
                str(WEBHOOK), "--name", "vm-dhcp-webhook", "--namespace", AGENTS,
                "--https-port", str(port), "--listen-address", "127.0.0.1",
                "--advertise-url", f"https://127.0.0.1:{port}",
                "--kubeconfig", str(cluster.kubeconfig),
            ],
            stdout=webhook_log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(_stop, webhook)
        controller = stack.enter_context(
            running_controller(
                [
                    "--name",
                    "vm-dhcp-controller",
                    "--namespace",
                    AGENTS,
                    "--image",
                    "rancher/harvester-vm-dhcp-agent:demo",
                    "--service-account-name",
                    "vm-dhcp-agent",
                    "--no-leader-election",
                    "--agent-replicas",
                    "1",
                    "--enable-cache-dump-api",
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                ],
                work / "controller.log",
            )
        )
        lab = stack.enter_context(Lab(work, network="192.168.48.0/24", server_ip="192.168.48.250"))
        sim = stack.enter_context(NodeSimulator(lab, api, agent_kubeconfig, AGENTS))

        say("kubectl apply: NAD default/net-48, IPPool default/net-48, VirtualMachine test-vm")
        wait_for(lambda: _admission_ready(custom), 30, "the webhook to answer admission requests")
        custom.create_namespaced_custom_object(
            "k8s.cni.cncf.io", "v1", "default", "network-attachment-definitions", NAD
        )
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", "ippools", POOL)
        wait_for(lambda: condition(custom, "AgentReady") == "True", 60, "the agent to be ready")
        custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", "default", "virtualmachines", VM
        )

        say(f"a VM with MAC {MAC} runs dhclient on the VM network")
        client = Dhclient(lab.add_client(mac=MAC), timeout=10)
        lease = wait_for(lambda: _try(client), 60, "dhclient to get a lease")
        show(f"address      {lease.ip}/{lease.prefix}")
        show(f"router       {', '.join(map(str, lease.routers))}")
        show(f"dns          {', '.join(map(str, lease.dns))}")
        show(f"domain       {lease.domain}")
        show(f"search       {', '.join(lease.search)}")
        offline = "(pool.ntp.org does not resolve offline)"
        show(f"ntp          {', '.join(map(str, lease.ntp)) or offline}")
        show(f"lease time   {lease.lease_time} s")
        show(f"server       {lease.server_id}")

        say("kubectl get ippl,vmnetcfg -A")
        show(cluster.kubectl("get", "ippl,vmnetcfg", "-A").stdout)
        say(f"curl localhost:{controller.port}/metrics  (vmdhcpcontroller_*)")
        metrics = str(controller.get("/metrics")[1])
        show("\n".join(line for line in metrics.splitlines() if "vmdhcpcontroller_" in line))
        say(f"curl localhost:{controller.port}/ipams/default/net-48")
        show(json.dumps(controller.get("/ipams/default/net-48")[1], indent=2))
        say(f"curl localhost:{controller.port}/caches/default/net-48")
        show(json.dumps(controller.get("/caches/default/net-48")[1], indent=2))
        say("curl localhost:8080/leases  (inside the agent pod's namespace)")
        pod = sim.pod("default-net-48-agent")
        if pod is not None:
            show(
                json.dumps(json.loads(pod.netns.curl("http://127.0.0.1:8080/leases")[1]), indent=2)
            )

        if os.environ.get("DEMO_KEEP"):
            say("running; press Ctrl-C to stop and clean up")
            show(f"export KUBECONFIG={cluster.kubeconfig}")
            show(f"controller: http://127.0.0.1:{controller.port}  logs: {work}")
            if pod is not None:
                show(f"agent: ip netns exec {pod.netns.name} curl -s localhost:8080/leases")
            show(f"VM: ip netns exec {client.ns.name} ip address show eth0")
            with suppress(KeyboardInterrupt):
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        else:
            say("done; cleaning up (DEMO_KEEP=1 make demo keeps it running to explore)")
    return 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _admission_ready(custom: CustomObjectsApi) -> bool:
    """True once a pool with a bad range is refused by our webhook (dry run)."""
    bad = json.loads(json.dumps(POOL))
    bad["metadata"]["name"] = "probe"
    bad["spec"]["ipv4Config"]["pool"] = {"start": "192.168.48.90", "end": "192.168.48.80"}
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", "ippools", bad, dry_run="All"
        )
    except Exception as exc:
        return "cannot create IPPool" in str(getattr(exc, "body", exc))
    return False


def _try(client: Dhclient) -> Any:
    try:
        return client.acquire()
    except Exception:
        return None


if __name__ == "__main__":
    began = time.monotonic()
    code = main()
    print(f"\n(demo took {time.monotonic() - began:.0f} s)", flush=True)
    sys.exit(code)

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SEED = Path(__file__).resolve().parents[1] / "data" / "ippool-net-48.yaml"


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_module_entry_without_component_prints_usage() -> None:
    done = run(sys.executable, "-m", "vmdhcp")
    assert done.returncode == 2
    assert "usage:" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "one of --ippool-ref NAMESPACE/NAME or --ippool-file PATH is required"),
        (("--ippool-ref", "nonamespace"), "is not NAMESPACE/NAME"),
        (("--ippool-file", "/nonexistent.yaml"), "no such file"),
        (("--bogus",), "unrecognized arguments"),
    ],
)
def test_agent_bad_flags_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    done = run(BIN / "vm-dhcp-agent", *argv)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_agent_missing_interface_is_one_line_and_exits_1() -> None:
    done = run(
        BIN / "vm-dhcp-agent", "--ippool-file", SEED, "--nic", "vdnope0", "--http-port", "18099"
    )
    assert done.returncode == 1
    assert "interface vdnope0 not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "ERROR" in line]) == 1


def test_agent_version() -> None:
    done = run(BIN / "vm-dhcp-agent", "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("vm-dhcp-agent ")


# -- vm-dhcp-webhook ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "--namespace (or the NAMESPACE environment variable) is required"),
        (("--namespace", "Bad_NS"), "--namespace 'Bad_NS' is not a namespace name"),
        (("--namespace", "x", "--name", "Web.hook"), "--name 'Web.hook' is not a valid name"),
        (("--namespace", "x", "--https-port", "0"), "--https-port 0 is not a port number"),
        (("--namespace", "x", "--https-port", "http"), "invalid int value: 'http'"),
        (("--namespace", "x", "--service-cidr", "10.53.0.0"), "is not an IPv4 CIDR"),
        (
            ("--namespace", "x", "--advertise-url", "http://127.0.0.1:8443"),
            "--advertise-url 'http://127.0.0.1:8443' is not https://HOST:PORT",
        ),
        (("--namespace", "x", "--advertise-url", "https://:8443"), "is not https://HOST:PORT"),
        (("--namespace", "x", "--kubeconfig", "/nonexistent"), "--kubeconfig /nonexistent: no"),
        (("--bogus",), "unrecognized arguments: --bogus"),
    ],
)
def test_webhook_bad_flags_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        [BIN / "vm-dhcp-webhook", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "")},  # no NAMESPACE, KUBECONFIG, VM_DHCP_*
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_webhook_unreachable_cluster_is_one_line_and_exits_1(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    done = run(BIN / "vm-dhcp-webhook", "--namespace", "x", "--kubeconfig", kubeconfig)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert "ERROR vmdhcp.webhook: cannot reach the Kubernetes API server:" in line


def test_webhook_version() -> None:
    done = run(BIN / "vm-dhcp-webhook", "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("vm-dhcp-webhook ")


def test_webhook_flags_and_environment() -> None:
    from vmdhcp.webhook.config import load_config

    env = {
        "NAMESPACE": "harvester-system",
        "VM_DHCP_WEBHOOK_NAME": "vm-dhcp-webhook-x",
        "VM_DHCP_AGENT_NAME": "not-this-one",  # upstream's --name read this by mistake
        "VM_DHCP_WEBHOOK_DEBUG": "true",
        "KUBECONFIG": "/does/not/exist",  # absent file: in-cluster configuration, as upstream
    }
    config = load_config([], env)
    assert (config.name, config.namespace, config.https_port) == (
        "vm-dhcp-webhook-x",
        "harvester-system",
        8443,
    )
    assert str(config.service_cidr) == "10.53.0.0/16"
    assert (config.advertise_url, config.kubeconfig, config.log_level) == (
        None,
        "/does/not/exist",
        "DEBUG",
    )
    flags = load_config(
        [
            "--name",
            "wh",
            "--namespace",
            "ns",
            "--https-port",
            "9443",
            "--service-cidr",
            "10.43.0.0/16",
            "--advertise-url",
            "https://127.0.0.1:9443/",
            "--trace",
            "--threadiness",
            "5",
        ],
        env,
    )
    assert (flags.name, flags.namespace, flags.https_port) == ("wh", "ns", 9443)
    assert (str(flags.service_cidr), flags.advertise_url) == (
        "10.43.0.0/16",
        "https://127.0.0.1:9443",
    )
    assert (flags.advertise_host, flags.log_level) == ("127.0.0.1", "TRACE")

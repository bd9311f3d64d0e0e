import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agentproc import free_port

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
        "KUBECONFIG": "/does/not/exist",  # passed on; a missing file is refused on connecting
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


# -- all three: a missing kubeconfig, --help ------------------------------------------------

MISSING = "/nonexistent/kubeconfig"


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("vm-dhcp-controller", ("--namespace", "x", "--image", "agent:v1")),
        ("vm-dhcp-agent", ("--ippool-ref", "ns/pool", "--dry-run")),
    ],
)
def test_a_kubeconfig_that_does_not_exist_is_named_not_replaced_by_in_cluster(
    program: str, argv: tuple[str, ...]
) -> None:
    """Upstream falls back to the in-cluster configuration and fails with "Service
    host/port is not set"; here the path given is named."""
    done = subprocess.run(
        [BIN / program, *argv, "--http-port", str(free_port()), "--kubeconfig", MISSING],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"--kubeconfig {MISSING}: no such file")
    assert "Service host/port" not in done.stderr


def options(help_text: str) -> dict[str, str]:
    """`--flag` -> its help text (whitespace folded), from argparse's --help output."""
    found: dict[str, str] = {}
    flag = None
    for line in help_text.split("options:", 1)[1].splitlines():
        stripped = line.strip()
        if line.startswith("  -") and not line.startswith("    "):
            words = stripped.split()
            flag = next(w.rstrip(",") for w in words if w.startswith("--"))
            head = stripped.split("  ", 1)
            found[flag] = head[1].strip() if len(head) == 2 else ""
        elif flag is not None and stripped:
            found[flag] = f"{found[flag]} {stripped}".strip()
    return found


#: Per program: flag -> what its help must say (its environment variable, default or
#: "required"). Every other flag must have some help text too.
HELP = {
    "vm-dhcp-controller": {
        "--name": ["env VM_DHCP_CONTROLLER_NAME", "default vm-dhcp-controller"],
        "--namespace": ["env AGENT_NAMESPACE", "required"],
        "--image": ["env AGENT_IMAGE", "required unless --no-agent"],
        "--service-account-name": ["env AGENT_SERVICE_ACCOUNT_NAME", "default default"],
        "--leader-election-namespace": ["default kube-system"],
        "--leader-election-lease-duration": ["default 15"],
        "--leader-election-renew-deadline": ["default 10"],
        "--leader-election-retry-period": ["default 2"],
        "--agent-replicas": ["env AGENT_REPLICAS", "default 2"],
        "--agent-replace-after": ["env AGENT_REPLACE_AFTER", "default 30"],
        "--kubeconfig": ["env KUBECONFIG", "default: the in-cluster configuration"],
        "--service-cidr": ["default 10.53.0.0/16"],
        "--http-address": ["default 0.0.0.0"],
        "--http-port": ["default 8080"],
        "--resync-period": ["default 300"],
        "--debug": ["env VM_DHCP_CONTROLLER_DEBUG"],
        "--trace": ["env VM_DHCP_CONTROLLER_TRACE"],
    },
    "vm-dhcp-agent": {
        "--name": ["env VM_DHCP_AGENT_NAME or POD_NAME", "required with --leader-election"],
        "--leader-election": ["env VM_DHCP_AGENT_LEADER_ELECTION"],
        "--namespace": ["env POD_NAMESPACE", "required with --leader-election"],
        "--kubeconfig": ["env KUBECONFIG", "default: the in-cluster configuration"],
        "--kubecontext": ["env KUBECONTEXT"],
        "--ippool-ref": ["env IPPOOL_REF", "required"],
        "--ippool-file": ["env IPPOOL_FILE"],
        "--nic": ["default eth1"],
        "--http-address": ["default 0.0.0.0"],
        "--http-port": ["default 8080"],
        "--reply-cache-size": ["env VM_DHCP_AGENT_REPLY_CACHE_SIZE", "default 4096"],
        "--debug": ["env VM_DHCP_AGENT_DEBUG"],
        "--trace": ["env VM_DHCP_AGENT_TRACE"],
    },
    "vm-dhcp-webhook": {
        "--name": ["env VM_DHCP_WEBHOOK_NAME", "default vm-dhcp-webhook"],
        "--namespace": ["env NAMESPACE", "required"],
        "--https-port": ["default 8443"],
        "--listen-address": ["default 0.0.0.0"],
        "--service-cidr": ["default 10.53.0.0/16"],
        "--kubeconfig": ["env KUBECONFIG", "default: the in-cluster configuration"],
        "--debug": ["env VM_DHCP_WEBHOOK_DEBUG"],
        "--trace": ["env VM_DHCP_WEBHOOK_TRACE"],
    },
}


@pytest.mark.parametrize("program", sorted(HELP))
def test_help_shows_required_flags_environment_and_defaults(program: str) -> None:
    done = subprocess.run(
        [BIN / program, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "COLUMNS": "1000"},  # no wrapping
    )
    assert done.returncode == 0, done.stderr
    described = options(done.stdout)
    assert set(HELP[program]) <= set(described), sorted(set(HELP[program]) - set(described))
    missing = {
        flag: [phrase for phrase in phrases if phrase not in described[flag]]
        for flag, phrases in HELP[program].items()
    }
    assert {flag: gaps for flag, gaps in missing.items() if gaps} == {}, done.stdout
    bare = [flag for flag, text in described.items() if not text]
    assert bare == [], f"flags without help: {bare}"
    assert "Required:" in done.stdout.split("options:", 1)[0]

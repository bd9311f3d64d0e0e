import subprocess
import sys
from pathlib import Path

import pytest

from vmdhcp.controller.config import ConfigError, Image, load_config, parse_image


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        # upstream's TestParseImageNameAndTag table
        (
            "myregistry.local:5000/rancher/harvester-vm-dhcp-controller:v0.3.3",
            Image("myregistry.local:5000/rancher/harvester-vm-dhcp-controller", "v0.3.3"),
        ),
        (
            "rancher/harvester-vm-dhcp-controller:v0.3.3",
            Image("rancher/harvester-vm-dhcp-controller", "v0.3.3"),
        ),
        (
            "rancher/harvester-vm-dhcp-controller",
            Image("rancher/harvester-vm-dhcp-controller", "latest"),
        ),
        (
            "myregistry.local:5000/rancher/harvester-vm-dhcp-controller",
            Image("myregistry.local:5000/rancher/harvester-vm-dhcp-controller", "latest"),
        ),
    ],
)
def test_image_references(reference: str, expected: Image) -> None:
    assert parse_image(reference) == expected
    assert str(expected) == (
        reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:latest"
    )


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("rancher/harvester-vm-dhcp-controller:", "invalid image name: colon without tag"),
        (
            "rancher/harvester-vm-dhcp-controller:v0.3.3:latest",
            "invalid image name: multiple colons found",
        ),
        (
            "r.local:5000/rancher/harvester-vm-dhcp-controller:v0.3.3:latest",
            "multiple colons found",
        ),
    ],
)
def test_bad_image_references(reference: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_image(reference)


def test_flags_and_environment() -> None:
    env = {
        "AGENT_NAMESPACE": "harvester-system",
        "AGENT_IMAGE": "rancher/agent:v1",
        "AGENT_SERVICE_ACCOUNT_NAME": "sa",
    }
    config = load_config(["--no-dhcp", "--enable-cache-dump-api"], env)
    assert config.agent_namespace == "harvester-system"
    assert config.agent_image == Image("rancher/agent", "v1")
    assert config.agent_service_account == "sa"
    assert config.no_dhcp
    assert config.cache_dump_api
    assert config.leader_election
    assert config.install_crds
    assert load_config(["--namespace", "x", "--image", "a:b"], env).agent_namespace == "x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--namespace (AGENT_NAMESPACE) is required"),
        (["--namespace", "n"], "--image (AGENT_IMAGE) is required unless --no-agent"),
        (["--namespace", "n", "--image", "a:"], "colon without tag"),
        (["--namespace", "n", "--no-agent", "--http-port", "99999"], "is not a port number"),
    ],
)
def test_bad_configuration(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, {})
    assert message in str(info.value)


def test_console_script_reports_bad_flags_in_one_line() -> None:
    done = subprocess.run(
        [Path(sys.executable).parent / "vm-dhcp-controller", "--image", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("vm-dhcp-controller: error: --namespace (AGENT_NAMESPACE) is")
    assert done.stderr.count("\n") == 1


def test_agent_replicas_default_to_two_from_the_flag_or_the_environment() -> None:
    argv = ["--namespace", "n", "--image", "a:b"]
    assert load_config(argv, {}).agent_replicas == 2
    assert load_config(argv, {"AGENT_REPLICAS": "3"}).agent_replicas == 3
    assert (
        load_config([*argv, "--agent-replicas", "1"], {"AGENT_REPLICAS": "3"}).agent_replicas == 1
    )
    assert load_config([*argv, "--agent-replicas", "9"], {}).agent_replicas == 9


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--agent-replicas", "0"], {}),
        (["--agent-replicas", "10"], {}),
        (["--agent-replicas", "two"], {}),
        (["--agent-replicas", "-1"], {}),
        ([], {"AGENT_REPLICAS": "many"}),
        ([], {"AGENT_REPLICAS": "0"}),
    ],
)
def test_bad_agent_replicas(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"--agent-replicas \(AGENT_REPLICAS\) .* from 1 to 9"):
        load_config(["--namespace", "n", "--image", "a:b", *argv], env)

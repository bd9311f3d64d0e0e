from pathlib import Path

import pytest

from vmdhcp.agent.config import ConfigError, load_config


def test_upstream_flags_and_defaults() -> None:
    config = load_config(["--ippool-ref", "default/net-48", "--name", "a"], {})
    assert (config.ippool_namespace, config.ippool_name) == ("default", "net-48")
    assert config.nic == "eth1"
    assert config.http_port == 8080
    assert not config.dry_run
    assert config.log_level == "INFO"


def test_environment_supplies_upstreams_variables() -> None:
    env = {
        "IPPOOL_REF": "team/pool",
        "VM_DHCP_AGENT_NAME": "default-net-48-agent",
        "KUBECONFIG": "/k",
        "VM_DHCP_AGENT_DEBUG": "true",
    }
    config = load_config([], env)
    assert config.ippool_ref == "team/pool"
    assert config.name == "default-net-48-agent"
    assert config.kubeconfig == "/k"
    assert config.log_level == "DEBUG"
    assert load_config(["--trace"], env).log_level == "TRACE"


def test_flags_win_over_environment() -> None:
    config = load_config(["--ippool-ref", "a/b"], {"IPPOOL_REF": "c/d"})
    assert config.ippool_ref == "a/b"


def test_file_mode(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("{}")
    config = load_config(["--ippool-file", str(pool), "--http-port", "9000"], {})
    assert config.ippool_file == pool
    assert config.ippool_namespace is None
    assert config.http_port == 9000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of --ippool-ref NAMESPACE/NAME or --ippool-file PATH is required"),
        (["--ippool-ref", "net-48"], "is not NAMESPACE/NAME"),
        (["--ippool-ref", "a/b/c"], "is not NAMESPACE/NAME"),
        (["--ippool-ref", "/b"], "is not NAMESPACE/NAME"),
        (["--ippool-file", "/nonexistent/pool.yaml"], "no such file"),
        (["--ippool-ref", "a/b", "--http-port", "0"], "is not a port number"),
        (["--ippool-ref", "a/b", "--http-port", "x"], "invalid int value"),
        (["--ippool-ref", "a/b", "--nic", "a-very-long-interface"], "is not an interface name"),
        (["--ippool-ref", "a/b", "--bogus"], "unrecognized arguments: --bogus"),
        (["--ippool-ref", "a/b", "--rogue-check-interval", "0.1"], "neither 0 .off. nor"),
        (["--ippool-ref", "a/b", "--rogue-check-interval", "-1"], "neither 0 .off. nor"),
        (["--ippool-ref", "a/b", "--rogue-check-interval", "nan"], "neither 0 .off. nor"),
        (["--ippool-ref", "a/b", "--rogue-check-interval", "x"], "invalid float value"),
    ],
)
def test_bad_input_is_one_clear_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, {})


def test_the_rogue_check_interval_flag_and_variable() -> None:
    assert load_config(["--ippool-ref", "a/b"], {}).rogue_check_interval == 60.0
    env = {"VM_DHCP_AGENT_ROGUE_CHECK_INTERVAL": "0"}
    assert load_config(["--ippool-ref", "a/b"], env).rogue_check_interval == 0
    argv = ["--ippool-ref", "a/b", "--rogue-check-interval", "1.5"]
    assert load_config(argv, env).rogue_check_interval == 1.5

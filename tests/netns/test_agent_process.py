"""The agent as a process: live pool changes, signals, and errors on the command line."""

from __future__ import annotations

import signal
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.netns.conftest import DNS, SERVER_IP, client_ip, client_mac, pool_spec
from tests.netns.lab import (
    Agent,
    Lab,
    Udhcpc,
    agent_command,
    udp_port_bound,
    wait_for,
    write_ippool,
)

pytestmark = pytest.mark.netns

StartAgent = Callable[..., tuple[Path, Agent]]
NEW_DNS = (IPv4Address("10.77.0.153"),)


def test_live_dns_change_reaches_the_next_renewal(lab: Lab, agent_factory: StartAgent) -> None:
    spec = pool_spec()
    pool_file, agent = agent_factory(spec)
    pid = agent.pid
    ns = lab.add_client(client_mac(1))
    udhcpc = Udhcpc(ns)
    bound = udhcpc.start()
    assert (bound.ip, bound.dns) == (client_ip(1), DNS)

    spec.dns = NEW_DNS
    write_ippool(pool_file, spec)
    wait_for(
        "the agent's /leases to show the new DNS",
        lambda: agent.leases()[client_mac(1)]["DNS"] == [str(a) for a in NEW_DNS],
        10.0,
        interval=0.05,
        details=agent.tail,
    )
    assert agent.proc is not None
    assert agent.proc.alive()
    assert agent.pid == pid

    renewed = udhcpc.renew()
    assert renewed.reason == "renew"
    assert (renewed.ip, renewed.dns, renewed.server_id) == (client_ip(1), NEW_DNS, SERVER_IP)
    udhcpc.stop()


def test_broken_pool_file_keeps_the_previous_leases(lab: Lab, agent_factory: StartAgent) -> None:
    pool_file, agent = agent_factory()
    assert agent.proc is not None
    proc = agent.proc
    pool_file.write_text("spec: [this is: not an IPPool\n")
    # the agent reads the file within about 0.5 s; it says so in its log (the error counter
    # vmdhcp_agent_pool_reloads_total{result="error"} counts only pools that parse)
    wait_for(
        "the agent to refuse the broken file",
        lambda: "keeping the previous leases" in proc.output(),
        10.0,
        interval=0.05,
        details=agent.tail,
    )
    result = Udhcpc(lab.add_client(client_mac(2))).acquire()
    assert result.ip == client_ip(2)
    assert agent.metric("vmdhcp_agent_leases") == len(pool_spec().allocated)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_agent_stops_on_signal_with_exit_0(
    lab: Lab, agent_factory: StartAgent, sig: signal.Signals
) -> None:
    _, agent = agent_factory()
    assert udp_port_bound(lab.srv, 67)
    rc = agent.stop(sig)
    assert rc == 0, agent.tail()
    assert "Traceback" not in agent.proc.output() if agent.proc else True
    assert not udp_port_bound(lab.srv, 67)


def test_missing_interface_is_a_one_line_error(lab: Lab) -> None:
    pool_file = write_ippool(lab.workdir / "pool.yaml", pool_spec())
    done = lab.srv.run(
        [*agent_command(), "--ippool-file", str(pool_file), "--nic", "nosuch0"],
        timeout=30,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert len(lines) == 1, done.stderr
    assert "nosuch0" in lines[0]


def test_bad_flag_is_an_error_without_traceback(lab: Lab) -> None:
    done = lab.srv.run([*agent_command(), "--no-such-flag"], timeout=30, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert "--no-such-flag" in done.stderr.strip().splitlines()[-1]


def test_missing_pool_file_is_an_error_without_traceback(lab: Lab) -> None:
    done = lab.srv.run(
        [*agent_command(), "--ippool-file", str(lab.workdir / "absent.yaml"), "--nic", "eth1"],
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

"""Rogue DHCP server detection on a real segment: a dnsmasq started on the lab's bridge is
found by the serving agent's probe (and by the answers of other servers it sees anyway),
shown in its metrics, and forgotten once it stops, while the agent keeps serving its own
clients. The Event and the IPPool condition are in tests/integration/test_rogue_report.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from tests.netns.conftest import NETWORK, SERVER_IP, UNKNOWN_MAC, client_ip, client_mac, pool_spec
from tests.netns.lab import (
    Agent,
    Dhclient,
    Dnsmasq,
    Lab,
    Netns,
    PoolSpec,
    craft,
    metric_value,
    tail,
    wait_for,
    write_ippool,
)

pytestmark = pytest.mark.netns
log = logging.getLogger(__name__)

ROGUE_IP = NETWORK[9]
INTERVAL = 1.0
ROUNDS = "vmdhcp_agent_rogue_probes_total"
COUNT = "vmdhcp_agent_rogue_servers"
INFO = "vmdhcp_agent_rogue_server_info"


class RogueDnsmasq(Dnsmasq):
    """A forgotten dnsmasq: a dynamic range on the VM network, answering any MAC but the
    ones it is told to ignore (so that a test can show the agent still serves those)."""

    def __init__(
        self, ns: Netns, ignore: tuple[str, ...] = (), network: IPv4Network = NETWORK
    ) -> None:
        super().__init__(ns, PoolSpec(network=network, server_ip=network[9]))
        self.ignore = ignore

    def config(self) -> str:
        network = self.spec.network
        lines = [
            "port=0",
            f"interface={self.ns.iface}",
            "bind-interfaces",
            f"dhcp-range={network[60]},{network[80]},{network.netmask},600",
            "dhcp-leasefile=" + str(self.ns.workdir / "rogue.leases"),
            "no-ping",
            "log-dhcp",
            *(f"dhcp-host={mac},ignore" for mac in self.ignore),
        ]
        return "\n".join(lines) + "\n"


def rogue_node(lab: Lab, address: IPv4Address = ROGUE_IP) -> Netns:
    """A namespace on the bridge with an address of the network, for the rogue server."""
    node = lab.add_client()
    node.set_address(IPv4Interface(f"{address}/{lab.network.prefixlen}"))
    return node


@pytest.fixture
def agent_with(lab: Lab) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        rc = agent.stop()
        assert rc == 0, f"agent exited {rc} on SIGTERM\n{agent.tail()}"


def start(lab: Lab, started: list[Agent], interval: float) -> Agent:
    pool_file = write_ippool(lab.workdir / "pool.yaml", pool_spec())
    args = ("--enable-cache-dump-api", "--rogue-check-interval", str(interval))
    agent = Agent(lab.srv, pool_file, extra_args=args).start()
    started.append(agent)
    return agent


def test_a_dnsmasq_on_the_segment_is_reported_then_forgotten_while_clients_are_served(
    lab: Lab, agent_with: list[Agent]
) -> None:
    agent = start(lab, agent_with, INTERVAL)
    # probes went out and nothing but our own server is there: nothing reported
    wait_for("two probes", lambda: agent.metric(ROUNDS) >= 2, 10 * INTERVAL, details=agent.tail)
    assert agent.metric(COUNT) == 0

    node = rogue_node(lab)
    rogue = RogueDnsmasq(node, ignore=(client_mac(1),)).start()
    began, probes_before = time.monotonic(), agent.metric(ROUNDS)

    def detected() -> float | None:
        """The probes sent since dnsmasq started, once it is reported (one scrape)."""
        text = agent.metrics()
        if metric_value(text, COUNT) != 1:
            return None
        return metric_value(text, ROUNDS) - probes_before

    # within two intervals, counted in probes (not wall time: a loaded machine stretches
    # both alike); the wall-time limit is only a backstop
    probes = wait_for(
        "the rogue dnsmasq to be reported",
        detected,
        30 * INTERVAL,
        details=lambda: agent.tail() + "\n" + tail(rogue.log),
    )
    assert probes is not None
    assert probes <= 2, f"reported only after {probes:g} probes since dnsmasq started"
    detected_after = time.monotonic() - began
    text = agent.metrics()
    assert metric_value(text, INFO, server_id=str(ROGUE_IP), mac=node.mac) == 1
    assert metric_value(text, INFO) == 1  # that one series only
    assert "another dhcp server answers on eth1" in log_of(agent)
    log.info("rogue dnsmasq reported %.2fs after it bound port 67", detected_after)

    # the agent keeps serving its own client, with a foreign server on the segment
    lease = Dhclient(lab.add_client(client_mac(1)), timeout=10).acquire()
    assert lease.ip == client_ip(1)
    assert lease.server_id == SERVER_IP
    # whose OFFER and ACK are ours, not a foreign server's
    assert agent.metric(COUNT) == 1
    assert metric_value(agent.metrics(), INFO) == 1
    # and only ever probed: the foreign server never got a REQUEST from the probe MAC
    assert not any("DHCPREQUEST" in line for line in rogue_log_lines(rogue, probe_mac(agent)))

    rogue.stop()
    stopped, probes_before = time.monotonic(), agent.metric(ROUNDS)
    # seen last just before the stop: forgotten after three intervals without it (checked
    # at a probe round, every interval +-10%): within five probe rounds
    wait_for(
        "the rogue dnsmasq to be forgotten",
        lambda: agent.metric(COUNT) == 0,
        30 * INTERVAL,
        details=agent.tail,
    )
    forgotten_after = time.monotonic() - stopped
    assert agent.metric(ROUNDS) - probes_before <= 5
    assert forgotten_after >= 2 * INTERVAL * 0.9, "forgotten before three intervals had passed"
    assert metric_value(agent.metrics(), INFO) == 0
    log.info("forgotten %.2fs after it stopped", forgotten_after)


def test_other_servers_answers_seen_anyway_are_noticed_between_probes(
    lab: Lab, agent_with: list[Agent]
) -> None:
    """A long interval: the first probe goes out before dnsmasq starts, so what finds it is
    its broadcast OFFER to a client asking for broadcast, which reaches the agent's NIC."""
    agent = start(lab, agent_with, 60.0)
    wait_for("the first probe", lambda: agent.metric(ROUNDS) == 1, 10, details=agent.tail)
    node = rogue_node(lab)
    rogue = RogueDnsmasq(node).start()
    client = lab.add_client(UNKNOWN_MAC)
    replies = craft(client, type="discover", broadcast=True, timeout=3)
    offers = [r for r in replies if r["message_type"] == 2]
    assert offers, f"dnsmasq did not offer\n{tail(rogue.log)}"
    assert {r["ip_src"] for r in offers} == {str(ROGUE_IP)}  # our agent stays silent
    wait_for("the foreign OFFER to be noticed", lambda: agent.metric(COUNT) == 1, 3)
    assert metric_value(agent.metrics(), INFO, server_id=str(ROGUE_IP), mac=node.mac) == 1
    assert agent.metric(ROUNDS) == 1  # no probe found it
    rogue.stop()


def test_the_probe_is_a_discover_from_a_mac_of_its_own_and_our_server_ignores_it(
    lab: Lab, agent_with: list[Agent]
) -> None:
    """What the probe looks like on the wire, as the foreign dnsmasq logs it; the agent's
    own server never sees its probe (sent below the IP stack) and counts nothing for it."""
    node = rogue_node(lab)
    rogue = RogueDnsmasq(node).start()
    agent = start(lab, agent_with, INTERVAL)
    wait_for("a probe answered", lambda: agent.metric(COUNT) == 1, 10, details=agent.tail)
    mac = probe_mac(agent)
    first = int(mac.split(":")[0], 16)
    assert first & 0x02, "not locally administered"
    assert not first & 0x01, "not unicast"
    assert mac not in {m.lower() for m in pool_spec().mac_to_ip()}
    lines = rogue_log_lines(rogue, mac)
    assert any("DHCPDISCOVER" in line for line in lines), tail(rogue.log)
    assert not any("DHCPREQUEST" in line for line in lines)
    text = agent.metrics()
    assert metric_value(text, "vmdhcp_agent_packets_received_total", message_type="discover") == 0
    assert metric_value(text, "vmdhcp_agent_rogue_frames_total", result="own") == 0
    rogue.stop()


def log_of(agent: Agent) -> str:
    assert agent.proc is not None
    return agent.proc.output()


def probe_mac(agent: Agent) -> str:
    for line in log_of(agent).splitlines():
        if "probe mac " in line:
            return line.rsplit("probe mac ", 1)[1].rstrip(")").strip()
    raise AssertionError(f"the agent did not log its probe MAC\n{agent.tail()}")


def rogue_log_lines(rogue: RogueDnsmasq, mac: str) -> list[str]:
    return [line for line in Path(rogue.log).read_text().splitlines() if mac in line.lower()]

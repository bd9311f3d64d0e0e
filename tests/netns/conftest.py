"""Fixtures of the network-namespace suite (see tests/netns/lab.py for the lab itself).

Every test here is marked `netns`; it is skipped, with the reason, only when not root or when a
binary it needs is missing. Fixtures: `lab` (a fresh `Lab`, torn down after the test),
`served` (one lab with the agent serving `POOL` for a whole module) and `agent_factory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tests.netns.lab import (
    ANCHOR_BINARIES,
    CLIENT_BINARIES,
    Agent,
    Lab,
    Netns,
    PoolSpec,
    perfdhcp_macs,
    skip_reason,
    sweep_stale_labs,
    write_ippool,
)

NETWORK = IPv4Network("10.77.0.0/24")
SERVER_IP = IPv4Address("10.77.0.2")
ROUTER = IPv4Address("10.77.0.1")
DNS = (IPv4Address("10.77.0.53"), IPv4Address("10.77.0.54"))
NTP = ("10.77.0.123",)
DOMAIN = "lab.example"
SEARCH = ("lab.example", "svc.lab.example")
LEASE_TIME = 7200
#: client n (1..40) has MAC 02:aa:00:00:00:<n> and address 10.77.0.<100+n>
CLIENTS = 40
UPPER_MAC = "02:AA:00:00:0F:0E"  # written upper-case in the pool file
UPPER_IP = IPv4Address("10.77.0.99")
UNKNOWN_MAC = "02:ee:00:00:00:01"
RELAY_IP = IPv4Address("10.77.0.3")
RELAY_BASE = "02:bb:00:00:00:00"  # perfdhcp's clients: RELAY_BASE + r, r < RELAY_CLIENTS
RELAY_CLIENTS = 8


def client_mac(n: int) -> str:
    return f"02:aa:00:00:00:{n:02x}"


def client_ip(n: int) -> IPv4Address:
    return NETWORK[100 + n]


def pool_spec(**changes: object) -> PoolSpec:
    allocated = {client_ip(n): client_mac(n) for n in range(1, CLIENTS + 1)}
    allocated[UPPER_IP] = UPPER_MAC
    for r, mac in enumerate(perfdhcp_macs(RELAY_BASE, RELAY_CLIENTS)):
        allocated[NETWORK[200 + r]] = mac
    spec = PoolSpec(
        network=NETWORK,
        server_ip=SERVER_IP,
        router=ROUTER,
        dns=DNS,
        domain_name=DOMAIN,
        domain_search=SEARCH,
        ntp=NTP,
        lease_time=LEASE_TIME,
        start=NETWORK[10],
        end=NETWORK[250],
        exclude=(NETWORK[250],),
        allocated=allocated,
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


@pytest.fixture(scope="session")
def netns_env() -> None:
    """Skip when the lab cannot run here; otherwise sweep labs of runs that died."""
    reason = skip_reason(CLIENT_BINARIES)
    if reason:
        pytest.skip(reason)
    sweep_stale_labs()


@pytest.fixture
def anchors(netns_env: None) -> None:
    """Also needs the anchor servers and perfdhcp."""
    reason = skip_reason(ANCHOR_BINARIES)
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab(netns_env: None, tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, network=NETWORK, server_ip=SERVER_IP) as fresh:
        yield fresh


@dataclass
class Served:
    """A lab with the agent serving `pool_spec()` from `pool_file`."""

    lab: Lab
    spec: PoolSpec
    pool_file: Path
    agent: Agent
    used: set[int] = field(default_factory=set)

    def client(self, n: int | None = None, mac: str | None = None) -> Netns:
        """A new client namespace: client n's MAC, or `mac`, or the next unused client's."""
        if mac is None:
            if n is None:
                n = next(i for i in range(1, CLIENTS + 1) if i not in self.used)
            self.used.add(n)
            mac = client_mac(n)
        return self.lab.add_client(mac)


def start_agent(lab: Lab, spec: PoolSpec, name: str = "pool.yaml") -> tuple[Path, Agent]:
    pool_file = write_ippool(lab.workdir / name, spec, "json" if name.endswith(".json") else "yaml")
    return pool_file, Agent(lab.srv, pool_file).start()


@pytest.fixture(scope="module")
def served(netns_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One agent for the tests of a module that do not change its pool."""
    with Lab(tmp_path_factory.mktemp("netns"), network=NETWORK, server_ip=SERVER_IP) as fresh:
        spec = pool_spec()
        pool_file, agent = start_agent(fresh, spec)
        yield Served(fresh, spec, pool_file, agent)
        rc = agent.stop()
        assert rc == 0, f"agent exited {rc} on SIGTERM\n{agent.tail()}"


@pytest.fixture
def agent_factory(lab: Lab) -> Iterator[Callable[..., tuple[Path, Agent]]]:
    """Start the agent in `lab` on a pool (default `pool_spec()`); stopped at teardown."""
    started: list[Agent] = []

    def start(spec: PoolSpec | None = None, name: str = "pool.yaml") -> tuple[Path, Agent]:
        pool_file, agent = start_agent(lab, spec or pool_spec(), name)
        started.append(agent)
        return pool_file, agent

    yield start
    for agent in started:
        agent.stop()

"""RFC 2131's edges on the wire, with hand-made messages (scapy, tests/netns/craft.py):

- a REQUEST that names this server from a client it has no lease for gets a NAK (3.1 step 4),
  one naming another server or none (INIT-REBOOT) gets silence (4.3.2);
- a DHCPINFORM gets the pool's configuration whoever sends it (3.4);
- a message relayed from a giaddr outside the pool's subnet gets nothing, counted (4.3.1);
- a NAK or INFORM answer remembered by the reply memo never outlives the pool version it was
  computed from.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import (
    DNS,
    NETWORK,
    RELAY_BASE,
    RELAY_CLIENTS,
    ROUTER,
    SERVER_IP,
    Served,
    client_mac,
    pool_spec,
)
from tests.netns.lab import Agent, Lab, Netns, craft, dhcping, perfdhcp_macs, wait_for, write_ippool

pytestmark = pytest.mark.netns

StartAgent = Callable[..., tuple[Path, Agent]]
NAK, ACK, OFFER = 6, 5, 2
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
FREE_IP = NETWORK[60]  # in the pool's subnet, allocated to nobody
OFF_SUBNET_IP = IPv4Address("10.88.0.9")
FOREIGN_RELAY = IPv4Address("10.88.0.1")  # a relay agent on a subnet the pool does not serve
LOCAL_RELAY = NETWORK[5]
#: a MAC the pool has a lease for (perfdhcp's first client: NETWORK[200]); relayed on its behalf
RELAYED_MAC = perfdhcp_macs(RELAY_BASE, RELAY_CLIENTS)[0]
RELAYED_IP = NETWORK[200]

_strangers = iter(range(0x10, 0x100))


def stranger(served: Served) -> Netns:
    """A client namespace whose MAC has no lease in the pool."""
    return served.lab.add_client(mac=f"02:ee:00:00:01:{next(_strangers):02x}")


def metric(agent: Agent, name: str, **labels: str) -> float:
    return agent.metric(f"vmdhcp_agent_{name}_total", **labels)


def wait_metric(agent: Agent, name: str, at_least: float, **labels: str) -> None:
    """The agent counts after it has sent: poll until the count shows."""
    wait_for(
        f"{name}{labels} >= {at_least}",
        lambda: metric(agent, name, **labels) >= at_least,
        5.0,
        interval=0.05,
        details=agent.tail,
    )


def only(replies: list[dict[str, Any]], kind: int) -> dict[str, Any]:
    assert [r["message_type"] for r in replies] == [kind], replies
    return replies[0]


# --- REQUEST: NAK when it names us, silence otherwise --------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"requested": str(FREE_IP)}, "selecting", id="selecting"),
        pytest.param({}, "selecting without option 50", id="selecting-no-50"),
        pytest.param({"ciaddr": str(FREE_IP)}, "rebinding with our 54", id="rebinding-54"),
    ],
)
def test_request_naming_us_without_a_lease_gets_a_nak(
    served: Served, fields: dict[str, Any], message: str
) -> None:
    ns = stranger(served)
    naks = metric(served.agent, "replies_sent", message_type="nak")
    replies = craft(ns, type="request", server_id=str(SERVER_IP), broadcast=False, **fields)
    nak = only(replies, NAK)
    assert (nak["eth_dst"], nak["ip_dst"]) == (BROADCAST_MAC, "255.255.255.255"), message  # 4.1
    assert (nak["yiaddr"], nak["ciaddr"], nak["chaddr"]) == ("0.0.0.0", "0.0.0.0", ns.mac)
    assert nak["options"]["54"] == SERVER_IP.packed.hex()
    assert bytes.fromhex(nak["options"]["56"]) == b"no lease for this client"
    assert "51" not in nak["options"]
    wait_metric(served.agent, "replies_sent", naks + 1, message_type="nak")


def test_init_reboot_for_an_address_of_another_network_gets_a_nak(served: Served) -> None:
    """4.3.2 INIT-REBOOT: NAK "if the requested IP address is incorrect, or is on the wrong
    network" (a wrong address of the subnet: test_clients.py)."""
    ns = served.client()
    replies = craft(ns, type="request", requested=str(OFF_SUBNET_IP), broadcast=False)
    nak = only(replies, NAK)
    assert nak["ip_dst"] == "255.255.255.255"
    assert nak["options"]["54"] == SERVER_IP.packed.hex()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"type": "request", "server_id": "10.77.0.9", "requested": str(FREE_IP)},
                     id="selecting-another-server"),
        pytest.param({"type": "request", "requested": str(FREE_IP)}, id="init-reboot"),
        pytest.param({"type": "discover"}, id="discover"),
    ],
)  # fmt: skip
def test_a_client_without_a_lease_not_naming_us_gets_silence(
    served: Served, fields: dict[str, Any]
) -> None:
    """4.3.2: "If the DHCP server has no record of this client, then it MUST remain silent"."""
    ns = stranger(served)
    before = metric(served.agent, "dropped", reason="unknown_mac")
    assert craft(ns, timeout=1.0, **fields) == []
    wait_metric(served.agent, "dropped", before + 1, reason="unknown_mac")


# --- INFORM: the configuration, whoever asks ----------------------------------------------------


def test_inform_from_a_host_without_a_lease_gets_the_configuration(served: Served) -> None:
    """A host configured by hand (an address no lease names) asks for the rest (3.4)."""
    ns = stranger(served)
    ns.ip("address", "add", f"{FREE_IP}/{NETWORK.prefixlen}", "dev", ns.iface)
    informs = metric(served.agent, "packets_received", message_type="inform")
    replies = craft(ns, type="inform", ciaddr=str(FREE_IP), broadcast=False)
    ack = only(replies, ACK)
    assert (ack["eth_dst"], ack["ip_dst"], ack["dport"]) == (ns.mac, str(FREE_IP), 68)  # 4.3.5
    assert (ack["yiaddr"], ack["ciaddr"]) == ("0.0.0.0", str(FREE_IP))
    options = ack["options"]
    assert not {"51", "58", "59"} & set(options)  # no lease time in an INFORM's ACK
    assert options["54"] == SERVER_IP.packed.hex()
    assert options["1"] == NETWORK.netmask.packed.hex()
    assert options["3"] == ROUTER.packed.hex()
    assert options["6"] == b"".join(a.packed for a in DNS).hex()
    # and a real client: dhcping -i
    done = dhcping(ns, FREE_IP, SERVER_IP, inform=True)
    assert done.returncode == 0, f"dhcping -i got no answer: {done.stdout}{done.stderr}"
    wait_metric(served.agent, "packets_received", informs + 2, message_type="inform")


@pytest.mark.parametrize("ciaddr", ["0.0.0.0", "10.1.2.3"])
def test_inform_without_an_address_of_the_subnet_gets_nothing(served: Served, ciaddr: str) -> None:
    """3.4: the client already has an address (of the pool's subnet: we serve one), and the
    ACK is unicast to it; without one, we would send where a stranger likes."""
    ns = stranger(served)
    dropped = metric(served.agent, "dropped", reason="bad_ciaddr")
    assert craft(ns, timeout=1.0, type="inform", ciaddr=ciaddr, broadcast=False) == []
    wait_metric(served.agent, "dropped", dropped + 1, reason="bad_ciaddr")


def test_a_relay_at_the_subnets_network_address_gets_nothing(served: Served) -> None:
    """No relay agent has the subnet's network address (nor its broadcast, nor ours)."""
    ns = stranger(served)
    dropped = metric(served.agent, "dropped", reason="foreign_subnet")
    network = str(NETWORK.network_address)
    assert craft(ns, timeout=1.0, type="discover", giaddr=network, broadcast=False) == []
    wait_metric(served.agent, "dropped", dropped + 1, reason="foreign_subnet")


# --- relays: only from the pool's subnet --------------------------------------------------------


@pytest.fixture(scope="module")
def relay(served: Served) -> Netns:
    """A relay agent's namespace with two addresses, LOCAL_RELAY and FOREIGN_RELAY; the server
    namespace reaches FOREIGN_RELAY on its link, so that an answer to it would arrive."""
    node = served.lab.add_relay(LOCAL_RELAY)
    node.ip("address", "add", f"{FOREIGN_RELAY}/32", "dev", node.iface)
    served.lab.srv.ip("route", "add", f"{FOREIGN_RELAY}/32", "dev", served.lab.srv.iface)
    return node


def relay_towards(
    served: Served, relay: Netns, kind: str, giaddr: IPv4Address
) -> list[dict[str, Any]]:
    """What a relay agent at `giaddr` gets back for a `kind` it relays for RELAYED_MAC."""
    fields: dict[str, Any] = {"type": kind, "chaddr": RELAYED_MAC, "broadcast": False}
    if kind == "request":
        fields |= {"server_id": str(SERVER_IP), "requested": str(RELAYED_IP)}
    if kind == "inform":
        fields |= {"ciaddr": str(RELAYED_IP)}
    return craft(
        relay,
        timeout=1.5,
        giaddr=str(giaddr),
        src=str(giaddr),
        sport=67,
        dst=str(SERVER_IP),
        eth_dst=served.lab.srv.mac,
        **fields,
    )


KINDS = ["discover", "request", "inform"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_relay_on_the_pools_subnet_is_answered(served: Served, relay: Netns, kind: str) -> None:
    """The control for the next test: the same message from a relay inside the subnet."""
    replies = relay_towards(served, relay, kind, LOCAL_RELAY)
    answer = only(replies, OFFER if kind == "discover" else ACK)
    assert (answer["ip_dst"], answer["dport"]) == (str(LOCAL_RELAY), 67)
    assert answer["giaddr"] == str(LOCAL_RELAY)
    assert answer["yiaddr"] == ("0.0.0.0" if kind == "inform" else str(RELAYED_IP))


@pytest.mark.parametrize("kind", KINDS)
def test_a_relay_outside_the_pools_subnet_gets_nothing(
    served: Served, relay: Netns, kind: str
) -> None:
    # the path back works: the server namespace resolves the foreign relay on its link
    probe = f"import socket; socket.socket(2, 2).sendto(b'x', ('{FOREIGN_RELAY}', 9))"
    served.lab.srv.run([sys.executable, "-c", probe])
    wait_for(
        "the server namespace to resolve the foreign relay",
        lambda: relay.mac in served.lab.srv.ip("neigh", "show", str(FOREIGN_RELAY)),
        5.0,
    )
    dropped = metric(served.agent, "dropped", reason="foreign_subnet")
    send_errors = served.agent.metric("vmdhcp_agent_send_errors_total")
    assert relay_towards(served, relay, kind, FOREIGN_RELAY) == []
    wait_metric(served.agent, "dropped", dropped + 1, reason="foreign_subnet")
    assert served.agent.metric("vmdhcp_agent_send_errors_total") == send_errors


# --- the reply memo and a pool that changes -----------------------------------------------------


def test_a_remembered_nak_does_not_outlive_the_pool_version(
    lab: Lab, agent_factory: StartAgent
) -> None:
    """The same REQUEST (but its xid) is NAKed, NAKed again (computed again: a reply to a
    MAC without a lease is not remembered, so strangers cannot fill the memo), ACKed once
    the pool gives the MAC that address, and NAKed again once it no longer does."""
    spec = pool_spec()
    pool_file, agent = agent_factory(spec)
    ns = lab.add_client("02:ee:00:00:02:01")
    selecting: dict[str, Any] = {
        "type": "request",
        "server_id": str(SERVER_IP),
        "requested": str(FREE_IP),
    }

    def answer() -> dict[str, Any]:
        replies = craft(ns, broadcast=False, **selecting)
        assert len(replies) == 1, replies
        return replies[0]

    def serving(present: bool) -> None:
        write_ippool(pool_file, spec)
        wait_for(
            f"the agent's /leases {'with' if present else 'without'} {ns.mac}",
            lambda: (ns.mac in agent.leases()) is present,
            10.0,
            interval=0.05,
            details=agent.tail,
        )

    assert answer()["message_type"] == NAK
    hits = agent.metric("vmdhcp_agent_reply_cache_total", result="hit")
    assert answer()["message_type"] == NAK
    assert agent.metric("vmdhcp_agent_reply_cache_total", result="hit") == hits

    spec.allocated[FREE_IP] = ns.mac
    serving(True)
    ack = answer()
    assert (ack["message_type"], ack["yiaddr"]) == (ACK, str(FREE_IP))

    del spec.allocated[FREE_IP]
    serving(False)
    assert answer()["message_type"] == NAK


def test_a_remembered_inform_answer_follows_the_pool(lab: Lab, agent_factory: StartAgent) -> None:
    """An INFORM from a host without a lease is answered each time (not from the memo: a
    stranger's reply is not remembered) and gets the pool's new DNS servers once the pool
    changes."""
    spec = pool_spec()
    pool_file, agent = agent_factory(spec)
    ns = lab.add_client("02:ee:00:00:02:02")
    ns.ip("address", "add", f"{FREE_IP}/{NETWORK.prefixlen}", "dev", ns.iface)

    def dns() -> str:
        replies = craft(ns, type="inform", ciaddr=str(FREE_IP), broadcast=False)
        return str(only(replies, ACK)["options"]["6"])

    assert dns() == b"".join(a.packed for a in DNS).hex()
    hits = agent.metric("vmdhcp_agent_reply_cache_total", result="hit")
    assert dns() == b"".join(a.packed for a in DNS).hex()
    assert agent.metric("vmdhcp_agent_reply_cache_total", result="hit") == hits

    new_dns = IPv4Address("10.77.0.153")
    spec.dns = (new_dns,)
    write_ippool(pool_file, spec)
    wait_for(
        "the agent's /leases to show the new DNS",
        lambda: agent.leases()[client_mac(1)]["DNS"] == [str(new_dns)],
        10.0,
        interval=0.05,
        details=agent.tail,
    )
    assert dns() == new_dns.packed.hex()

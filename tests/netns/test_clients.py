"""Real DHCP clients against the agent: each gets its lease and options, in every state."""

from __future__ import annotations

import time
from ipaddress import IPv4Address

import pytest

from tests.netns.conftest import (
    DNS,
    DOMAIN,
    LEASE_TIME,
    NTP,
    RELAY_BASE,
    RELAY_CLIENTS,
    RELAY_IP,
    ROUTER,
    SEARCH,
    SERVER_IP,
    UNKNOWN_MAC,
    UPPER_IP,
    UPPER_MAC,
    Served,
)
from tests.netns.lab import (
    CLIENT_KINDS,
    ClientFailed,
    Dhclient,
    DhcpResult,
    Udhcpc,
    craft,
    dhcping,
    perfdhcp,
    wait_for,
)

pytestmark = pytest.mark.netns

NAK, ACK, OFFER = 6, 5, 2


def assert_full_lease(result: DhcpResult, ip: IPv4Address) -> None:
    """Options 1, 3, 6, 15, 42, 51, 54, 119 as the pool says, and the address."""
    got = {
        "ip": result.ip,
        "prefix (1)": result.prefix,
        "router (3)": result.routers,
        "dns (6)": result.dns,
        "domain (15)": result.domain,
        "ntp (42)": result.ntp,
        "lease time (51)": result.lease_time,
        "server id (54)": result.server_id,
        "search (119)": result.search,
    }
    want = {
        "ip": ip,
        "prefix (1)": 24,
        "router (3)": (ROUTER,),
        "dns (6)": DNS,
        "domain (15)": DOMAIN,
        "ntp (42)": tuple(IPv4Address(a) for a in NTP),
        "lease time (51)": LEASE_TIME,
        "server id (54)": SERVER_IP,
        "search (119)": SEARCH,
    }
    assert got == want, f"{result.client} ({result.reason}) env: {result.env}"


def wait_metric(served: Served, name: str, at_least: float, **labels: str) -> float:
    """The agent counts asynchronously to the client's exit: poll until it shows."""
    return wait_for(
        f"{name}{labels} >= {at_least}",
        lambda: (v := served.agent.metric(name, **labels)) >= at_least and v,
        5.0,
        interval=0.05,
        details=served.agent.tail,
    )


@pytest.mark.parametrize("client", ["dhclient", "udhcpc", "dhcpcd"])
def test_client_gets_its_address_and_options(served: Served, client: str) -> None:
    ns = served.client()
    result = CLIENT_KINDS[client](ns).acquire()
    assert_full_lease(result, served.spec.mac_to_ip()[ns.mac])


def test_upper_case_mac_in_pool_gets_its_lease(served: Served) -> None:
    ns = served.client(mac=UPPER_MAC.lower())  # an interface MAC is lower-case on the wire
    result = Udhcpc(ns).acquire()
    assert_full_lease(result, UPPER_IP)
    assert UPPER_MAC.lower() in served.agent.leases()


def test_init_reboot(served: Served) -> None:
    """A client that remembers its lease asks for it again without a server id (INIT-REBOOT):
    dhclient with its lease file, and a hand-made INIT-REBOOT REQUEST."""
    ns = served.client()
    ip = served.spec.mac_to_ip()[ns.mac]
    dhclient = Dhclient(ns)
    first = dhclient.acquire()
    assert (first.reason, first.ip) == ("BOUND", ip)
    dhclient.stop()  # -x: no RELEASE, the lease file keeps the lease
    again = dhclient.acquire()
    assert again.reason == "REBOOT", f"dhclient did not INIT-REBOOT: {dhclient.events_seen()}"
    assert_full_lease(again, ip)
    dhclient.stop()

    replies = craft(ns, type="request", requested=str(ip), broadcast=True)
    assert [r["message_type"] for r in replies] == [ACK], replies
    assert replies[0]["yiaddr"] == str(ip)
    assert replies[0]["options"]["54"] == SERVER_IP.packed.hex()


def test_renew_with_ciaddr(served: Served) -> None:
    """RENEWING: a REQUEST with ciaddr, unicast from the client's address (dhcping)."""
    ns = served.client()
    ip = served.spec.mac_to_ip()[ns.mac]
    ns.ip("address", "add", f"{ip}/24", "dev", ns.iface)
    acks = served.agent.metric("vmdhcp_agent_replies_sent_total", message_type="ack")
    done = dhcping(ns, ip, SERVER_IP)
    assert done.returncode == 0, f"dhcping got no answer: {done.stdout}{done.stderr}"
    assert f"Got answer from: {SERVER_IP}" in done.stdout
    wait_metric(served, "vmdhcp_agent_replies_sent_total", acks + 1, message_type="ack")


def test_inform_is_answered(served: Served) -> None:
    """DHCPINFORM from a configured client (dhcping -i): an ACK, unicast to ciaddr."""
    ns = served.client()
    ip = served.spec.mac_to_ip()[ns.mac]
    ns.ip("address", "add", f"{ip}/24", "dev", ns.iface)
    informs = served.agent.metric("vmdhcp_agent_packets_received_total", message_type="inform")
    done = dhcping(ns, ip, SERVER_IP, inform=True)
    assert done.returncode == 0, f"dhcping -i got no answer: {done.stdout}{done.stderr}"
    wait_metric(served, "vmdhcp_agent_packets_received_total", informs + 1, message_type="inform")


def test_renewal_by_a_running_client(served: Served) -> None:
    """udhcpc, bound and running, renews on SIGUSR1 (unicast, ciaddr set) and is ACKed."""
    ns = served.client()
    udhcpc = Udhcpc(ns)
    bound = udhcpc.start()
    assert bound.reason == "bound"
    renewed = udhcpc.renew()
    assert renewed.reason == "renew"
    assert_full_lease(renewed, served.spec.mac_to_ip()[ns.mac])
    udhcpc.stop()


def test_a_repeated_renewal_is_answered_from_the_reply_memo(served: Served) -> None:
    """udhcpc's renewals differ only in their xid: the second is a memo hit, and its ACK is
    as complete as the first."""
    ns = served.client()
    udhcpc = Udhcpc(ns)
    assert udhcpc.start().reason == "bound"
    assert udhcpc.renew().reason == "renew"
    hits = served.agent.metric("vmdhcp_agent_reply_cache_total", result="hit")
    renewed = udhcpc.renew()
    assert renewed.reason == "renew"
    assert_full_lease(renewed, served.spec.mac_to_ip()[ns.mac])
    assert served.agent.metric("vmdhcp_agent_reply_cache_total", result="hit") > hits
    udhcpc.stop()


def test_release_is_counted(served: Served) -> None:
    ns = served.client()
    dhclient = Dhclient(ns)
    dhclient.acquire()
    released = served.agent.metric("vmdhcp_agent_packets_received_total", message_type="release")
    dropped = served.agent.metric("vmdhcp_agent_dropped_total", reason="release")
    output = dhclient.release()
    assert "DHCPRELEASE" in output
    wait_metric(served, "vmdhcp_agent_packets_received_total", released + 1, message_type="release")
    wait_metric(served, "vmdhcp_agent_dropped_total", dropped + 1, reason="release")


def test_relay_replies_perfdhcp(served: Served) -> None:
    """perfdhcp is a relay (giaddr set, from port 67): every DORA completes, none dropped."""
    relay = served.lab.add_relay(RELAY_IP)
    result = perfdhcp(
        relay,
        SERVER_IP,
        RELAY_IP,
        RELAY_BASE,
        RELAY_CLIENTS,
        rate=200,
        num=60,
        log=relay.workdir / "perfdhcp.log",
    )
    assert result.sent == {"DO": 60, "RA": 60}, result.output[-2000:]
    assert result.received == {"DO": 60, "RA": 60}, result.output[-2000:]
    assert result.drops == {"DO": 0, "RA": 0}
    assert result.exit_code == 0


def test_unknown_mac_gets_nothing(served: Served) -> None:
    ns = served.client(mac=UNKNOWN_MAC)
    before = served.agent.metric("vmdhcp_agent_dropped_total", reason="unknown_mac")
    started = time.monotonic()
    with pytest.raises(ClientFailed, match="no lease"):
        Udhcpc(ns, timeout=2, tries=2).acquire()
    assert time.monotonic() - started < 10
    wait_metric(served, "vmdhcp_agent_dropped_total", before + 2, reason="unknown_mac")
    assert UNKNOWN_MAC not in served.agent.leases()


@pytest.mark.parametrize("state", ["selecting", "init-reboot"])
def test_wrong_requested_address_gets_a_nak(served: Served, state: str) -> None:
    ns = served.client()
    wrong = served.spec.mac_to_ip()[ns.mac] + 1
    naks = served.agent.metric("vmdhcp_agent_replies_sent_total", message_type="nak")
    server_id = str(SERVER_IP) if state == "selecting" else None
    replies = craft(ns, type="request", requested=str(wrong), server_id=server_id, broadcast=False)
    assert [r["message_type"] for r in replies] == [NAK], replies
    nak = replies[0]
    assert nak["yiaddr"] == "0.0.0.0"
    assert nak["ip_dst"] == "255.255.255.255"  # RFC 2131 4.1: a NAK is broadcast
    assert nak["options"]["54"] == SERVER_IP.packed.hex()
    wait_metric(served, "vmdhcp_agent_replies_sent_total", naks + 1, message_type="nak")


def test_discover_gets_an_offer_l2_unicast_to_chaddr(served: Served) -> None:
    """No broadcast flag, no address yet: the OFFER goes to chaddr at layer 2 (yiaddr)."""
    ns = served.client()
    ip = served.spec.mac_to_ip()[ns.mac]
    replies = craft(ns, type="discover", broadcast=False)
    assert [r["message_type"] for r in replies] == [OFFER], replies
    offer = replies[0]
    assert (offer["eth_dst"], offer["ip_dst"], offer["yiaddr"]) == (ns.mac, str(ip), str(ip))


def test_broadcast_flag_gets_a_broadcast_offer(served: Served) -> None:
    ns = served.client()
    replies = craft(ns, type="discover", broadcast=True)
    assert [r["message_type"] for r in replies] == [OFFER], replies
    offer = replies[0]
    assert (offer["eth_dst"], offer["ip_dst"]) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    assert (offer["ciaddr"], offer["yiaddr"]) == ("0.0.0.0", str(served.spec.mac_to_ip()[ns.mac]))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"type": "request", "server_id": "10.77.0.9"}, "foreign_server",
                     id="request-for-another-server"),
        pytest.param({"type": "decline", "server_id": str(SERVER_IP)}, "decline", id="decline"),
        pytest.param({"type": "discover", "htype": 6}, "unsupported_hardware", id="not-ethernet"),
    ],
)  # fmt: skip
def test_silent_cases_are_counted(served: Served, fields: dict[str, object], reason: str) -> None:
    ns = served.client()
    before = served.agent.metric("vmdhcp_agent_dropped_total", reason=reason)
    replies = craft(ns, timeout=1.0, requested=str(served.spec.mac_to_ip()[ns.mac]), **fields)
    assert replies == [], f"{fields}: expected silence"
    wait_metric(served, "vmdhcp_agent_dropped_total", before + 1, reason=reason)

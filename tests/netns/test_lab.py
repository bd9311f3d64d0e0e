"""The lab itself, checked against dnsmasq: when these pass and an agent test fails, the
agent is at fault, not the harness."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.netns.conftest import DNS, DOMAIN, LEASE_TIME, SEARCH, SERVER_IP, pool_spec
from tests.netns.lab import (
    CLIENT_KINDS,
    PREFIX,
    Dnsmasq,
    Lab,
    craft,
    perfdhcp_macs,
    sweep_stale_labs,
)

pytestmark = pytest.mark.netns


def test_perfdhcp_macs_octet_wise() -> None:
    macs = perfdhcp_macs("02:00:00:00:00:00", 1000)
    assert macs[:2] == ["02:00:00:00:00:00", "02:00:00:00:00:01"]
    assert macs[256] == "02:00:00:00:01:00"
    assert macs[-1] == "02:00:00:00:03:e7"
    # octet-wise: no carry out of a non-zero base octet
    assert perfdhcp_macs("02:00:00:00:00:ff", 2) == ["02:00:00:00:00:ff", "02:00:00:00:00:00"]


def test_clients_against_dnsmasq(lab: Lab, anchors: None) -> None:
    spec = pool_spec()
    server = Dnsmasq(lab.srv, spec).start()
    mac_to_ip = spec.mac_to_ip()
    for n, (kind, client) in enumerate(CLIENT_KINDS.items(), start=30):
        ns = lab.add_client(f"02:aa:00:00:00:{n:02x}")
        result = client(ns).acquire()
        got = (result.ip, result.prefix, result.dns, result.domain, result.search)
        assert got == (mac_to_ip[ns.mac], 24, DNS, DOMAIN, SEARCH), kind
        assert (result.lease_time, result.server_id) == (LEASE_TIME, SERVER_IP), kind
    nak = craft(ns, type="request", requested=str(mac_to_ip[ns.mac] + 1))
    assert [r["message_type"] for r in nak] == [6]
    assert server.stop() in (0, -15)


def test_sweeper_removes_only_dead_labs(netns_env: None, tmp_path: object) -> None:
    import subprocess

    stale = f"{PREFIX}dead00s"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    with Lab(tmp_path, network="10.78.0.0/24") as live:  # type: ignore[arg-type]
        removed = sweep_stale_labs()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale in removed
        assert stale not in names
        assert live.srv.name in names
        assert live.hub in names
    assert IPv4Address("10.78.0.2") == live.server_ip

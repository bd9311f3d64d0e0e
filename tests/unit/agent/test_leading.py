"""The serving agent's address kept in line with leadership (agent/leading.py and
agent/takeover.py), with the election and `ip` played by fakes: the lifetime given to the
kernel ends with the leader's renew deadline, a leader that cannot hold the address is
unwell, and an address whose `ip` call was cancelled is still dropped."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface
from typing import Any

import pytest

from tests.unit.dhcp.helpers import LAB
from vmdhcp.agent import takeover
from vmdhcp.agent.leading import HOLD_ATTEMPTS, Leadership
from vmdhcp.agent.metrics import AgentMetrics

SERVER = IPv4Interface(f"{LAB.server_ip}/{LAB.subnet.prefixlen}")


class Elector:
    def __init__(self, left: float) -> None:
        self.left = left

    def time_left(self) -> float:
        return self.left

    def is_leader(self) -> bool:
        return self.left > 0


class Ip:
    """`ip address …` calls, recorded; `fail` makes them fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    async def __call__(self, *args: str) -> tuple[int, str]:
        self.calls.append(args)
        if self.fail and args[2] == "replace":
            return 2, "RTNETLINK answers: Operation not permitted"
        return 0, ""


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Ip:
    fake = Ip()
    monkeypatch.setattr(takeover, "_ip", fake)
    return fake


def leading(left: float) -> Leadership:
    leadership = Leadership("eth1", "agents", "pod_uid", ("default", "net-48"), AgentMetrics())
    leadership.elector = Elector(left)  # type: ignore[assignment]
    leadership.config = LAB
    return leadership


def lifetimes(ip: Ip) -> list[str]:
    return [call[call.index("valid_lft") + 1] for call in ip.calls if call[2] == "replace"]


async def test_the_address_lives_no_longer_than_the_leaders_renew_deadline(
    ip: Ip, monkeypatch: pytest.MonkeyPatch
) -> None:
    leadership = leading(7.9)
    monkeypatch.setattr(leadership, "_announce", _nothing)
    await leadership._converge()
    assert lifetimes(ip) == ["7"]
    assert leadership.address.held == SERVER
    leadership.elector.left = 2.5  # type: ignore[union-attr]
    await leadership._converge()
    assert lifetimes(ip) == ["7", "2"]


async def test_a_leader_with_less_than_a_second_left_drops_the_address(
    ip: Ip, monkeypatch: pytest.MonkeyPatch
) -> None:
    leadership = leading(5.0)
    monkeypatch.setattr(leadership, "_announce", _nothing)
    await leadership._converge()
    leadership.elector.left = 0.6  # type: ignore[union-attr]
    await leadership._converge()
    assert ip.calls[-1][2] == "del"
    assert leadership.address.held is None
    assert not leadership.serving()


async def test_a_leader_that_cannot_hold_the_address_fails_its_health(ip: Ip) -> None:
    leadership = leading(7.0)
    ip.fail = True
    for _ in range(HOLD_ATTEMPTS - 1):
        await leadership._converge()
        assert leadership.problem == ""
    await leadership._converge()
    assert "cannot put" in leadership.problem
    assert not leadership.serving()


async def test_an_add_cancelled_in_flight_is_still_dropped(
    ip: Ip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while `ip address replace` runs: the kernel may have added it already."""
    address = takeover.ServerAddress("eth1")

    async def added_then_cancelled(*args: str) -> tuple[int, str]:
        ip.calls.append(args)
        raise asyncio.CancelledError

    monkeypatch.setattr(takeover, "_ip", added_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await address.hold(SERVER, 7)
    assert address.held == SERVER
    monkeypatch.setattr(takeover, "_ip", ip)
    await address.drop()
    assert ip.calls[-1][:3] == ("-4", "address", "del")


async def test_stop_clears_the_address_even_when_none_is_counted_held(ip: Ip) -> None:
    leadership = leading(0.0)
    await leadership.stop()
    assert ("-4", "address", "del", str(SERVER), "dev", "eth1") in ip.calls


def test_a_gratuitous_arp_announces_our_own_address() -> None:
    mac = bytes.fromhex("020000000001")
    frame = takeover.gratuitous_arp(mac, SERVER.ip)
    assert frame[:6] == b"\xff" * 6
    assert frame[6:12] == mac
    assert frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[6:8] == b"\x00\x01"  # a request
    assert arp[14:18] == arp[24:28] == SERVER.ip.packed  # sender and target: ours


async def _nothing(*args: Any) -> None:
    return None

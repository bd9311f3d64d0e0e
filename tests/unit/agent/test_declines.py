"""DHCPDECLINE at the agent's edge: a MAC that declines the address of its lease is not
offered it again from the very next packet (the reply memo included), and is reported;
a DECLINE for another address, a repeat or one past the limit changes nothing; the entry
goes when the pool moves the MAC or its hold runs out; a new leader takes the entries over
from the stored report."""

from __future__ import annotations

import asyncio
import copy
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.unit.agent.conftest import SEED
from tests.unit.dhcp.helpers import request
from vmdhcp.agent.app import Agent
from vmdhcp.agent.config import load_config
from vmdhcp.agent.declines import Declines
from vmdhcp.agent.report import AgentReport, DeclinedAddress, Reporter
from vmdhcp.api import IPPool
from vmdhcp.dhcp import MessageType, parse, serialize

MAC = "c6:d6:82:39:d3:c3"
OTHER = "fa:e7:60:2e:37:dd"
ADDRESS = IPv4Address("192.168.48.86")
SERVER = IPv4Address("192.168.48.77")
CLIENT = ("0.0.0.0", 68)


def agent_for(tmp_path: Path, clock: list[float]) -> Agent:
    (tmp_path / "p.yaml").write_text("{}")
    agent = Agent(load_config(["--ippool-file", str(tmp_path / "p.yaml"), "--dry-run"], {}))
    agent.declines = Declines(agent.metrics, hold=300.0, limit=2, clock=lambda: clock[0])
    return agent


def discover(mac: str) -> bytes:
    return serialize(request(MessageType.DISCOVER, mac=mac))


def decline(mac: str, address: IPv4Address) -> bytes:
    return serialize(
        request(MessageType.DECLINE, mac=mac, requested=address, server_id=SERVER, xid=7)
    )


def ack(agent: Agent, mac: str, xid: int = 9) -> IPv4Address | None:
    """The client takes its offer (SELECTING): the ACK a DECLINE may follow."""
    out = agent.handle(discover(mac), CLIENT)
    if out is None:
        return None
    offer = parse(out[0]).yiaddr
    selecting = request(MessageType.REQUEST, mac=mac, requested=offer, server_id=SERVER, xid=xid)
    out = agent.handle(serialize(selecting), CLIENT)
    return None if out is None else parse(out[0]).yiaddr


def declined(agent: Agent, mac: str, address: IPv4Address) -> None:
    """A client that was ACKed `address` a moment ago declines it."""
    assert ack(agent, mac) == address
    agent.handle(decline(mac, address), CLIENT)


def offered(agent: Agent, mac: str) -> IPv4Address | None:
    out = agent.handle(discover(mac), CLIENT)
    return None if out is None else parse(out[0]).yiaddr


def counted(agent: Agent, result: str) -> float:
    value: float = agent.metrics.declines.labels(result)._value.get()
    return value


def pool(moved: dict[str, str] | None = None) -> IPPool:
    body: dict[str, Any] = copy.deepcopy(SEED)
    body["status"]["ipv4"]["allocated"].update(moved or {})
    return IPPool.model_validate(body)


async def test_a_declined_address_is_withheld_from_the_next_packet_until_the_pool_moves_it(
    tmp_path: Path,
) -> None:
    agent = agent_for(tmp_path, [0.0])
    await agent.apply(pool())
    assert offered(agent, MAC) == ADDRESS
    assert offered(agent, MAC) == ADDRESS  # now remembered by the reply memo
    assert ack(agent, MAC) == ADDRESS
    assert agent.handle(decline(MAC, ADDRESS), CLIENT) is None
    assert counted(agent, "withheld") == 1
    assert offered(agent, MAC) is None  # not even from the memo
    assert offered(agent, OTHER) == IPv4Address("192.168.48.87")  # others are served
    (entry,) = agent.declines.entries()
    assert (entry.mac, entry.address) == (MAC, str(ADDRESS))
    assert entry.at  # the agent's stamp, an identity only

    await agent.apply(pool({"192.168.48.88": "EXCLUDED"}))  # a new version, MAC still on .86
    assert offered(agent, MAC) is None
    # the controller moved it: .86 set aside, the MAC on .85
    await agent.apply(pool({"192.168.48.86": "DECLINED", "192.168.48.85": MAC}))
    assert agent.declines.entries() == ()
    assert offered(agent, MAC) == IPv4Address("192.168.48.85")
    assert agent.state is not None
    assert "DECLINED" not in str(agent.state.problems)  # the mark is nobody's, not a bad MAC


async def test_a_decline_of_another_address_a_repeat_or_past_the_limit_changes_nothing(
    tmp_path: Path,
) -> None:
    agent = agent_for(tmp_path, [0.0])
    await agent.apply(pool({"192.168.48.88": "02:00:00:00:00:88"}))
    # forged: MAC's lease is .86, the DECLINE names .87 (OTHER's)
    agent.handle(decline(MAC, IPv4Address("192.168.48.87")), CLIENT)
    assert counted(agent, "not_its_address") == 1
    assert offered(agent, MAC) == ADDRESS
    assert offered(agent, OTHER) == IPv4Address("192.168.48.87")
    declined(agent, MAC, ADDRESS)
    declined(agent, OTHER, IPv4Address("192.168.48.87"))
    declined(agent, "02:00:00:00:00:88", IPv4Address("192.168.48.88"))
    assert counted(agent, "withheld") == 2
    assert counted(agent, "limit") == 1  # the third at once: limit 2
    assert offered(agent, "02:00:00:00:00:88") == IPv4Address("192.168.48.88")
    # a withheld MAC is a stranger to the core now: its DECLINE is not even an event
    agent.handle(decline(MAC, ADDRESS), CLIENT)
    assert counted(agent, "repeat") == 0
    assert len(agent.declines.entries()) == 2


async def test_the_hold_runs_out_on_the_agents_clock(tmp_path: Path) -> None:
    clock = [100.0]
    agent = agent_for(tmp_path, clock)
    await agent.apply(pool())
    declined(agent, MAC, ADDRESS)
    clock[0] += 299.0
    agent.refresh_declines()
    assert offered(agent, MAC) is None
    clock[0] += 1.0
    agent.refresh_declines()
    assert agent.declines.entries() == ()
    assert offered(agent, MAC) == ADDRESS  # offered again: a VM still in conflict declines


class Writer:
    def __init__(self, stored: AgentReport | None) -> None:
        self._stored = stored
        self.wanted: list[AgentReport] = []

    async def stored(self, pool: tuple[str, str]) -> AgentReport | None:
        return self._stored

    def want(self, report: AgentReport) -> None:
        self.wanted.append(report)

    def withdraw(self) -> None:
        self.wanted.clear()


async def test_the_report_carries_the_entries_and_a_new_leader_takes_them_over(
    tmp_path: Path,
) -> None:
    clock = [0.0]
    agent = agent_for(tmp_path, clock)
    await agent.apply(pool())
    entry = DeclinedAddress(MAC, str(ADDRESS), "2026-12-05T07:00:00Z")
    stored = AgentReport(("default", "net-48"), "u-1", "agent-a", 60.0, (), (entry,))
    writer = Writer(stored)
    reporter = Reporter(writer, ("default", "net-48"), "agent-b", lambda: "u-1", 60.0)  # type: ignore[arg-type]
    agent.declines.reporter = reporter
    agent.loop = asyncio.get_running_loop()  # the packet thread hands publishing to it
    serving = [True]
    task = asyncio.create_task(agent.declines.run(lambda: serving[0], agent.refresh_declines))
    try:
        for _ in range(100):
            if agent.declines.entries():
                break
            await asyncio.sleep(0.01)
        assert agent.declines.entries() == (entry,)  # taken over, `at` and all
        assert offered(agent, MAC) is None
        # the same content as stored: nothing new, only kept level by the writer
        assert [w.declined for w in writer.wanted] == [(entry,)]
        declined(agent, OTHER, IPv4Address("192.168.48.87"))
        for _ in range(100):
            if len(writer.wanted) > 1:
                break
            await asyncio.sleep(0.01)
        written = writer.wanted[-1]
        assert [d.mac for d in written.declined] == [MAC, OTHER]
        assert written.agent == "agent-b"
        assert written.ippool_uid == "u-1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_decline_is_heard_only_soon_after_this_agent_acked_that_address(
    tmp_path: Path,
) -> None:
    """A forged DECLINE needs more than a VM's MAC and address: it must follow an ACK of
    that address to that MAC within a minute (before: any DECLINE naming a lease was)."""
    clock = [0.0]
    agent = agent_for(tmp_path, clock)
    await agent.apply(pool())
    agent.handle(decline(MAC, ADDRESS), CLIENT)  # never ACKed: a forgery
    assert counted(agent, "not_acked") == 1
    assert offered(agent, MAC) == ADDRESS
    assert ack(agent, MAC) == ADDRESS
    clock[0] += 61.0  # bound and in use for a minute: a DECLINE now is not the client's
    agent.handle(decline(MAC, ADDRESS), CLIENT)
    assert counted(agent, "not_acked") == 2
    assert agent.declines.entries() == ()
    assert ack(agent, MAC, xid=10) == ADDRESS  # a new transaction (not the reply memo's)
    clock[0] += 5.0
    agent.handle(decline(MAC, ADDRESS), CLIENT)
    assert counted(agent, "withheld") == 1


async def test_a_decline_without_option_50_is_not_heard(tmp_path: Path) -> None:
    agent = agent_for(tmp_path, [0.0])
    await agent.apply(pool())
    assert ack(agent, MAC) == ADDRESS
    bare = request(MessageType.DECLINE, mac=MAC, server_id=SERVER, xid=7)
    assert agent.handle(serialize(bare), CLIENT) is None
    assert agent.declines.entries() == ()
    assert offered(agent, MAC) == ADDRESS

"""The agent's packet path and pool updates, without sockets: bytes in, bytes and a
destination out, metrics and state observed."""

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST

from vmdhcp.agent.app import Agent
from vmdhcp.agent.config import load_config
from vmdhcp.agent.http import JSON, MAX_CONNECTIONS, HttpServer
from vmdhcp.agent.sources import FileSource
from vmdhcp.api import IPPool
from vmdhcp.dhcp import L2Unicast, parse

PACKETS = Path(__file__).resolve().parents[2] / "data" / "packets"
CLIENT = ("0.0.0.0", 68)


def packet_for(name: str, mac: str) -> bytes:
    data = bytearray((PACKETS / name).read_bytes())
    data[28:34] = bytes.fromhex(mac.replace(":", ""))
    return bytes(data)


def sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    (tmp_path / "p.yaml").write_text("{}")
    return Agent(load_config(["--ippool-file", str(tmp_path / "p.yaml"), "--dry-run"], {}))


async def test_not_ready_and_silent_until_a_pool_is_loaded(agent: Agent) -> None:
    assert not agent.ready
    assert "not loaded" in agent.not_ready_reason
    assert agent.handle(packet_for("dhclient-discover.bin", "c6:d6:82:39:d3:c3"), CLIENT) is None
    text = agent.metrics.render().decode()
    assert sample(text, 'vmdhcp_agent_dropped_total{reason="not_ready"}') == 1


async def test_known_mac_gets_an_offer_unknown_mac_silence(
    agent: Agent, seed: dict[str, Any]
) -> None:
    await agent.apply(IPPool.model_validate(seed))
    assert agent.ready
    out = agent.handle(packet_for("dhclient-discover.bin", "C6:D6:82:39:D3:C3"), CLIENT)
    assert out is not None
    payload, destination, address = out
    assert address is None  # layer 2: the transport frames it
    reply = parse(payload)
    assert reply.yiaddr == IPv4Address("192.168.48.86")
    assert destination == L2Unicast("c6:d6:82:39:d3:c3", IPv4Address("192.168.48.86"))
    assert agent.handle(packet_for("dhclient-discover.bin", "02:00:00:00:00:99"), CLIENT) is None
    assert agent.handle(b"\x01garbage", CLIENT) is None
    text = agent.metrics.render().decode()
    assert sample(text, 'vmdhcp_agent_packets_received_total{message_type="discover"}') == 2
    assert sample(text, 'vmdhcp_agent_replies_sent_total{message_type="offer"}') == 1
    assert sample(text, 'vmdhcp_agent_dropped_total{reason="unknown_mac"}') == 1
    assert sample(text, 'vmdhcp_agent_dropped_total{reason="malformed"}') == 1
    assert sample(text, "vmdhcp_agent_leases") == 2


async def test_live_change_reaches_the_next_reply_and_bad_versions_are_refused(
    agent: Agent, seed: dict[str, Any]
) -> None:
    await agent.apply(IPPool.model_validate(seed))
    seed["spec"]["ipv4Config"]["dns"] = ["9.9.9.9"]
    seed["status"]["ipv4"]["allocated"]["192.168.48.88"] = "c6:d6:82:39:d3:c3"
    del seed["status"]["ipv4"]["allocated"]["192.168.48.86"]  # the MAC moved
    await agent.apply(IPPool.model_validate(seed))
    out = agent.handle(packet_for("dhclient-discover.bin", "c6:d6:82:39:d3:c3"), CLIENT)
    assert out is not None
    reply = parse(out[0])
    assert reply.yiaddr == IPv4Address("192.168.48.88")
    assert reply.options[6] == IPv4Address("9.9.9.9").packed

    seed["spec"]["ipv4Config"]["serverIP"] = "not-an-ip"
    await agent.apply(IPPool.model_validate(seed))  # refused: the previous state stays
    assert agent.state is not None
    assert str(agent.state.config.server_ip) == "192.168.48.77"
    text = agent.metrics.render().decode()
    assert sample(text, 'vmdhcp_agent_pool_reloads_total{result="error"}') == 1

    await agent.apply(None)  # the pool is gone
    assert not agent.ready
    assert agent.lease_dump() == {}


async def test_release_and_decline_are_counted(agent: Agent, seed: dict[str, Any]) -> None:
    await agent.apply(IPPool.model_validate(seed))
    decline = bytearray(packet_for("dhclient-request.bin", "c6:d6:82:39:d3:c3"))
    options = parse(bytes(decline)).options
    assert options[53] == b"\x03"
    position = bytes(decline).index(b"\x35\x01\x03")
    decline[position + 2] = 4  # DHCPDECLINE
    assert agent.handle(bytes(decline), CLIENT) is None
    text = agent.metrics.render().decode()
    assert sample(text, 'vmdhcp_agent_dropped_total{reason="decline"}') == 1


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def test_http_endpoints(agent: Agent, seed: dict[str, Any]) -> None:
    server = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=True)
    server.start()
    try:
        assert http_get(server.port, "/healthz")[0] == 200
        status, content_type, body = http_get(server.port, "/readyz")
        assert (status, content_type) == (503, "application/json; charset=utf-8")
        assert "not loaded" in json.loads(body)["reason"]
        await agent.apply(IPPool.model_validate(seed))
        assert http_get(server.port, "/readyz")[0] == 200
        assert http_get(server.port, "/readyz", method="HEAD")[:2] == (200, JSON)
        leases = json.loads(http_get(server.port, "/leases")[2])
        assert json.loads(leases["fa:e7:60:2e:37:dd"])["ClientIP"] == "192.168.48.87"
        status, content_type, body = http_get(server.port, "/metrics?x=1")
        assert content_type == CONTENT_TYPE_LATEST
        assert "vmdhcp_agent_leases 2.0" in body.decode()
        assert http_get(server.port, "/nothing")[0] == 404
    finally:
        server.close()
    server = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=False)
    server.start()
    try:
        assert http_get(server.port, "/leases")[0] == 404
    finally:
        server.close()


def test_healthz_fails_when_the_event_loop_stalls(agent: Agent) -> None:
    server = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=False)
    server.start()
    try:
        assert http_get(server.port, "/healthz")[0] == 200
        agent.heartbeat -= 3600
        status, _, body = http_get(server.port, "/healthz")
        assert status == 503
        assert "event loop stalled" in json.loads(body)["reason"]
    finally:
        server.close()


def test_idle_connections_beyond_the_limit_are_closed_not_queued(agent: Agent) -> None:
    server = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=False)
    server.start()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed by the server at once
        extra.close()
    finally:
        for connection in idle:
            connection.close()
    # the slots come back as the idle connections' threads end
    for _ in range(100):
        try:
            if http_get(server.port, "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.05)
    else:
        raise AssertionError("no slot came back")
    server.close()


def test_a_failing_view_is_a_500_and_the_server_keeps_serving(agent: Agent) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("bug")

    agent.lease_dump = broken  # type: ignore[method-assign]
    server = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=True)
    server.start()
    try:
        assert http_get(server.port, "/leases")[0] == 500
        assert http_get(server.port, "/healthz")[0] == 200
    finally:
        server.close()


def test_http_port_taken_is_an_oserror(agent: Agent) -> None:
    first = HttpServer("127.0.0.1", 0, agent, agent.metrics, cache_dump=False)
    try:
        with pytest.raises(OSError, match="in use"):
            HttpServer("127.0.0.1", first.port, agent, agent.metrics, cache_dump=False)
    finally:
        first.close()


async def test_file_source_delivers_versions_and_survives_a_broken_file(
    tmp_path: Path, seed: dict[str, Any]
) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(seed))
    delivered: asyncio.Queue[IPPool | None] = asyncio.Queue()

    async def deliver(pool: IPPool | None) -> None:
        await delivered.put(pool)

    task = asyncio.create_task(FileSource(path, deliver, interval=0.01).run())
    try:
        first = await asyncio.wait_for(delivered.get(), 5)
        assert first is not None
        assert first.spec.network_name == "default/net-48"
        path.write_text("spec: [not, a, pool")
        path.write_text(json.dumps({"kind": "IPPool", "spec": {"ipv4Config": {}}}))
        seed["spec"]["ipv4Config"]["dns"] = ["8.8.8.8"]
        path.write_text(json.dumps(seed))  # JSON is accepted too
        second = await asyncio.wait_for(delivered.get(), 5)
        assert second is not None
        assert second.spec.ipv4_config is not None
        assert second.spec.ipv4_config.dns == ["8.8.8.8"]
        assert delivered.empty()
    finally:
        task.cancel()


async def test_a_malformed_ntp_name_is_skipped_not_fatal(
    agent: Agent, seed: dict[str, Any]
) -> None:
    seed["spec"]["ipv4Config"]["ntp"] = ["ntp..example.com", "x" * 300, "192.168.48.5"]
    await agent.apply(IPPool.model_validate(seed))
    assert agent.state is not None
    assert [str(a) for a in agent.state.config.ntp_servers] == ["192.168.48.5"]
    assert len(agent.state.problems) == 2


async def test_an_ntp_name_that_does_not_resolve_is_warned_about_once(
    agent: Agent,
    seed: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once per cause, not at every pool version (every allocation makes one) nor at every
    new resolution attempt; a line when it resolves again, a warning if it fails again."""
    answers: dict[str, Any] = {"pool.ntp.org": OSError(-3, "Temporary failure in name resolution")}

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (answer, 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    monkeypatch.setattr("vmdhcp.agent.app.NTP_FAILURE_CACHE_SECONDS", 0.0)  # ask every time
    monkeypatch.setattr("vmdhcp.agent.app.NTP_CACHE_SECONDS", 0.0)
    allocated = seed["status"]["ipv4"]["allocated"]

    async def new_version(n: int) -> None:
        allocated[f"192.168.48.{82 + n}"] = f"02:00:00:00:00:{n:02x}"
        await agent.apply(IPPool.model_validate(seed))

    def lines() -> list[tuple[str, str]]:
        return [
            (r.levelname, r.getMessage()) for r in caplog.records if "ntp server" in r.getMessage()
        ]

    with caplog.at_level("INFO", logger="vmdhcp.agent"):
        for n in range(3):
            await new_version(n)
        problem = "ntp server 'pool.ntp.org' did not resolve to an IPv4 address"
        assert lines() == [
            (
                "WARNING",
                f"ippool {agent.config.ippool_ref}: {problem} "
                "([Errno -3] Temporary failure in name resolution)",
            )
        ]
        answers["pool.ntp.org"] = "10.9.9.1"
        await new_version(3)
        await new_version(4)
        assert agent.state is not None
        assert [str(a) for a in agent.state.config.ntp_servers] == ["10.9.9.1", "192.168.48.5"]
        answers["pool.ntp.org"] = TimeoutError()
        await new_version(5)
        await new_version(6)
    assert [level for level, _ in lines()] == ["WARNING", "INFO", "WARNING"]
    assert lines()[1][1].endswith(
        f"no longer: {problem} ([Errno -3] Temporary failure in name resolution)"
    )
    assert lines()[2][1].endswith(f"{problem} (timeout)")

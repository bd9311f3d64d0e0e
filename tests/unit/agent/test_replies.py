"""The reply memo: a remembered reply is exactly what `respond()` would have said, with the
new request's xid, and nothing computed from an older pool version is ever sent."""

import asyncio
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.agent.conftest import SEED
from tests.unit.dhcp.helpers import (
    FROM_CLIENT,
    FROM_RELAY,
    LAB,
    LEASE_IP,
    SAMPLE_NAMES,
    load,
    request,
)
from vmdhcp.agent.app import INGRESS_CACHE_SIZE, Agent
from vmdhcp.agent.config import ConfigError, load_config
from vmdhcp.agent.replies import LARGEST_REMEMBERED, ReplyMemo
from vmdhcp.api import IPPool
from vmdhcp.dhcp import Broadcast, Lease, MessageType, Relay, parse, respond, serialize
from vmdhcp.mac import mac_to_bytes

KNOWN_MAC = "c6:d6:82:39:d3:c3"
KNOWN_IP = IPv4Address("192.168.48.86")
SERVER = IPv4Address("192.168.48.77")
SAMPLE_LEASES = {
    parse(load(name)).chaddr[:6].hex(":"): Lease(LEASE_IP, "vm") for name in SAMPLE_NAMES
}
SOURCES = [("0.0.0.0", 68), ("192.168.48.250", 67), ("192.168.48.86", 68), ("192.168.48.87", 68)]


def make_agent(tmp_path: Path, cache: int, seed: dict[str, Any] = SEED) -> Agent:
    (tmp_path / "p.yaml").write_text("{}")
    argv = ["--ippool-file", str(tmp_path / "p.yaml"), "--dry-run"]
    agent = Agent(load_config([*argv, "--reply-cache-size", str(cache)], {}))
    asyncio.run(agent.apply(IPPool.model_validate(seed)))
    return agent


def counter(agent: Agent, result: str) -> int:
    return (
        agent.metrics.reply_cache_hits if result == "hit" else agent.metrics.reply_cache_misses
    ).value


def with_xid(data: bytes, xid: int) -> bytes:
    return data[:4] + xid.to_bytes(4, "big") + data[8:]


# -- ReplyMemo on its own -------------------------------------------------------------------


def test_recall_writes_the_new_xid_and_needs_the_same_source() -> None:
    memo = ReplyMemo(4)
    req = with_xid(bytes(300), 1)
    reply = with_xid(b"\x02" * 300, 1)
    memo.remember(req, ("10.0.0.1", 67), ((reply, Broadcast(), None), 1, 2))
    hit = memo.recall(with_xid(req, 0xDEADBEEF), ("10.0.0.1", 67))
    assert hit is not None
    (payload, destination, address), request_type, reply_type = hit
    assert payload == with_xid(reply, 0xDEADBEEF)
    assert (destination, address, request_type, reply_type) == (Broadcast(), None, 1, 2)
    assert memo.recall(req, ("10.0.0.1", 68)) is None
    assert memo.recall(req[:-1] + b"\x01", ("10.0.0.1", 67)) is None  # any other byte: a miss


def test_the_oldest_reply_makes_room_and_zero_disables() -> None:
    memo = ReplyMemo(2)
    source = ("0.0.0.0", 68)
    requests = [bytes([n]) * 300 for n in range(3)]
    for data in requests:
        memo.remember(data, source, ((data, Broadcast(), None), 1, 2))
    assert len(memo) == 2
    assert memo.recall(requests[0], source) is None
    assert memo.recall(requests[2], source) is not None
    off = ReplyMemo(0)
    off.remember(requests[0], source, ((requests[0], Broadcast(), None), 1, 2))
    assert len(off) == 0
    assert off.recall(requests[0], source) is None
    with pytest.raises(ValueError, match="capacity"):
        ReplyMemo(-1)


def test_long_requests_are_answered_but_not_remembered(tmp_path: Path) -> None:
    """Padding after the End option makes a request longer, not a memo entry larger."""
    agent = make_agent(tmp_path, 4096)
    data = serialize(request(MessageType.DISCOVER, mac=KNOWN_MAC))
    padded = data + bytes(LARGEST_REMEMBERED + 1 - len(data))
    assert agent.handle(padded, SOURCES[0]) is not None
    assert agent.handle(padded, SOURCES[0]) is not None
    assert counter(agent, "hit") == 0
    assert agent.state is not None
    assert len(agent.state.replies) == 0


@pytest.mark.parametrize("value", ["-1", "x", "65537"])
def test_a_bad_cache_size_is_a_config_error(tmp_path: Path, value: str) -> None:
    (tmp_path / "p.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="reply-cache-size"):
        load_config(["--ippool-file", str(tmp_path / "p.yaml"), "--reply-cache-size", value], {})


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_respond_ignores_the_clock_which_the_memo_relies_on(name: str) -> None:
    data = parse(load(name))
    for ingress in (FROM_CLIENT, FROM_RELAY):
        early = respond(data, SAMPLE_LEASES, LAB, ingress, 0.0)
        late = respond(data, SAMPLE_LEASES, LAB, ingress, 2.0**40)
        assert early == late


# -- through the agent ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_a_hit_equals_a_fresh_answer_for_every_captured_client(tmp_path: Path, name: str) -> None:
    remembering, fresh = make_agent(tmp_path, 4096), make_agent(tmp_path, 0)
    data = bytearray(load(name))
    data[28:34] = mac_to_bytes(KNOWN_MAC)
    first, second = with_xid(bytes(data), 0x11111111), with_xid(bytes(data), 0x22222222)
    source = SOURCES[1] if name.startswith("perfdhcp") else SOURCES[0]
    assert remembering.handle(first, source) is not None
    answer = remembering.handle(second, source)
    assert answer is not None
    assert answer == fresh.handle(second, source)
    assert parse(answer[0]).xid == 0x22222222
    assert (counter(remembering, "hit"), counter(remembering, "miss")) == (1, 1)
    text = remembering.metrics.render().decode()
    kind = MessageType(parse(answer[0]).options[53][0]).name.lower()  # NAK: not this pool's
    assert f'vmdhcp_agent_replies_sent_total{{message_type="{kind}"}} 2.0' in text
    assert 'vmdhcp_agent_reply_cache_total{result="hit"} 1.0' in text


def test_a_new_pool_version_is_never_answered_from_the_old_one(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, 4096)
    data = serialize(request(MessageType.DISCOVER, mac=KNOWN_MAC))
    assert agent.handle(data, SOURCES[0]) is not None
    seed: dict[str, Any] = IPPool.model_validate(SEED).model_dump(by_alias=True, mode="json")
    seed["spec"]["ipv4Config"]["dns"] = ["9.9.9.9"]
    asyncio.run(agent.apply(IPPool.model_validate(seed)))
    answer = agent.handle(data, SOURCES[0])
    assert answer is not None
    assert parse(answer[0]).options[6] == IPv4Address("9.9.9.9").packed
    assert counter(agent, "hit") == 0


def test_trace_mode_decides_every_packet(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("{}")
    agent = Agent(load_config(["--ippool-file", str(tmp_path / "p.yaml"), "--trace"], {}))
    asyncio.run(agent.apply(IPPool.model_validate(SEED)))
    data = serialize(request(MessageType.DISCOVER, mac=KNOWN_MAC))
    assert agent.handle(data, SOURCES[0]) == agent.handle(data, SOURCES[0])
    assert counter(agent, "hit") == 0


def test_inform_goes_to_its_ciaddr_and_one_without_an_address_is_dropped(tmp_path: Path) -> None:
    """DHCPINFORM is answered to its ciaddr, wherever the datagram came from (the source is
    still part of the memo's key); one without ciaddr is dropped (RFC 2131 3.4: the client
    has an address), counted, and never remembered."""
    agent = make_agent(tmp_path, 4096)
    data = serialize(request(MessageType.INFORM, mac=KNOWN_MAC, ciaddr=KNOWN_IP))
    first = agent.handle(data, ("192.168.48.86", 68))
    second = agent.handle(data, ("192.168.48.87", 68))
    assert first is not None
    assert second is not None
    assert first[2] == second[2] == ("192.168.48.86", 68)
    bare = serialize(request(MessageType.INFORM, mac=KNOWN_MAC))
    assert agent.handle(bare, ("192.168.48.86", 68)) is None
    assert agent.handle(bare, ("192.168.48.87", 68)) is None
    assert agent.metrics.dropped_by_reason["bad_ciaddr"].value == 2


def test_replies_to_strangers_are_not_remembered(tmp_path: Path) -> None:
    """NAKs and INFORM ACKs to MACs without a lease are computed each time: made-up MACs
    cannot fill the memo and push the pool's clients out (before: each was remembered)."""
    agent = make_agent(tmp_path, 64)
    assert agent.state is not None
    for n in range(500):
        mac = f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}"
        nak = request(MessageType.REQUEST, mac=mac, server_id=SERVER, requested=KNOWN_IP)
        inform = request(MessageType.INFORM, mac=mac, ciaddr=IPv4Address("192.168.48.90"))
        assert agent.handle(serialize(nak), ("0.0.0.0", 68)) is not None
        assert agent.handle(serialize(inform), ("192.168.48.90", 68)) is not None
    assert len(agent.state.replies) == 0
    known = serialize(request(MessageType.INFORM, mac=KNOWN_MAC, ciaddr=KNOWN_IP))
    agent.handle(known, ("192.168.48.86", 68))
    assert len(agent.state.replies) == 1


ADDRESSES = st.sampled_from([None, KNOWN_IP, IPv4Address("192.168.48.87"), SERVER])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Agent, Agent]:
    """An agent that remembers replies and one that does not, for the same pool."""
    remembering = make_agent(tmp_path_factory.mktemp("remembering"), 64)
    return remembering, make_agent(tmp_path_factory.mktemp("fresh"), 0)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(
        [MessageType.DISCOVER, MessageType.REQUEST, MessageType.INFORM, MessageType.RELEASE]
    ),
    mac=st.sampled_from([KNOWN_MAC, "fa:e7:60:2e:37:dd", "02:00:00:00:00:99"]),
    ciaddr=ADDRESSES,
    giaddr=st.sampled_from([None, IPv4Address("192.168.48.250")]),
    requested=ADDRESSES,
    server_id=st.sampled_from([None, SERVER, IPv4Address("192.168.48.78")]),
    broadcast=st.booleans(),
    prl=st.one_of(st.none(), st.binary(max_size=12)),
    xids=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    source=st.sampled_from(SOURCES),
)
def test_remembered_and_fresh_answers_agree(
    pair: tuple[Agent, Agent],
    kind: MessageType,
    mac: str,
    ciaddr: IPv4Address | None,
    giaddr: IPv4Address | None,
    requested: IPv4Address | None,
    server_id: IPv4Address | None,
    broadcast: bool,
    prl: bytes | None,
    xids: tuple[int, int],
    source: tuple[str, int],
) -> None:
    remembering, fresh = pair
    packet = request(
        kind,
        mac=mac,
        ciaddr=ciaddr,
        giaddr=giaddr,
        requested=requested,
        server_id=server_id,
        broadcast=broadcast,
        prl=prl,
    )
    data = serialize(packet)
    remembering.handle(with_xid(data, xids[0]), source)
    second = with_xid(data, xids[1])
    answer = remembering.handle(second, source)
    assert answer == fresh.handle(second, source)
    if answer is not None:
        assert parse(answer[0]).xid == xids[1]
        if giaddr is not None:
            assert answer[1] == Relay(giaddr)


def test_every_source_is_answered_as_itself_past_the_ingress_cache(tmp_path: Path) -> None:
    """Through more sources than the agent keeps parsed (INFORMs from the pool's subnet,
    and relayed ones): each is answered to its own address, and the cache stays bounded.
    (Before INFORM needed an address of the subnet, this sent INFORMs without ciaddr from
    10.1.x sources, answered to the datagram's source: those are dropped now, see above.)"""
    agent = make_agent(tmp_path, 0)
    subnet = list(IPv4Network("192.168.48.0/24").hosts())
    subnet.remove(SERVER)
    for n in range(INGRESS_CACHE_SIZE + 100):
        address = subnet[n % len(subnet)]
        source = (str(address), 68 if n < len(subnet) else 1024 + n)
        data = serialize(request(MessageType.INFORM, mac=KNOWN_MAC, ciaddr=address))
        answer = agent.handle(data, source)
        assert answer is not None
        assert answer[2] == (str(address), 68)
        assert len(agent._ingress) <= INGRESS_CACHE_SIZE

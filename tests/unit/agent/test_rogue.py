"""Rogue DHCP server detection, the pure part: what a frame on the client port is, the
window a server stays reported in, the probe and its MAC; and the watch's bookkeeping
(metrics, Events, the report) driven without a socket."""

from __future__ import annotations

import asyncio
import itertools
import random
import struct
from ipaddress import IPv4Address
from typing import Any

import pytest

from vmdhcp.agent.frames import udp_frame
from vmdhcp.agent.metrics import AgentMetrics
from vmdhcp.agent.report import AgentReport, ReportedServer, Reporter
from vmdhcp.agent.rogue import (
    FOREIGN,
    MALFORMED,
    MAX_SERVERS,
    OTHER,
    OWN,
    PROBE_VENDOR_CLASS,
    UNMATCHED_PROBE,
    RogueServer,
    RogueTracker,
    classify,
    jittered,
    probe_mac,
    probe_payload,
)
from vmdhcp.agent.rogue_watch import FILTER, RogueWatch
from vmdhcp.dhcp import MessageType, OptionCode, Packet, parse, serialize

OURS = IPv4Address("10.77.0.2")
ROGUE = IPv4Address("10.77.0.9")
ROGUE_MAC = bytes.fromhex("020000000009")
PROBE = bytes.fromhex("0a1122334455")
VM = bytes.fromhex("02aa00000001")


def answer(
    server: IPv4Address | None = ROGUE,
    message_type: int = MessageType.OFFER,
    chaddr: bytes = VM,
    xid: int = 7,
    op: int = 2,
    source: IPv4Address = ROGUE,
    port: int = 68,
) -> bytes:
    options = {int(OptionCode.MESSAGE_TYPE): bytes((message_type,))}
    if server is not None:
        options[int(OptionCode.SERVER_IDENTIFIER)] = server.packed
    payload = serialize(Packet(op=op, xid=xid, chaddr=chaddr + bytes(10), options=options))
    return udp_frame(
        src_mac=ROGUE_MAC,
        dst_mac=b"\xff" * 6,
        src_ip=source,
        dst_ip=IPv4Address("255.255.255.255"),
        src_port=67,
        dst_port=port,
        payload=payload,
    )


def test_a_foreign_offer_or_ack_names_its_server_and_the_mac_it_came_from() -> None:
    for kind in (MessageType.OFFER, MessageType.ACK):
        result = classify(answer(message_type=kind), OURS, PROBE, ())
        assert result == (FOREIGN, RogueServer(str(ROGUE), "02:00:00:00:00:09"))


def test_our_own_server_is_not_foreign() -> None:
    assert classify(answer(server=OURS), OURS, PROBE, ()) == (OWN, None)


def test_without_option_54_the_ip_source_names_the_server() -> None:
    assert classify(answer(server=None), OURS, PROBE, ())[1] == RogueServer(
        str(ROGUE), "02:00:00:00:00:09"
    )
    assert classify(answer(server=None, source=OURS), OURS, PROBE, ()) == (OWN, None)
    assert classify(answer(server=None, source=IPv4Address(0)), OURS, PROBE, ())[0] == MALFORMED


def test_answers_to_the_probe_count_only_for_a_recent_probes_xid() -> None:
    frame = answer(chaddr=PROBE, xid=41)
    assert classify(frame, OURS, PROBE, (40, 41))[0] == FOREIGN
    assert classify(frame, OURS, PROBE, (40,)) == (UNMATCHED_PROBE, None)
    # another client's answers carry its own xid: they count whatever it is
    assert classify(answer(chaddr=VM, xid=41), OURS, PROBE, (40,))[0] == FOREIGN


def test_a_foreign_nak_is_a_sighting_and_our_own_is_not() -> None:
    """A rogue that only NAKs (it knows none of our clients) still breaks them: each NAK
    sends a VM back to INIT (before: NAKs were not looked at)."""
    result, server = classify(answer(message_type=MessageType.NAK), OURS, PROBE, ())
    assert (result, server) == (FOREIGN, RogueServer(str(ROGUE), ROGUE_MAC.hex(":")))
    assert classify(answer(server=OURS, message_type=MessageType.NAK), OURS, PROBE, ()) == (
        OWN,
        None,
    )


def test_requests_and_other_traffic_are_not_sightings() -> None:
    assert classify(answer(message_type=MessageType.INFORM), OURS, PROBE, ())[0] == OTHER
    assert classify(answer(op=1, message_type=MessageType.REQUEST), OURS, PROBE, ())[0] == OTHER
    assert classify(answer(port=67), OURS, PROBE, ())[0] == OTHER
    arp = answer()[:12] + b"\x08\x06" + answer()[14:]
    assert classify(arp, OURS, PROBE, ())[0] == OTHER


def test_any_garbage_is_counted_malformed_never_raised() -> None:
    frame = answer()
    assert classify(frame[:30], OURS, PROBE, ())[0] == MALFORMED
    assert classify(frame[:50], OURS, PROBE, ())[0] == MALFORMED  # the DHCP header cut
    bad_cookie = bytearray(frame)
    bad_cookie[14 + 20 + 8 + 236] ^= 0xFF
    assert classify(bytes(bad_cookie), OURS, PROBE, ())[0] == MALFORMED
    bad_54 = frame.replace(b"\x36\x04" + ROGUE.packed, b"\x36\x03" + ROGUE.packed[:3] + b"\x00")
    assert classify(bad_54, OURS, PROBE, ())[0] == MALFORMED
    rng = random.Random(14)
    for _ in range(3000):
        size = rng.randrange(0, 400)
        noise = bytes(rng.randrange(256) for _ in range(size))
        mutated = bytearray(frame)
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for data in (noise, bytes(mutated), frame[: rng.randrange(len(frame))]):
            result, server = classify(data, OURS, PROBE, ())
            assert result in (FOREIGN, OWN, UNMATCHED_PROBE, OTHER, MALFORMED)
            assert (server is not None) == (result == FOREIGN)


def test_a_server_stays_for_three_intervals_after_it_was_last_seen() -> None:
    tracker = RogueTracker(window=3.0)
    rogue = RogueServer("10.77.0.9", "02:00:00:00:00:09")
    assert tracker.seen(rogue, 0.0, "T0") is True
    assert tracker.seen(rogue, 2.0, "T2") is False  # still the one first seen at T0
    assert tracker.expire(4.9) == []
    assert tracker.servers() == [(rogue, "T0")]
    assert tracker.expire(5.1) == [rogue]
    assert len(tracker) == 0
    assert tracker.seen(rogue, 6.0, "T6") is True  # back: new again


def test_the_tracker_keeps_at_most_max_servers() -> None:
    tracker = RogueTracker(window=3.0)
    for n in range(MAX_SERVERS + 10):
        tracker.seen(RogueServer(f"10.0.0.{n}", "02:00:00:00:00:01"), 0.0, "T")
    assert len(tracker) == MAX_SERVERS


def test_the_probe_mac_is_unicast_locally_administered_and_no_leases() -> None:
    taken = {"02:00:00:00:00:01"}
    draws = itertools.chain([bytes.fromhex("030000000001")], itertools.repeat(b"\xff" * 6))
    # the first draw, made unicast and local, is a lease's MAC: drawn again
    mac = probe_mac(lambda n: next(draws), taken)
    assert mac == bytes.fromhex("feffffffffff")
    rng = random.Random(3)
    for _ in range(200):
        mac = probe_mac(rng.randbytes, taken)
        assert mac[0] & 0x02
        assert not mac[0] & 0x01


def test_the_probe_is_a_broadcast_discover_from_the_probe_mac() -> None:
    packet = parse(probe_payload(PROBE, 0xDEADBEEF))
    assert packet.op == 1
    assert packet.xid == 0xDEADBEEF
    assert packet.broadcast
    assert packet.chaddr[:6] == PROBE
    assert packet.message_type == MessageType.DISCOVER
    assert packet.options[int(OptionCode.VENDOR_CLASS_IDENTIFIER)] == PROBE_VENDOR_CLASS
    assert int(OptionCode.REQUESTED_ADDRESS) not in packet.options


def test_jitter_is_ten_percent_either_way() -> None:
    assert jittered(60.0, 0.0) == pytest.approx(54.0)
    assert jittered(60.0, 0.999999) == pytest.approx(66.0, abs=1e-3)


def test_the_socket_filter_is_well_formed() -> None:
    """Every jump lands inside the program, on the accept or reject at its end."""
    assert FILTER[-2] == (0x06, 0, 0, 0x40000)
    assert FILTER[-1] == (0x06, 0, 0, 0)
    for pc, (code, jt, jf, _) in enumerate(FILTER):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert pc + 1 + jt < len(FILTER)
            assert pc + 1 + jf < len(FILTER)
    assert len(b"".join(struct.pack("HBBI", *i) for i in FILTER)) == 8 * len(FILTER)


# -- the watch's bookkeeping, without a socket ---------------------------------------------


class Posted:
    def __init__(self) -> None:
        self.rogue: list[tuple[RogueServer, bool]] = []
        self.uid = "uid-1"

    def post_rogue(self, server: RogueServer, present: bool) -> None:
        self.rogue.append((server, present))


class Wanted:
    def __init__(self, stored: AgentReport | None = None) -> None:
        self.reports: list[AgentReport] = []
        self._stored = stored
        self.withdrawn = False

    def want(self, report: AgentReport) -> None:
        self.reports.append(report)

    async def stored(self, pool: tuple[str, str]) -> AgentReport | None:
        return self._stored

    async def close(self) -> None:
        return None

    def withdraw(self) -> None:
        self.withdrawn = True


def watch(serving: list[bool], metrics: AgentMetrics, report: Wanted | None = None) -> Any:
    rogue = RogueWatch(
        "eth1",
        1.0,
        metrics,
        serving=lambda: serving[0],
        server_id=lambda: OURS,
        pool_macs=lambda: (),
    )
    posted = Posted()
    rogue.events = posted  # type: ignore[assignment]
    wanted = report or Wanted()
    pool, uid = ("default", "net-48"), lambda: "uid-1"
    rogue.reporter = Reporter(wanted, pool, "agent-0", uid, 1.0)  # type: ignore[arg-type]
    rogue.reporter.rogue_checking = True  # as `attach` makes it
    rogue.report = wanted  # type: ignore[attr-defined]  # the fake writer, for assertions
    return rogue, posted


def series(metrics: AgentMetrics) -> dict[tuple[str, str], float]:
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "vmdhcp_agent_rogue_server_info":
                found[(sample.labels["server_id"], sample.labels["mac"])] = sample.value
    return found


async def test_a_sighting_is_metric_event_and_report_and_a_standby_reports_nothing() -> None:
    serving, metrics = [True], AgentMetrics()
    rogue, posted = watch(serving, metrics)
    await rogue._tick()  # serving: active (no socket: no probe sent)
    server = RogueServer("10.77.0.9", "02:00:00:00:00:09")
    rogue._seen(server)
    rogue._seen(server)  # again: nothing new but the sighting (the poster rate-limits)
    assert metrics.rogue_servers._value.get() == 1
    assert series(metrics) == {("10.77.0.9", "02:00:00:00:00:09"): 1.0}
    assert posted.rogue == [(server, True), (server, True)]
    resumed, report = rogue.report.reports  # what it starts from (nothing), then the server
    assert resumed.rogue_servers == ()
    assert report.rogue_servers == (ReportedServer("10.77.0.9", "02:00:00:00:00:09"),)
    assert report.ippool_uid == "uid-1"

    serving[0] = False  # leadership lost: the metrics go, no Event, the report is left
    await rogue._tick()
    assert metrics.rogue_servers._value.get() == 0
    assert series(metrics) == {}
    rogue._seen(server)
    assert metrics.rogue_servers._value.get() == 0
    assert len(posted.rogue) == 2
    assert len(rogue.report.reports) == 2
    assert rogue.report.withdrawn  # nothing more is written by a standby


async def test_a_server_not_seen_for_the_window_is_forgotten_with_an_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("vmdhcp.agent.rogue_watch.time.monotonic", lambda: clock[0])
    serving, metrics = [True], AgentMetrics()
    rogue, posted = watch(serving, metrics)
    await rogue._tick()
    server = RogueServer("10.77.0.9", "02:00:00:00:00:09")
    rogue._seen(server)
    clock[0] += 2.9
    await rogue._tick()
    assert metrics.rogue_servers._value.get() == 1
    clock[0] += 0.2  # 3.1 s: three intervals of 1 s without it
    await rogue._tick()
    assert metrics.rogue_servers._value.get() == 0
    assert series(metrics) == {}
    assert posted.rogue == [(server, True), (server, False)]
    assert rogue.report.reports[-1].rogue_servers == ()


async def test_a_new_leader_starts_from_the_stored_report_without_new_events() -> None:
    stored = AgentReport(
        ("default", "net-48"),
        "uid-1",
        "agent-1",
        1.0,
        (ReportedServer("10.77.0.9", "02:00:00:00:00:09", "T0"),),
    )
    serving, metrics = [True], AgentMetrics()
    rogue, posted = watch(serving, metrics, Wanted(stored))
    await rogue._tick()
    assert metrics.rogue_servers._value.get() == 1
    assert posted.rogue == []  # not seen by this agent yet: nothing announced
    rogue._seen(RogueServer("10.77.0.9", "02:00:00:00:00:09"))
    # nothing new to tell the controller: the stored report is only kept level
    assert [r.rogue_servers for r in rogue.report.reports] == [stored.rogue_servers]
    # a report about an earlier pool of that name is not taken over
    other = AgentReport(stored.ippool, "uid-0", "agent-1", 1.0, stored.rogue_servers)
    rogue, _ = watch([True], AgentMetrics(), Wanted(other))
    await rogue._tick()
    assert len(rogue.tracker) == 0


async def test_a_failing_tick_is_logged_and_the_check_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vmdhcp.agent.rogue_watch.FIRST_PROBE_SECONDS", 0.01)
    calls = []
    three = asyncio.Event()

    def serving() -> bool:
        calls.append(1)
        if len(calls) >= 3:
            three.set()
        raise RuntimeError("boom")

    rogue = RogueWatch(
        "eth1", 0.01, AgentMetrics(), serving=serving, server_id=lambda: OURS, pool_macs=tuple
    )
    task = asyncio.create_task(rogue._run())
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    assert "rogue dhcp server check failed" in caplog.text


class EventApi:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        return {}


async def test_rogue_events_are_warnings_naming_the_server_at_most_every_ten_minutes() -> None:
    from vmdhcp.agent.events import EventPoster

    api = EventApi()
    poster = EventPoster(api, "default", "net-48", "vm-dhcp-agent")  # type: ignore[arg-type]
    server = RogueServer("10.77.0.9", "02:00:00:00:00:09")
    for _ in range(3):
        poster.post_rogue(server, present=True)
    poster.post_rogue(RogueServer("10.77.0.10", "02:00:00:00:00:10"), present=True)
    poster.post_rogue(server, present=False)
    await asyncio.gather(*poster._tasks)
    found = sorted((b["reason"], b["type"], b["message"]) for b in api.bodies)  # 3 threads
    assert [(reason, kind) for reason, kind, _ in found] == [
        ("RogueDHCPServer", "Warning"),
        ("RogueDHCPServer", "Warning"),
        ("RogueDHCPServerGone", "Normal"),
    ]
    assert "server identifier 10.77.0.9, MAC 02:00:00:00:00:09" in found[1][2]
    assert all(b["involvedObject"]["kind"] == "IPPool" for b in api.bodies)


async def test_thousands_of_forged_offers_cost_the_event_loop_and_the_api_a_bounded_amount() -> (
    None
):
    """Forged OFFERs with random server identifiers and source MACs, as fast as a socket
    delivers them: the receive thread hands few to the event loop (before: one
    call_soon_threadsafe each), and few Events are posted (before: one per sighting, also for
    servers the full tracker refused)."""
    import socket
    import threading
    import time

    serving, metrics = [True], AgentMetrics()
    rogue, posted = watch(serving, metrics)
    await rogue._tick()
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.settimeout(0.2)
    rogue.sock = reader
    rogue._own, rogue._loop = OURS, asyncio.get_running_loop()
    handed = [0]
    seen = rogue._seen

    def counted(server: RogueServer) -> None:
        handed[0] += 1
        seen(server)

    rogue._seen = counted
    rng = random.Random(7)
    frames = []
    for _n in range(5000):
        server_id = IPv4Address(rng.getrandbits(32) | 0x01000000)
        frame = bytearray(answer(server=server_id))
        frame[6:12] = rng.getrandbits(48).to_bytes(6, "big")
        frames.append(bytes(frame))
    thread = threading.Thread(target=rogue._receive, daemon=True)
    began = time.monotonic()
    thread.start()
    for frame in frames:
        writer.send(frame)
    for _ in range(3000):  # the receive thread has read them all
        if metrics.rogue_frames["foreign"].value >= len(frames):
            break
        await asyncio.sleep(0.01)
    rogue._stop.set()
    await asyncio.to_thread(thread.join, 2.0)
    await asyncio.sleep(0)  # the hand-offs queued reach the loop
    seconds = time.monotonic() - began
    reader.close()
    writer.close()
    assert handed[0] <= rogue.gate.per_second * (seconds + 1)
    assert rogue.gate.refused >= len(frames) - handed[0]
    assert len(rogue.tracker) == MAX_SERVERS
    assert len(posted.rogue) <= 8  # the event budget's burst, whatever the number
    assert all(server in rogue.tracker for server, _ in posted.rogue)


def test_a_known_server_is_handed_off_at_most_once_a_second() -> None:
    from vmdhcp.agent.rogue import HandOffGate, TokenBucket

    gate = HandOffGate(per_second=3)
    a, b = (
        RogueServer("10.77.0.9", "02:00:00:00:00:09"),
        RogueServer("10.77.0.8", "02:00:00:00:00:08"),
    )
    assert gate.admit(a, 10.0)
    assert not gate.admit(a, 10.5)
    assert gate.admit(b, 10.5)
    assert gate.admit(a, 11.0)
    others = [RogueServer(f"10.1.0.{n}", "02:00:00:00:00:01") for n in range(5)]
    assert [gate.admit(s, 11.2) for s in others] == [True, True, False, False, False]
    bucket = TokenBucket(rate=1.0, burst=2)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(1.0)
    assert not bucket.take(1.0)


def test_sixteen_forged_servers_cannot_hide_a_real_one() -> None:
    """Before, the first 16 server identifiers seen filled the tracker for good: a real
    rogue seen after them was never reported."""
    tracker = RogueTracker(window=3.0)  # one interval of 1 s
    for n in range(MAX_SERVERS):
        tracker.seen(RogueServer(f"10.66.0.{n}", "02:00:00:00:66:01"), 0.0, "T")
    real = RogueServer(str(ROGUE), ROGUE_MAC.hex(":"), probed=True)  # answered our probe
    assert tracker.seen(real, 0.5, "T") is True
    assert real in tracker
    # more forgeries, probed or not, do not push it out
    for n in range(100):
        tracker.seen(RogueServer(f"10.67.0.{n}", "02:00:00:00:67:01"), 0.6, "T")
    assert real in tracker
    assert len(tracker) == MAX_SERVERS


def test_a_server_seen_again_and_again_outlives_a_flood_of_one_off_forgeries() -> None:
    tracker = RogueTracker(window=3.0)
    real = RogueServer(str(ROGUE), ROGUE_MAC.hex(":"))  # seen on other clients' traffic
    for n in range(MAX_SERVERS - 1):
        tracker.seen(RogueServer(f"10.66.0.{n}", "02:00:00:00:66:01"), 0.0, "T")
    tracker.seen(real, 0.0, "T")
    for step in range(1, 30):  # it answers every 0.5 s; 20 forgeries arrive each time
        now = step * 0.5
        tracker.seen(real, now, "T")
        for n in range(20):
            tracker.seen(RogueServer(f"10.{step}.0.{n}", "02:00:00:00:67:01"), now, "T")
        assert real in tracker
    # stale forgeries made room for newer ones: the tracker follows what it sees now
    assert RogueServer("10.66.0.0", "02:00:00:00:66:01") not in tracker


def test_one_server_keeps_at_most_a_few_macs_the_latest() -> None:
    tracker = RogueTracker(window=3.0, macs_per_server=2)
    for n in range(5):
        tracker.seen(RogueServer(str(ROGUE), f"02:00:00:00:00:0{n}"), float(n), "T")
    assert [s.mac for s, _ in tracker.servers()] == ["02:00:00:00:00:03", "02:00:00:00:00:04"]
    assert len(tracker) == 1

"""Property fuzzing of the whole pipeline on hostile input.

`parse` may raise MalformedPacket and nothing else; whatever it accepts, `respond`, `serialize`
and the typed accessors handle without any exception. The example budget comes from
VMDHCP_FUZZ_EXAMPLES: a few thousand by default (part of every `make test`), 100,000 under
`make fuzz`.
"""

import contextlib
import dataclasses
import os
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.unit.dhcp.helpers import FROM_CLIENT, LAB, SAMPLE_NAMES, load
from tests.unit.dhcp.strategies import any_input
from vmdhcp.dhcp import (
    Lease,
    MalformedOption,
    MalformedPacket,
    Packet,
    Reply,
    StaticRoute,
    decode_option,
    parse,
    respond,
    serialize,
)

EXAMPLES = int(os.environ.get("VMDHCP_FUZZ_EXAMPLES", "2000"))
FULL = dataclasses.replace(
    LAB,
    mtu=1500,
    classless_routes=(StaticRoute(IPv4Network("10.0.0.0/8"), IPv4Address("192.168.48.2")),),
)


def exercise(data: bytes) -> None:
    try:
        packet = parse(data)
    except MalformedPacket:
        return
    assert isinstance(packet, Packet)
    # serialize accepts everything parse produces, and is a fixed point after one round.
    wire = serialize(packet)
    assert serialize(parse(wire)) == wire
    # the responder never raises, for a known or unknown client alike
    for leases in (
        {},
        {packet.mac: Lease(IPv4Address("192.168.49.7"), "fuzz")} if packet.mac else {},
    ):
        decision = respond(packet, leases, FULL, FROM_CLIENT, 0.0)
        if isinstance(decision, Reply):
            assert parse(serialize(decision.packet)).xid == packet.xid
    # the typed views only ever raise the remote error
    packet.summary()
    for code, value in packet.options.items():
        with contextlib.suppress(MalformedOption):
            decode_option(code, value)
    for accessor in ("requested_address", "server_identifier", "max_message_size",
                     "client_identifier", "lease_time"):  # fmt: skip
        with contextlib.suppress(MalformedOption):
            getattr(packet, accessor)


@pytest.mark.fuzz
@pytest.mark.timeout(max(120, EXAMPLES // 100))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(any_input)
@example(b"")
@example(load("dhclient-request"))
def test_fuzz_parse_respond_serialize(data: bytes) -> None:
    exercise(data)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_truncation_of_every_sample(name: str) -> None:
    data = load(name)
    outcomes = {"parsed": 0, "malformed": 0}
    for size in range(len(data) + 1):
        try:
            parse(data[:size])
        except MalformedPacket:
            outcomes["malformed"] += 1
        else:
            outcomes["parsed"] += 1
        exercise(data[:size])
    assert outcomes["malformed"] >= 240  # everything shorter than header and cookie
    assert outcomes["parsed"] >= 1


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_byte_of_every_sample_set_to_edge_values(name: str) -> None:
    data = bytearray(load(name))
    for pos in range(len(data)):
        original = data[pos]
        for value in (0x00, 0x01, 0x34, 0x35, 0x7F, 0xC0, 0xFF):
            data[pos] = value
            exercise(bytes(data))
        data[pos] = original

"""Every captured client packet gets the answer RFC 2131 asks for, and says what Kea and
dnsmasq said to the same clients."""

import dataclasses
from ipaddress import IPv4Address
from typing import NamedTuple

import pytest

from tests.unit.dhcp.helpers import (
    FROM_CLIENT,
    FROM_RELAY,
    LAB,
    OTHER_SERVER_IP,
    PACKETS_DIR,
    RELAY_IP,
    SERVER_IP,
    ip,
    load,
)
from vmdhcp.dhcp import (
    BROADCAST,
    ZERO_ADDRESS,
    Destination,
    Drop,
    DropReason,
    Ingress,
    L2Unicast,
    Lease,
    MessageType,
    Packet,
    Relay,
    Reply,
    decode_option,
    parse,
    respond,
    serialize,
)


class Sample(NamedTuple):
    client: str
    mac: str
    address: IPv4Address  # what the lab servers gave this client
    ingress: Ingress
    destination: Destination


SAMPLES = {
    "dhclient": Sample(
        "dhclient",
        "02:00:00:00:00:01",
        ip("192.168.49.1"),
        FROM_CLIENT,
        L2Unicast("02:00:00:00:00:01", ip("192.168.49.1")),
    ),
    "dhcpcd": Sample(
        "dhcpcd",
        "02:00:00:00:00:02",
        ip("192.168.49.2"),
        FROM_CLIENT,
        L2Unicast("02:00:00:00:00:02", ip("192.168.49.2")),
    ),
    "udhcpc": Sample(
        "udhcpc",
        "02:00:00:00:00:02",
        ip("192.168.49.2"),
        FROM_CLIENT,
        L2Unicast("02:00:00:00:00:02", ip("192.168.49.2")),
    ),
    "perfdhcp": Sample(
        "perfdhcp", "02:00:00:00:00:00", ip("192.168.49.0"), FROM_RELAY, Relay(RELAY_IP)
    ),
}
CLIENTS = sorted(SAMPLES)


def answer(name: str, sample: Sample, leases: dict[str, Lease] | None = None) -> Reply | Drop:
    table = {sample.mac: Lease(sample.address, hostname="vm")} if leases is None else leases
    return respond(parse(load(name)), table, LAB, sample.ingress, 0.0)


def test_every_sample_file_is_covered() -> None:
    names = {path.stem for path in PACKETS_DIR.glob("*.bin")}
    assert names == {f"{client}-{kind}" for client in CLIENTS for kind in ("discover", "request")}


@pytest.mark.parametrize("client", CLIENTS)
def test_discover_gets_an_offer_of_its_lease(client: str) -> None:
    sample = SAMPLES[client]
    request = parse(load(f"{client}-discover"))
    decision = answer(f"{client}-discover", sample)
    assert isinstance(decision, Reply)
    offer = decision.packet
    assert decision.message_type == MessageType.OFFER
    assert decision.destination == sample.destination
    assert offer.yiaddr == sample.address
    assert offer.ciaddr == ZERO_ADDRESS
    assert (offer.xid, offer.flags, offer.giaddr, offer.chaddr) == (
        request.xid,
        request.flags,
        request.giaddr,
        request.chaddr,
    )
    assert offer.options[54] == SERVER_IP.packed


@pytest.mark.parametrize("client", CLIENTS)
def test_request_for_its_lease_gets_an_ack(client: str) -> None:
    sample = SAMPLES[client]
    decision = answer(f"{client}-request", sample)
    assert isinstance(decision, Reply)
    assert decision.message_type == MessageType.ACK
    assert decision.destination == sample.destination
    assert decision.packet.yiaddr == sample.address


@pytest.mark.parametrize("client", CLIENTS)
def test_request_for_another_address_gets_a_nak(client: str) -> None:
    sample = SAMPLES[client]
    moved = {sample.mac: Lease(ip("192.168.50.50"))}
    decision = answer(f"{client}-request", sample, leases=moved)
    assert isinstance(decision, Reply)
    assert decision.message_type == MessageType.NAK
    relayed = sample.ingress is FROM_RELAY
    assert decision.destination == (Relay(RELAY_IP) if relayed else BROADCAST)
    assert decision.packet.yiaddr == ZERO_ADDRESS


@pytest.mark.parametrize("client", CLIENTS)
def test_request_selecting_another_server_is_dropped(client: str) -> None:
    sample = SAMPLES[client]
    config = dataclasses.replace(LAB, server_ip=OTHER_SERVER_IP)
    request = parse(load(f"{client}-request"))
    table = {sample.mac: Lease(sample.address)}
    assert respond(request, table, config, sample.ingress, 0.0) == Drop(DropReason.FOREIGN_SERVER)


@pytest.mark.parametrize("client", CLIENTS)
def test_unknown_client_discovering_is_ignored(client: str) -> None:
    sample = SAMPLES[client]
    strangers = {"02:00:00:00:00:ff": Lease(sample.address)}
    decision = answer(f"{client}-discover", sample, leases=strangers)
    assert decision == Drop(DropReason.UNKNOWN_MAC)


@pytest.mark.parametrize("client", CLIENTS)
def test_unknown_client_selecting_us_gets_a_nak(client: str) -> None:
    """Every captured REQUEST is a SELECTING one naming our server (RFC 2131 3.1 step 4)."""
    sample = SAMPLES[client]
    assert parse(load(f"{client}-request")).options[54] == SERVER_IP.packed
    strangers = {"02:00:00:00:00:ff": Lease(sample.address)}
    decision = answer(f"{client}-request", sample, leases=strangers)
    assert isinstance(decision, Reply)
    assert decision.message_type == MessageType.NAK
    relayed = sample.ingress is FROM_RELAY
    assert decision.destination == (Relay(RELAY_IP) if relayed else BROADCAST)


def test_udhcpc_576_byte_limit_and_its_request_list() -> None:
    decision = answer("udhcpc-discover", SAMPLES["udhcpc"])
    assert isinstance(decision, Reply)
    wire = serialize(decision.packet)
    assert len(wire) <= 576 - 28
    # PRL 1,3,6,12,15,28,42,119 plus what is always sent, and its client id echoed.
    assert set(decision.packet.options) == {1, 3, 6, 12, 15, 28, 42, 119, 51, 53, 54, 58, 59, 61}
    assert decision.packet.options[61] == b"\x01\x02\x00\x00\x00\x00\x02"


def test_dhcpcd_does_not_ask_for_a_host_name() -> None:
    decision = answer("dhcpcd-discover", SAMPLES["dhcpcd"])
    assert isinstance(decision, Reply)
    assert 12 not in decision.packet.options
    assert {28, 42, 119} <= set(decision.packet.options)


def test_perfdhcp_client_id_is_echoed_through_the_relay() -> None:
    decision = answer("perfdhcp-request", SAMPLES["perfdhcp"])
    assert isinstance(decision, Reply)
    assert decision.packet.options[61] == b"\x01\x02\x00\x00\x00\x00\x00"
    assert decision.packet.giaddr == RELAY_IP


# --- oracles: what Kea and dnsmasq answered to the same packets -------------------------------


def load_reply(name: str) -> Packet:
    return parse((PACKETS_DIR / "replies" / f"{name}.bin").read_bytes())


def decoded(packet: Packet, code: int) -> object:
    return decode_option(code, packet.options[code])


ORACLES = [
    # our reply to this sample, the anchor server's reply, header fields that may differ
    ("dhclient-discover", "kea-offer", set()),
    ("dhclient-request", "kea-ack", set()),
    ("perfdhcp-discover", "dnsmasq-relay-offer", {"siaddr"}),  # dnsmasq sets siaddr
    ("perfdhcp-request", "dnsmasq-relay-ack", {"siaddr"}),
]


@pytest.mark.parametrize(("name", "oracle", "differs"), ORACLES)
def test_we_say_what_the_anchor_servers_said(name: str, oracle: str, differs: set[str]) -> None:
    client = name.split("-")[0]
    decision = answer(name, SAMPLES[client])
    assert isinstance(decision, Reply)
    ours, theirs = decision.packet, load_reply(oracle)
    for field in ("op", "htype", "hlen", "xid", "flags", "ciaddr", "yiaddr", "siaddr", "giaddr"):
        if field not in differs:
            assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.chaddr[:6] == theirs.chaddr[:6]
    for code in theirs.options:
        assert decoded(ours, code) == decoded(theirs, code), code


def test_dnsmasq_replies_parse() -> None:
    offer = load_reply("dnsmasq-offer")
    ack = load_reply("dnsmasq-ack")
    assert offer.message_type == MessageType.OFFER
    assert ack.message_type == MessageType.ACK
    assert decoded(offer, 119) == ("lab.example", "svc.lab.example")
    assert offer.siaddr == SERVER_IP
    assert offer.yiaddr == ack.yiaddr == ip("192.168.49.1")

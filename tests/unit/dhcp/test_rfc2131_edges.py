"""RFC 2131's edges: every REQUEST state (4.3.2) for a client with and without a lease, the
NAK a selected server owes (3.1 step 4), DHCPINFORM without a lease (3.4), relays outside the
pool's subnet (4.3.1), and leases keyed by MAC rather than by client identifier (4.2)."""

import dataclasses
from ipaddress import IPv4Address
from typing import NamedTuple

import pytest

from tests.unit.dhcp.helpers import (
    FROM_CLIENT,
    FROM_RELAY,
    LAB,
    LEASE_IP,
    LEASES,
    MAC,
    NOW,
    OTHER_IP,
    OTHER_SERVER_IP,
    RELAY_IP,
    SERVER_IP,
    ip,
    request,
)
from vmdhcp.dhcp import (
    BROADCAST,
    BROADCAST_FLAG,
    ZERO_ADDRESS,
    Destination,
    Drop,
    DropReason,
    Ingress,
    Lease,
    MessageType,
    Packet,
    Relay,
    Reply,
    Unicast,
    respond,
)

M = MessageType
R = DropReason
STRANGER = "02:00:00:00:00:99"
OFF_SUBNET_IP = ip("10.9.9.9")  # LAB serves 192.168.48.0/21
FROM_ITSELF = Ingress("eth1", LEASE_IP, 68)  # a RENEWING client, unicast from its address
FROM_STRANGER = Ingress("eth1", OTHER_IP, 68)


class Ack(NamedTuple):
    destination: Destination


class Nak(NamedTuple):
    destination: Destination = BROADCAST


class Silent(NamedTuple):
    reason: DropReason


# (case, RFC section, request, ingress, expected): the REQUEST states of RFC 2131 4.3.2 for a
# client without a lease (STRANGER), and those for the client with one (MAC) that PATHS in
# test_responder.py does not already cover.
REQUESTS: list[tuple[str, str, Packet, Ingress, Ack | Nak | Silent]] = [
    # SELECTING: option 54 present, option 50 the offered address, ciaddr 0
    (
        "selecting us, no lease",
        "3.1 step 4",
        request(M.REQUEST, mac=STRANGER, server_id=SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Nak(),
    ),
    (
        "selecting us, no lease, no option 50",
        "3.1 step 4",
        request(M.REQUEST, mac=STRANGER, server_id=SERVER_IP),
        FROM_CLIENT,
        Nak(),
    ),
    (
        "selecting us through a relay, no lease",
        "3.1 step 4, 4.1",
        request(M.REQUEST, mac=STRANGER, server_id=SERVER_IP, requested=LEASE_IP, giaddr=RELAY_IP),
        FROM_RELAY,
        Nak(Relay(RELAY_IP)),
    ),
    (
        "selecting another server, no lease",
        "4.3.2 SELECTING",
        request(M.REQUEST, mac=STRANGER, server_id=OTHER_SERVER_IP, requested=LEASE_IP),
        FROM_CLIENT,
        Silent(R.UNKNOWN_MAC),
    ),
    # INIT-REBOOT: no option 54, option 50 the remembered address, ciaddr 0
    (
        "init-reboot, an address of another network",
        "4.3.2 INIT-REBOOT",
        request(M.REQUEST, requested=OFF_SUBNET_IP),
        FROM_CLIENT,
        Nak(),
    ),
    (
        "init-reboot, no lease",
        "4.3.2 INIT-REBOOT: no record, MUST remain silent",
        request(M.REQUEST, mac=STRANGER, requested=LEASE_IP),
        FROM_CLIENT,
        Silent(R.UNKNOWN_MAC),
    ),
    (
        "init-reboot, no lease, an address of another network",
        "4.3.2 INIT-REBOOT: no record, MUST remain silent",
        request(M.REQUEST, mac=STRANGER, requested=OFF_SUBNET_IP),
        FROM_CLIENT,
        Silent(R.UNKNOWN_MAC),
    ),
    # RENEWING: unicast from ciaddr, no option 54 or 50
    (
        "renewing with our option 54 (some clients send it), its lease",
        "4.3.2 RENEWING",
        request(M.REQUEST, ciaddr=LEASE_IP, server_id=SERVER_IP),
        FROM_ITSELF,
        Ack(Unicast(LEASE_IP)),
    ),
    (
        "renewing with our option 54, no lease",
        "3.1 step 4",
        request(M.REQUEST, mac=STRANGER, ciaddr=OTHER_IP, server_id=SERVER_IP),
        FROM_STRANGER,
        Nak(),
    ),
    # REBINDING: broadcast, ciaddr set, no option 54 or 50
    (
        "rebinding another address",
        "4.3.2 REBINDING",
        request(M.REQUEST, ciaddr=OTHER_IP, broadcast=True),
        FROM_CLIENT,
        Nak(),
    ),
    (
        "rebinding, no lease",
        "4.3.2 REBINDING",
        request(M.REQUEST, mac=STRANGER, ciaddr=OTHER_IP, broadcast=True),
        FROM_CLIENT,
        Silent(R.UNKNOWN_MAC),
    ),
    # INFORM without a lease
    (
        "inform, no lease",
        "3.4",
        request(M.INFORM, mac=STRANGER, ciaddr=OTHER_IP),
        FROM_STRANGER,
        Ack(Unicast(OTHER_IP)),
    ),
]


@pytest.mark.parametrize(
    ("case", "section", "packet", "ingress", "expected"),
    REQUESTS,
    ids=[row[0] for row in REQUESTS],
)
def test_request_states(
    case: str, section: str, packet: Packet, ingress: Ingress, expected: Ack | Nak | Silent
) -> None:
    decision = respond(packet, LEASES, LAB, ingress, NOW)
    if isinstance(expected, Silent):
        assert decision == Drop(expected.reason), section
        return
    assert isinstance(decision, Reply), f"{section}: {decision}"
    assert decision.message_type == (M.ACK if isinstance(expected, Ack) else M.NAK), section
    assert decision.destination == expected.destination, section


# --- the NAK of a selected server that has no lease for the client (3.1 step 4) ----------------


def test_nak_to_a_client_without_a_lease_says_who_and_why() -> None:
    client_id = b"\x01" + bytes.fromhex(STRANGER.replace(":", ""))
    relay_info = b"\x01\x04port"
    packet = request(
        M.REQUEST,
        mac=STRANGER,
        server_id=SERVER_IP,
        requested=LEASE_IP,
        extra={61: client_id, 82: relay_info, 55: bytes([1, 3, 6, 12, 15])},
    )
    decision = respond(packet, LEASES, LAB, FROM_CLIENT, NOW)
    assert isinstance(decision, Reply)
    nak = decision.packet
    assert dict(nak.options) == {
        53: bytes([M.NAK]),
        54: SERVER_IP.packed,
        56: b"no lease for this client",
        61: client_id,
        82: relay_info,
    }
    assert (nak.ciaddr, nak.yiaddr, nak.siaddr) == (ZERO_ADDRESS,) * 3
    assert (nak.xid, nak.chaddr) == (packet.xid, packet.chaddr)
    assert decision.destination == BROADCAST


def test_nak_to_a_client_without_a_lease_through_a_relay_is_broadcast_by_the_relay() -> None:
    packet = request(M.REQUEST, mac=STRANGER, server_id=SERVER_IP, giaddr=RELAY_IP)
    decision = respond(packet, LEASES, LAB, FROM_RELAY, NOW)
    assert isinstance(decision, Reply)
    assert decision.message_type == M.NAK
    assert decision.packet.flags & BROADCAST_FLAG  # 4.3.2: the relay broadcasts it
    assert decision.destination == Relay(RELAY_IP)


def test_a_malformed_option_50_is_not_naked_even_for_a_stranger() -> None:
    packet = request(M.REQUEST, mac=STRANGER, server_id=SERVER_IP, extra={50: b"\x0a\x00"})
    assert respond(packet, LEASES, LAB, FROM_CLIENT, NOW) == Drop(R.MALFORMED)


def test_an_empty_lease_table_still_naks_requests_that_name_us() -> None:
    packet = request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP)
    decision = respond(packet, {}, LAB, FROM_CLIENT, NOW)
    assert isinstance(decision, Reply)
    assert decision.message_type == M.NAK


# --- DHCPINFORM whoever sends it (3.4, 4.3.5) ----------------------------------------------------


@pytest.mark.parametrize(
    ("ciaddr", "giaddr", "ingress", "destination"),
    [
        (OTHER_IP, None, FROM_STRANGER, Unicast(OTHER_IP)),
        (OTHER_IP, RELAY_IP, FROM_RELAY, Relay(RELAY_IP)),
    ],
    ids=["ciaddr", "relay"],
)
def test_inform_without_a_lease_gets_the_pools_configuration(
    ciaddr: IPv4Address | None,
    giaddr: IPv4Address | None,
    ingress: Ingress,
    destination: Destination,
) -> None:
    """The same ACK as a client with a lease gets, but for the lease's host name."""
    stranger = request(M.INFORM, mac=STRANGER, ciaddr=ciaddr, giaddr=giaddr)
    known = stranger._replace(chaddr=request(M.INFORM).chaddr)
    ours = respond(stranger, LEASES, LAB, ingress, NOW)
    theirs = respond(known, LEASES, LAB, ingress, NOW)
    assert isinstance(ours, Reply)
    assert isinstance(theirs, Reply)
    assert ours.destination == destination
    assert theirs.packet.options[12] == b"vm1"
    assert dict(ours.packet.options) == {
        code: value for code, value in theirs.packet.options.items() if code != 12
    }
    assert not {12, 51, 58, 59} & set(ours.packet.options)
    assert {53, 54, 1, 3, 6, 15} <= set(ours.packet.options)
    assert ours.packet.yiaddr == ZERO_ADDRESS
    assert ours.packet.ciaddr == (ciaddr or ZERO_ADDRESS)


# --- relays outside the pool's subnet (4.3.1) ---------------------------------------------------

KINDS = (M.DISCOVER, M.REQUEST, M.DECLINE, M.RELEASE, M.INFORM)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name.lower() for k in KINDS])
@pytest.mark.parametrize("mac", [MAC, STRANGER], ids=["lease", "no-lease"])
@pytest.mark.parametrize(
    "giaddr",
    [ip("192.168.47.255"), ip("192.168.56.0"), ip("10.0.0.1"), ip("255.255.255.255")],
    ids=str,
)
def test_a_relay_outside_the_subnet_gets_nothing(
    kind: MessageType, mac: str, giaddr: IPv4Address
) -> None:
    packet = request(kind, mac=mac, giaddr=giaddr, server_id=SERVER_IP, requested=LEASE_IP)
    decision = respond(packet, LEASES, LAB, Ingress("eth1", giaddr, 67), NOW)
    assert decision == Drop(R.FOREIGN_SUBNET)  # and no Declined or Released event


@pytest.mark.parametrize("ciaddr", [None, ip("10.1.2.3"), ip("192.168.56.1")], ids=str)
def test_an_inform_without_an_address_of_the_subnet_is_dropped(
    ciaddr: IPv4Address | None,
) -> None:
    """3.4: the client already has an address (of this subnet: we serve one) and the ACK is
    unicast to it; 0.0.0.0 or an outside address would have us send anywhere a stranger
    likes."""
    for mac in (STRANGER, request(M.INFORM).chaddr[:6].hex(":")):
        packet = request(M.INFORM, mac=mac, ciaddr=ciaddr)
        assert respond(packet, LEASES, LAB, FROM_STRANGER, NOW) == Drop(R.BAD_CIADDR)


@pytest.mark.parametrize(
    "giaddr", [ip("192.168.48.0"), ip("192.168.55.255"), SERVER_IP], ids=str
)  # the /21's network and broadcast addresses, and our own: no relay has those
def test_a_relay_that_cannot_be_one_gets_nothing(giaddr: IPv4Address) -> None:
    packet = request(M.DISCOVER, giaddr=giaddr)
    decision = respond(packet, LEASES, LAB, Ingress("eth1", giaddr, 67), NOW)
    assert decision == Drop(R.FOREIGN_SUBNET)


@pytest.mark.parametrize(
    "giaddr", [ip("192.168.48.1"), RELAY_IP, ip("192.168.55.254")], ids=str
)  # the /21's first and last host addresses count as inside
def test_a_relay_inside_the_subnet_is_answered(giaddr: IPv4Address) -> None:
    packet = request(M.DISCOVER, giaddr=giaddr)
    decision = respond(packet, LEASES, LAB, Ingress("eth1", giaddr, 67), NOW)
    assert isinstance(decision, Reply)
    assert decision.destination == Relay(giaddr)
    assert decision.packet.yiaddr == LEASE_IP


def test_giaddr_zero_is_no_relay_whatever_object_holds_it() -> None:
    """`parse` shares one 0.0.0.0 object; a hand-built packet may hold another."""
    packet = request(M.DISCOVER)._replace(giaddr=IPv4Address("0.0.0.0"))
    assert packet.giaddr is not ZERO_ADDRESS
    assert isinstance(respond(packet, LEASES, LAB, FROM_CLIENT, NOW), Reply)


def test_the_subnet_check_follows_the_pool() -> None:
    config = dataclasses.replace(LAB, subnet=LAB.subnet.supernet(new_prefix=8))
    packet = request(M.DISCOVER, giaddr=ip("192.10.0.1"))
    assert respond(packet, LEASES, LAB, FROM_RELAY, NOW) == Drop(R.FOREIGN_SUBNET)
    assert isinstance(respond(packet, LEASES, config, FROM_RELAY, NOW), Reply)


# --- leases keyed by MAC, not by client identifier (4.2) ----------------------------------------

CLIENT_IDS = {
    "none": None,
    "hardware": b"\x01" + bytes.fromhex(MAC.replace(":", "")),
    "duid": b"\xff\x00\x00\x00\x01\x00\x04" + bytes(16),
    "opaque": b"\x00initrd-stage",
}


@pytest.mark.parametrize("client_id", CLIENT_IDS.values(), ids=CLIENT_IDS.keys())
def test_every_client_identifier_of_a_mac_gets_its_one_lease(client_id: bytes | None) -> None:
    """A VM's firmware, initrd and OS may each send another option 61 (or none): one address."""
    extra = {} if client_id is None else {61: client_id}
    for packet in (
        request(M.DISCOVER, extra=extra),
        request(M.REQUEST, server_id=SERVER_IP, requested=LEASE_IP, extra=extra),
        request(M.REQUEST, requested=LEASE_IP, extra=extra),
    ):
        decision = respond(packet, LEASES, LAB, FROM_CLIENT, NOW)
        assert isinstance(decision, Reply)
        assert decision.message_type in (M.OFFER, M.ACK)
        assert decision.packet.yiaddr == LEASE_IP
        assert decision.packet.options.get(61) == client_id


def test_one_client_identifier_on_two_macs_gets_two_leases() -> None:
    """The trade-off: option 61 does not identify a client here, the MAC does."""
    leases = {MAC: Lease(LEASE_IP), STRANGER: Lease(OTHER_IP)}
    shared = {61: b"\x00same-id"}
    offered = []
    for mac in (MAC, STRANGER):
        decision = respond(request(M.DISCOVER, mac=mac, extra=shared), leases, LAB, FROM_CLIENT, 0)
        assert isinstance(decision, Reply)
        offered.append(decision.packet.yiaddr)
    assert offered == [LEASE_IP, OTHER_IP]

"""Shared fixtures for the DHCP core tests: captured packets, the lab pool, packet builders."""

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from vmdhcp.dhcp import (
    BROADCAST_FLAG,
    Ingress,
    Lease,
    MessageType,
    OpCode,
    OptionCode,
    Packet,
    ServerConfig,
)
from vmdhcp.mac import mac_to_bytes

PACKETS_DIR = Path(__file__).resolve().parents[2] / "data" / "packets"
SAMPLE_NAMES = tuple(sorted(path.stem for path in PACKETS_DIR.glob("*.bin")))


def load(name: str) -> bytes:
    """A captured client packet from tests/data/packets (`dhclient-discover`, ...)."""
    return (PACKETS_DIR / f"{name}.bin").read_bytes()


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


SERVER_IP = ip("192.168.48.77")
OTHER_SERVER_IP = ip("192.168.48.78")
RELAY_IP = ip("192.168.48.250")

LAB = ServerConfig(
    server_ip=SERVER_IP,
    subnet=IPv4Network("192.168.48.0/21"),
    router=ip("192.168.48.1"),
    dns_servers=(ip("192.168.48.53"), ip("192.168.48.54")),
    domain_name="lab.example",
    domain_search=("lab.example", "svc.lab.example"),
    ntp_servers=(ip("192.168.48.123"),),
    lease_time=300,
)
"""The pool the samples were captured against (Kea and dnsmasq served this)."""

MAC = "02:00:00:00:00:01"
LEASE_IP = ip("192.168.49.1")
OTHER_IP = ip("192.168.49.99")
LEASES: Mapping[str, Lease] = {MAC: Lease(LEASE_IP, hostname="vm1")}

FROM_CLIENT = Ingress("eth1", ip("0.0.0.0"), 68)
FROM_RELAY = Ingress("eth1", RELAY_IP, 67)
NOW = 1_700_000_000.0


def chaddr(mac: str = MAC) -> bytes:
    return mac_to_bytes(mac) + bytes(10)


def request(
    kind: int | None,
    *,
    mac: str = MAC,
    ciaddr: IPv4Address | None = None,
    giaddr: IPv4Address | None = None,
    broadcast: bool = False,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    prl: bytes | None = None,
    xid: int = 0x1234ABCD,
    op: int = OpCode.BOOTREQUEST,
    htype: int = 1,
    hlen: int = 6,
    extra: Mapping[int, bytes] | None = None,
) -> Packet:
    """A client message built with our own `Packet` (scapy-built ones are in test_oracles)."""
    options: dict[int, bytes] = {}
    if kind is not None:
        options[OptionCode.MESSAGE_TYPE] = bytes((kind,))
    if requested is not None:
        options[OptionCode.REQUESTED_ADDRESS] = requested.packed
    if server_id is not None:
        options[OptionCode.SERVER_IDENTIFIER] = server_id.packed
    if prl is not None:
        options[OptionCode.PARAMETER_REQUEST_LIST] = prl
    options.update(extra or {})
    zero = IPv4Address(0)
    return Packet(
        op=op,
        htype=htype,
        hlen=hlen,
        xid=xid,
        flags=BROADCAST_FLAG if broadcast else 0,
        ciaddr=ciaddr or zero,
        giaddr=giaddr or zero,
        chaddr=chaddr(mac),
        options=options,
    )


DISCOVER = MessageType.DISCOVER
REQUEST = MessageType.REQUEST

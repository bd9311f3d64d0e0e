"""Ethernet + IPv4 + UDP framing for replies sent at layer 2 (pure).

A client without an address that did not ask for broadcast gets its OFFER and ACK
unicast to its MAC with IP destination yiaddr (RFC 2131 4.1). The kernel cannot send that
through a UDP socket without an ARP entry for an address the client does not own yet, so
the agent writes the whole frame to an AF_PACKET socket, as Kea does.
"""

import struct
from ipaddress import IPv4Address

ETH_P_IP = 0x0800
_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(
    *,
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv4Address,
    dst_ip: IPv4Address,
    src_port: int,
    dst_port: int,
    payload: bytes,
    ttl: int = 64,
    udp_checksum: bool = True,
) -> bytes:
    """One Ethernet II frame carrying `payload` in UDP over IPv4, checksums filled in.

    With `udp_checksum=False` the UDP checksum is 0, "none" in UDP over IPv4 (RFC 768).
    The agent fills it in: layer-2 replies go to clients at boot only, not on a hot path."""
    udp_length = _UDP_HEADER.size + len(payload)
    udp = _UDP_HEADER.pack(src_port, dst_port, udp_length, 0) + payload
    if udp_checksum:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, 17, udp_length)
        udp_sum = _checksum(pseudo + udp) or 0xFFFF  # 0 would mean "no checksum"
        udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = _IP_HEADER.pack(
        0x45,
        0x10,
        _IP_HEADER.size + udp_length,
        0,
        0x4000,
        ttl,
        17,
        0,
        src_ip.packed,
        dst_ip.packed,
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + header + udp

"""A DHCP client that asks every `interval` seconds: run inside a VM's network namespace
by `make bench-ha`. Each probe is an INIT-REBOOT DHCPREQUEST for `address` (what a VM
sends when it reboots or rebinds), broadcast with chaddr `mac`; a DHCPACK for it within
the interval is an answer. Prints one line per probe, `<monotonic send time> <1|0>`, until
the file `stop` exists.

    ip netns exec NS python dhcp_probe.py IFACE MAC ADDRESS STOPFILE [INTERVAL]
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import sys
import time
from ipaddress import IPv4Address


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def request(mac: bytes, address: IPv4Address, xid: int) -> bytes:
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4)  # fmt: skip
    bootp += mac + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63"
    bootp += bytes([53, 1, 3, 50, 4]) + address.packed + bytes([55, 3, 1, 3, 51, 255])
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4,
                     b"\xff" * 4)  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def is_ack(frame: bytes, xid: int) -> bool:
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    if struct.unpack("!H", frame[udp + 2 : udp + 4])[0] != 68:
        return False
    bootp = frame[udp + 8 :]
    if bootp[0] != 2 or struct.unpack("!I", bootp[4:8])[0] != xid:
        return False
    i = 240
    while i + 1 < len(bootp) and bootp[i] != 255:
        if bootp[i] == 0:
            i += 1
            continue
        if bootp[i] == 53:
            return bootp[i + 2] == 5
        i += 2 + bootp[i + 1]
    return False


def main() -> int:
    iface, mac_text, address_text, stop = sys.argv[1:5]
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    mac = bytes(int(x, 16) for x in mac_text.split(":"))
    address = IPv4Address(address_text)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    raw.bind((iface, 0))
    while not os.path.exists(stop):
        xid = random.getrandbits(32)
        sent = time.monotonic()
        raw.send(request(mac, address, xid))
        answered = False
        while (left := sent + interval - time.monotonic()) > 0:
            ready, _, _ = select.select([raw], [], [], left)
            if ready and is_ack(raw.recv(2048), xid):
                answered = True
                break
        print(f"{sent:.3f} {1 if answered else 0}", flush=True)
        time.sleep(max(0.0, sent + interval - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

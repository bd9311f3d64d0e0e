"""Send one hand-made DHCP message on an interface and print the replies to it as JSON.

Run inside a client namespace (`ip netns exec NS python craft.py < spec.json`); used by
`lab.craft` for what no real client can be made to send (a REQUEST for the wrong address,
an INIT-REBOOT with a chosen address, odd hardware types). The spec (JSON on stdin):

    iface, mac              interface to send on and its MAC (also chaddr unless `chaddr`)
    type                    discover | request | release | decline | inform (default request)
    requested, server_id    options 50 and 54 (omitted when absent)
    ciaddr, giaddr          BOOTP fields (default 0.0.0.0)
    src, sport              IP source and UDP source port (defaults ciaddr, 68; a relay
                            agent sends from its own address and port 67)
    dst, eth_dst            IP and Ethernet destination (defaults 255.255.255.255 and
                            ff:ff:ff:ff:ff:ff; a relay agent unicasts to the server)
    broadcast               set the broadcast flag (default true)
    htype, hlen, chaddr     hardware fields (defaults 1, 6, mac)
    xid                     transaction id (default random)
    params                  parameter request list (default 1,3,6,15,42,51,54,119)
    timeout                 seconds to collect replies (default 2)
    count                   stop after this many replies (default 1; 0 = collect until timeout)

Output: a JSON list of replies with the same xid, each with eth_src, eth_dst, ip_src, ip_dst,
sport, dport, op, xid, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, message_type and
options ({code: hex}).
"""

from __future__ import annotations

import json
import random
import select
import sys
import time
import warnings
from typing import Any

with warnings.catch_warnings():
    # scapy may warn at import time about optional system pieces (no route, no libpcap).
    warnings.simplefilter("ignore")
    from scapy.config import conf
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

TYPES = {"discover": 1, "request": 3, "decline": 4, "release": 7, "inform": 8}
DEFAULT_PARAMS = [1, 3, 6, 15, 42, 51, 54, 119]


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def options_of(payload: bytes) -> dict[int, bytes]:
    """TLV options after the magic cookie of a raw BOOTP payload."""
    options: dict[int, bytes] = {}
    i = 240
    while i < len(payload):
        code = payload[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = payload[i + 1]
        options[code] = options.get(code, b"") + payload[i + 2 : i + 2 + length]
        i += 2 + length
    return options


def build(spec: dict[str, Any]) -> tuple[Any, int]:
    mac = spec["mac"]
    xid = int(spec.get("xid", random.getrandbits(32)))
    chaddr = mac_bytes(spec.get("chaddr", mac))
    kind = TYPES[spec.get("type", "request")]
    options: list[Any] = [("message-type", kind)]
    if spec.get("requested"):
        options.append(("requested_addr", spec["requested"]))
    if spec.get("server_id"):
        options.append(("server_id", spec["server_id"]))
    options.append(("param_req_list", spec.get("params", DEFAULT_PARAMS)))
    options.append("end")
    ciaddr = spec.get("ciaddr", "0.0.0.0")
    bootp = BOOTP(
        op=1,
        htype=int(spec.get("htype", 1)),
        hlen=int(spec.get("hlen", 6)),
        xid=xid,
        flags=0x8000 if spec.get("broadcast", True) else 0,
        ciaddr=ciaddr,
        giaddr=spec.get("giaddr", "0.0.0.0"),
        chaddr=chaddr + b"\x00" * (16 - len(chaddr)),
    )
    frame = (
        Ether(src=mac, dst=spec.get("eth_dst", "ff:ff:ff:ff:ff:ff"))
        / IP(src=spec.get("src", ciaddr), dst=spec.get("dst", "255.255.255.255"))
        / UDP(sport=int(spec.get("sport", 68)), dport=67)
        / bootp
        / DHCP(options=options)
    )
    return frame, xid


def decode(frame: Any) -> dict[str, Any]:
    payload = bytes(frame[UDP].payload)
    options = options_of(payload)
    bootp = frame[BOOTP]
    hlen = min(int(bootp.hlen), 16)
    return {
        "eth_src": frame[Ether].src,
        "eth_dst": frame[Ether].dst,
        "ip_src": frame[IP].src,
        "ip_dst": frame[IP].dst,
        "sport": int(frame[UDP].sport),
        "dport": int(frame[UDP].dport),
        "op": int(bootp.op),
        "xid": int(bootp.xid),
        "flags": int(bootp.flags),
        "ciaddr": bootp.ciaddr,
        "yiaddr": bootp.yiaddr,
        "siaddr": bootp.siaddr,
        "giaddr": bootp.giaddr,
        "chaddr": ":".join(f"{b:02x}" for b in bytes(bootp.chaddr)[:hlen]),
        "message_type": options.get(53, b"\x00")[0],
        "options": {str(code): value.hex() for code, value in sorted(options.items())},
    }


def main() -> int:
    spec = json.load(sys.stdin)
    frame, xid = build(spec)
    timeout = float(spec.get("timeout", 2.0))
    count = int(spec.get("count", 1))
    sock = conf.L2socket(iface=spec["iface"], promisc=False)
    replies: list[dict[str, Any]] = []
    try:
        sock.send(frame)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            got = sock.recv()
            if got is None or BOOTP not in got or UDP not in got or IP not in got:
                continue
            if int(got[BOOTP].op) != 2 or int(got[BOOTP].xid) != xid:
                continue
            replies.append(decode(got))
            if count and len(replies) >= count:
                break
    finally:
        sock.close()
    json.dump(replies, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

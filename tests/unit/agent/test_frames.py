import warnings
from ipaddress import IPv4Address

from vmdhcp.agent.frames import udp_frame

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether


def test_frame_decodes_with_valid_checksums_in_scapy() -> None:
    payload = bytes(range(256)) + b"odd"
    frame = udp_frame(
        src_mac=bytes.fromhex("020000000001"),
        dst_mac=bytes.fromhex("facf8e5082fc"),
        src_ip=IPv4Address("192.168.48.77"),
        dst_ip=IPv4Address("192.168.48.82"),
        src_port=67,
        dst_port=68,
        payload=payload,
    )
    packet = Ether(frame)
    assert packet[Ether].dst == "fa:cf:8e:50:82:fc"
    assert packet[IP].src == "192.168.48.77"
    assert packet[IP].dst == "192.168.48.82"
    assert (packet[UDP].sport, packet[UDP].dport) == (67, 68)
    assert bytes(packet[UDP].payload) == payload
    ip_sum, udp_sum = packet[IP].chksum, packet[UDP].chksum
    del packet[IP].chksum
    del packet[UDP].chksum
    rebuilt = Ether(bytes(packet))
    assert (rebuilt[IP].chksum, rebuilt[UDP].chksum) == (ip_sum, udp_sum)

import pytest

from vmdhcp.mac import InvalidMac, mac_from_bytes, mac_to_bytes, normalize_mac


@pytest.mark.parametrize(
    "text",
    [
        "fa:cf:8e:50:82:fc",
        "FA:CF:8E:50:82:FC",
        "fa-cf-8e-50-82-fc",
        "facf.8e50.82fc",
        " Fa:cF:8e:50:82:fc ",
    ],
)
def test_every_notation_normalises_to_one_form(text: str) -> None:
    assert normalize_mac(text) == "fa:cf:8e:50:82:fc"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fa:cf:8e:50:82",
        "fa:cf:8e:50:82:fc:00",
        "fa:cf:8e:50:82:fg",
        "fa:cf-8e:50:82:fc",
        "facf8e5082fc",
        "\uff46\uff41:cf:8e:50:82:fc",
    ],
)
def test_malformed_macs_raise_invalid_mac(text: str) -> None:
    with pytest.raises(InvalidMac, match="is not a valid 48-bit MAC address"):
        normalize_mac(text)


def test_bytes_round_trip() -> None:
    assert mac_from_bytes(mac_to_bytes("FA-CF-8E-50-82-FC")) == "fa:cf:8e:50:82:fc"
    with pytest.raises(InvalidMac):
        mac_from_bytes(b"\x01\x02")

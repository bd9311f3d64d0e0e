"""MAC address normalisation, shared by the IPAM, the DHCP core and the API models.

Every MAC that enters the system (custom resources, packets, files) goes through
`normalize_mac` once, so lookups never depend on how a user typed it.
"""

import re

from vmdhcp.errors import VmdhcpError

_HEX = frozenset("0123456789abcdef")
_CANONICAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class InvalidMac(VmdhcpError, ValueError):
    """A string that is not a 48-bit MAC address."""

    def __init__(self, value: str) -> None:
        super().__init__(f"mac address {value!r} is not a valid 48-bit MAC address")
        self.value = value


def normalize_mac(value: str) -> str:
    """Return `value` as lower-case, colon-separated hex (`aa:bb:cc:dd:ee:ff`).

    Accepts colon, hyphen and dot (Cisco `aabb.ccdd.eeff`) notation in any case.
    """
    if _CANONICAL.fullmatch(value):
        return value
    text = value.strip().lower()
    if len(text) == 17 and text[2::3] in (":" * 5, "-" * 5):
        digits = text.replace(text[2], "")
    elif len(text) == 14 and text[4] == "." and text[9] == ".":
        digits = text.replace(".", "")
    else:
        raise InvalidMac(value)
    if len(digits) != 12 or not set(digits) <= _HEX:
        raise InvalidMac(value)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_to_bytes(mac: str) -> bytes:
    """Six bytes of a normalised (or normalisable) MAC."""
    return bytes.fromhex(normalize_mac(mac).replace(":", ""))


def mac_from_bytes(raw: bytes) -> str:
    """The normalised text form of six raw bytes."""
    if len(raw) != 6:
        raise InvalidMac(raw.hex())
    return raw.hex(":")

"""Address parsing with upstream's error messages.

Upstream parses addresses with Go's `netip.ParseAddr` and networks with `net.ParseCIDR`,
and its webhook hands their errors to the user as they are (`ParseAddr("192.168.0.1000"):
IPv4 field has value >255`, `invalid CIDR address: 10.0.0.0/33`). Runbooks grep for these,
so the same syntax rules and the same words are reproduced here. Only IPv4 is served: an
address that Go would parse as IPv6 is refused with its own message.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from vmdhcp.errors import VmdhcpError


class AddressError(VmdhcpError, ValueError):
    """Text that is not an IPv4 address or network; the message is the user-facing reason."""


def go_quote(text: str) -> str:
    """A double-quoted string, as Go's `strconv.Quote` writes printable text."""
    return json.dumps(text, ensure_ascii=False)


def _parse_error(text: str, message: str, at: str | None = None) -> AddressError:
    suffix = f" (at {go_quote(at)})" if at is not None else ""
    return AddressError(f"ParseAddr({go_quote(text)}): {message}{suffix}")


def _parse_ipv4_fields(text: str) -> IPv4Address:
    """Go's `parseIPv4Fields`, with its messages."""
    fields: list[int] = []
    value = 0
    digits = 0
    for i, char in enumerate(text):
        if "0" <= char <= "9":
            if digits == 1 and value == 0:
                raise _parse_error(text, "IPv4 field has octet with leading zero")
            value = value * 10 + ord(char) - ord("0")
            digits += 1
            if value > 255:
                raise _parse_error(text, "IPv4 field has value >255")
        elif char == ".":
            if i == 0 or i == len(text) - 1 or text[i - 1] == ".":
                raise _parse_error(text, "IPv4 field must have at least one digit", text[i:])
            if len(fields) == 3:
                raise _parse_error(text, "IPv4 address too long")
            fields.append(value)
            value = 0
            digits = 0
        else:
            raise _parse_error(text, "unexpected character", text[i:])
    if len(fields) < 3:
        raise _parse_error(text, "IPv4 address too short")
    fields.append(value)
    return IPv4Address(".".join(str(f) for f in fields))


def parse_addr(text: str) -> IPv4Address:
    """An IPv4 address, or AddressError with Go's `netip.ParseAddr` message.

    Go dispatches on the first `.`, `:` or `%`; an IPv6 address is valid syntax there,
    and refused here as `ip address X is not an IPv4 address`.
    """
    for char in text:
        if char == ".":
            return _parse_ipv4_fields(text)
        if char == ":":
            try:
                IPv6Address(text)
            except ValueError as exc:
                raise _parse_error(text, str(exc)) from None
            raise AddressError(f"ip address {text} is not an IPv4 address")
        if char == "%":
            raise _parse_error(text, "missing IPv6 address")
    raise _parse_error(text, "unable to parse IP")


def parse_cidr(text: str) -> IPv4Network:
    """The network of an IPv4 CIDR (host bits cleared, like Go's `net.ParseCIDR`), or
    AddressError `invalid CIDR address: X`."""
    invalid = AddressError(f"invalid CIDR address: {text}")
    address, sep, prefix = text.partition("/")
    if not sep or not prefix:
        raise invalid
    try:
        ip = parse_addr(address)
    except AddressError:
        if ":" in address:  # an IPv6 network: valid for Go, not served here
            try:
                IPv6Address(address)
            except ValueError:
                raise invalid from None
            if prefix.isascii() and prefix.isdigit() and int(prefix) <= 128:
                raise AddressError(f"cidr {text} is not an IPv4 network") from None
        raise invalid from None
    # Go's dtoi: decimal digits only (leading zeros allowed), no sign, at most 32.
    if not (prefix.isascii() and prefix.isdigit()) or int(prefix) > 32:
        raise invalid
    return IPv4Network(f"{ip}/{int(prefix)}", strict=False)

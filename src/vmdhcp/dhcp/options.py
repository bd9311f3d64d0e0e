"""Typed codecs for DHCPv4 option values (RFC 2132 and the RFCs named per function).

A `Packet` keeps every option as raw bytes (RFC 3396 concatenated), so parsing never fails on an
option nobody reads. The functions here turn those bytes into values and back. They come in
`encode_*` / `decode_*` pairs, one pair per kind of value:

- encoders are for values *we* produce; they raise `InvalidOption` (a local error);
- decoders are for values a *peer* sent; they raise `MalformedOption` (a remote error, a subclass
  of `MalformedPacket`) and nothing else, whatever the bytes.

The domain search list (119) and classless static routes (121) have their own modules.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from vmdhcp.dhcp.classless_routes import decode_classless_routes
from vmdhcp.dhcp.constants import OptionCode
from vmdhcp.dhcp.domain_search import decode_domain_search
from vmdhcp.dhcp.errors import InvalidOption, MalformedOption

__all__ = [
    "DECODERS",
    "ClientIdentifier",
    "DuidClientId",
    "HardwareClientId",
    "OpaqueClientId",
    "decode_client_identifier",
    "decode_ip",
    "decode_ips",
    "decode_message_type",
    "decode_option",
    "decode_parameter_request_list",
    "decode_relay_agent_information",
    "decode_text",
    "decode_u8",
    "decode_u16",
    "decode_u32",
    "encode_client_identifier",
    "encode_ip",
    "encode_ips",
    "encode_message_type",
    "encode_parameter_request_list",
    "encode_relay_agent_information",
    "encode_text",
    "encode_u8",
    "encode_u16",
    "encode_u32",
    "encoded_size",
]


def encoded_size(value: bytes) -> int:
    """Bytes an option with this value takes on the wire, RFC 3396 splitting included."""
    length = len(value)
    return length + 2 * max(1, -(-length // 255))


# --- addresses: 1, 3, 6, 28, 42, 50, 54 -------------------------------------------------------


def encode_ip(address: IPv4Address) -> bytes:
    """One IPv4 address (options 1, 28, 50, 54)."""
    return address.packed


def decode_ip(value: bytes, *, code: int | None = None) -> IPv4Address:
    if len(value) != 4:
        raise MalformedOption(code, f"an address takes 4 bytes, got {len(value)}")
    return IPv4Address(value)


def encode_ips(addresses: Iterable[IPv4Address]) -> bytes:
    """A non-empty list of IPv4 addresses (options 3, 6, 42). An empty list has no encoding:
    leave the option out instead (upstream's empty option 3 makes some clients reject the offer).
    """
    value = b"".join(address.packed for address in addresses)
    if not value:
        raise InvalidOption("an address list option needs at least one address")
    return value


def decode_ips(value: bytes, *, code: int | None = None) -> tuple[IPv4Address, ...]:
    if not value or len(value) % 4:
        raise MalformedOption(code, f"an address list takes 4*n bytes (n >= 1), got {len(value)}")
    return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4))


# --- unsigned integers: 26, 51, 52, 53, 57, 58, 59 ----------------------------------------------


def _encode_uint(value: int, size: int) -> bytes:
    try:
        return value.to_bytes(size, "big")
    except OverflowError as exc:
        raise InvalidOption(f"{value} does not fit in {size} unsigned byte(s)") from exc


def _decode_uint(value: bytes, size: int, code: int | None) -> int:
    if len(value) != size:
        raise MalformedOption(code, f"expected {size} byte(s), got {len(value)}")
    return int.from_bytes(value, "big")


def encode_u8(value: int) -> bytes:
    return _encode_uint(value, 1)


def decode_u8(value: bytes, *, code: int | None = None) -> int:
    return _decode_uint(value, 1, code)


def encode_u16(value: int) -> bytes:
    """Options 26 (interface MTU) and 57 (maximum message size)."""
    return _encode_uint(value, 2)


def decode_u16(value: bytes, *, code: int | None = None) -> int:
    return _decode_uint(value, 2, code)


def encode_u32(value: int) -> bytes:
    """Options 51, 58 and 59 (seconds)."""
    return _encode_uint(value, 4)


def decode_u32(value: bytes, *, code: int | None = None) -> int:
    return _decode_uint(value, 4, code)


def encode_message_type(message_type: int) -> bytes:
    """Option 53."""
    return _encode_uint(message_type, 1)


def decode_message_type(value: bytes) -> int:
    """Option 53. Unknown values are returned as they are; only the length is checked."""
    return _decode_uint(value, 1, OptionCode.MESSAGE_TYPE)


# --- text: 12, 15, 56, 60 -----------------------------------------------------------------------


def encode_text(text: str) -> bytes:
    """NVT text (options 12, 15, 56). UTF-8 is allowed through; a lone surrogate from
    `decode_text` is turned back into the byte it came from. The RFCs forbid empty values.
    """
    if not text:
        raise InvalidOption("a text option cannot be empty")
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise InvalidOption(f"cannot encode {text!r}: {exc.reason}") from exc


def decode_text(value: bytes) -> str:
    """Text as a peer sent it. Never fails: bytes that are not UTF-8 become lone surrogates
    (so `encode_text` gives the same bytes back), and a trailing NUL, which some clients send
    against RFC 2132's advice, is dropped.
    """
    return value.rstrip(b"\x00").decode("utf-8", "surrogateescape")


# --- parameter request list: 55 -----------------------------------------------------------------


def encode_parameter_request_list(codes: Iterable[int]) -> bytes:
    try:
        return bytes(codes)
    except ValueError as exc:
        raise InvalidOption(f"option codes are 0..255: {exc}") from exc


def decode_parameter_request_list(value: bytes) -> tuple[int, ...]:
    """Option 55, in the client's order (the order carries no meaning for us)."""
    return tuple(value)


# --- client identifier: 61 ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HardwareClientId:
    """Option 61 with a hardware type byte, usually `01` followed by a MAC (RFC 2132 9.14)."""

    htype: int
    address: bytes

    @property
    def mac(self) -> str | None:
        """The normalised MAC when this is an Ethernet identifier, else None."""
        if self.htype == 1 and len(self.address) == 6:
            return self.address.hex(":")
        return None


@dataclass(frozen=True, slots=True)
class DuidClientId:
    """Option 61 of type 255: IAID and DUID (RFC 4361 section 6.1), as systemd-networkd sends."""

    iaid: int
    duid: bytes


@dataclass(frozen=True, slots=True)
class OpaqueClientId:
    """Option 61 of type 0 (a name) or anything that fits no other form."""

    type: int
    data: bytes


ClientIdentifier = HardwareClientId | DuidClientId | OpaqueClientId

_DUID_TYPE = 255
_MIN_DUID_VALUE = 1 + 4 + 2  # type, IAID, at least the 2-byte DUID type


def encode_client_identifier(client_id: ClientIdentifier) -> bytes:
    match client_id:
        case HardwareClientId(htype=htype, address=address):
            return _encode_uint(htype, 1) + address
        case DuidClientId(iaid=iaid, duid=duid):
            return bytes((_DUID_TYPE,)) + _encode_uint(iaid, 4) + duid
        case OpaqueClientId(type=kind, data=data):
            return _encode_uint(kind, 1) + data


def decode_client_identifier(value: bytes) -> ClientIdentifier:
    """Option 61 in any form. Only an empty value is malformed."""
    if not value:
        raise MalformedOption(OptionCode.CLIENT_IDENTIFIER, "empty client identifier")
    kind = value[0]
    if kind == _DUID_TYPE and len(value) >= _MIN_DUID_VALUE:
        return DuidClientId(int.from_bytes(value[1:5], "big"), value[5:])
    if kind in (0, _DUID_TYPE) or len(value) == 1:
        return OpaqueClientId(kind, value[1:])
    return HardwareClientId(kind, value[1:])


# --- relay agent information: 82 ----------------------------------------------------------------


def encode_relay_agent_information(suboptions: Iterable[tuple[int, bytes]]) -> bytes:
    """Option 82 sub-options (RFC 3046 section 2.0), in the order given."""
    out = bytearray()
    for code, data in suboptions:
        if not 0 <= code <= 255 or len(data) > 255:
            raise InvalidOption(f"relay sub-option {code} with {len(data)} bytes does not fit")
        out += bytes((code, len(data)))
        out += data
    return bytes(out)


def decode_relay_agent_information(value: bytes) -> tuple[tuple[int, bytes], ...]:
    """For logs only: the server echoes option 82 byte for byte and never interprets it."""
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(value)
    while pos < end:
        if pos + 1 >= end or pos + 2 + value[pos + 1] > end:
            raise MalformedOption(OptionCode.RELAY_AGENT_INFORMATION, "truncated sub-option")
        length = value[pos + 1]
        out.append((value[pos], value[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return tuple(out)


# --- a table for logs and debugging -------------------------------------------------------------


def _address(code: int) -> Callable[[bytes], object]:
    return lambda value: decode_ip(value, code=code)


def _addresses(code: int) -> Callable[[bytes], object]:
    return lambda value: decode_ips(value, code=code)


def _u16(code: int) -> Callable[[bytes], object]:
    return lambda value: decode_u16(value, code=code)


def _u32(code: int) -> Callable[[bytes], object]:
    return lambda value: decode_u32(value, code=code)


DECODERS: Mapping[int, Callable[[bytes], object]] = {
    OptionCode.SUBNET_MASK: _address(OptionCode.SUBNET_MASK),
    OptionCode.ROUTER: _addresses(OptionCode.ROUTER),
    OptionCode.DOMAIN_NAME_SERVER: _addresses(OptionCode.DOMAIN_NAME_SERVER),
    OptionCode.HOST_NAME: decode_text,
    OptionCode.DOMAIN_NAME: decode_text,
    OptionCode.INTERFACE_MTU: _u16(OptionCode.INTERFACE_MTU),
    OptionCode.BROADCAST_ADDRESS: _address(OptionCode.BROADCAST_ADDRESS),
    OptionCode.NTP_SERVERS: _addresses(OptionCode.NTP_SERVERS),
    OptionCode.REQUESTED_ADDRESS: _address(OptionCode.REQUESTED_ADDRESS),
    OptionCode.LEASE_TIME: _u32(OptionCode.LEASE_TIME),
    OptionCode.MESSAGE_TYPE: decode_message_type,
    OptionCode.SERVER_IDENTIFIER: _address(OptionCode.SERVER_IDENTIFIER),
    OptionCode.PARAMETER_REQUEST_LIST: decode_parameter_request_list,
    OptionCode.MESSAGE: decode_text,
    OptionCode.MAX_MESSAGE_SIZE: _u16(OptionCode.MAX_MESSAGE_SIZE),
    OptionCode.RENEWAL_TIME: _u32(OptionCode.RENEWAL_TIME),
    OptionCode.REBINDING_TIME: _u32(OptionCode.REBINDING_TIME),
    OptionCode.VENDOR_CLASS_IDENTIFIER: decode_text,
    OptionCode.CLIENT_IDENTIFIER: decode_client_identifier,
    OptionCode.RELAY_AGENT_INFORMATION: decode_relay_agent_information,
    OptionCode.DOMAIN_SEARCH: decode_domain_search,
    OptionCode.CLASSLESS_STATIC_ROUTE: decode_classless_routes,
}
"""Decoder per option code we know; `decode_option` falls back to the raw bytes."""


def decode_option(code: int, value: bytes) -> object:
    """The typed value of any option, or its raw bytes when the code has no decoder."""
    decoder = DECODERS.get(code)
    return value if decoder is None else decoder(value)

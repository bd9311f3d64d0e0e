"""Option 119, the domain search list (RFC 3397): RFC 1035 names with message compression.

The option value is the RFC 3396 concatenation of every option 119 instance; compression pointers
are offsets into that concatenated value (RFC 3397 section 2).
"""

from collections.abc import Iterable

from vmdhcp.dhcp.constants import OptionCode
from vmdhcp.dhcp.errors import InvalidOption, MalformedOption

__all__ = ["decode_domain_search", "encode_domain_name", "encode_domain_search"]

_MAX_LABEL = 63
_MAX_NAME = 255  # wire length of a name, root label included (RFC 1035 section 3.1)
_MAX_POINTER = 0x3FFF
_CODE = OptionCode.DOMAIN_SEARCH


def _labels(name: str) -> tuple[bytes, ...]:
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise InvalidOption(f"domain name {name!r} is empty")
    try:
        labels = tuple(label.encode("ascii") for label in text.split("."))
    except UnicodeEncodeError as exc:
        raise InvalidOption(f"domain name {name!r} is not ASCII (use its IDNA form)") from exc
    for label in labels:
        if not 0 < len(label) <= _MAX_LABEL:
            raise InvalidOption(f"domain name {name!r} has a label of {len(label)} bytes")
    if sum(len(label) + 1 for label in labels) + 1 > _MAX_NAME:
        raise InvalidOption(f"domain name {name!r} is longer than 255 bytes on the wire")
    return labels


def encode_domain_name(name: str) -> bytes:
    """One name in RFC 1035 wire form, uncompressed (`eng.apple.com` -> `\\x03eng...\\x00`)."""
    return b"".join(bytes((len(label),)) + label for label in _labels(name)) + b"\x00"


def encode_domain_search(names: Iterable[str], *, compress: bool = True) -> bytes:
    """The value of option 119. With `compress`, a suffix already written is replaced by a
    pointer to it, exactly as in the example of RFC 3397 section 2 (27 bytes for
    `eng.apple.com`, `marketing.apple.com`). Suffixes match case-sensitively.
    """
    out = bytearray()
    seen: dict[tuple[bytes, ...], int] = {}
    count = 0
    for name in names:
        count += 1
        labels = _labels(name)
        for i in range(len(labels)):
            suffix = labels[i:]
            if compress:
                offset = seen.get(suffix)
                if offset is not None:
                    out += (0xC000 | offset).to_bytes(2, "big")
                    break
                if len(out) <= _MAX_POINTER:
                    seen[suffix] = len(out)
            out.append(len(labels[i]))
            out += labels[i]
        else:
            out.append(0)
    if not count:
        raise InvalidOption("a domain search list needs at least one name")
    return bytes(out)


def decode_domain_search(value: bytes) -> tuple[str, ...]:
    """The names of an option 119 value, without trailing dots (the root name is `""`).

    Safe on any input: a pointer must point below the start of the fragment it is read from,
    so every jump strictly decreases that bound and decoding always ends. Forward or
    self-referencing pointers, reserved label types, truncated names and names longer than
    255 bytes raise `MalformedOption`.
    """
    if not value:
        raise MalformedOption(_CODE, "empty domain search list")
    names: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        name, pos = _read_name(value, pos)
        names.append(name)
    return tuple(names)


def _read_name(data: bytes, start: int) -> tuple[str, int]:
    end = len(data)
    labels: list[str] = []
    pos = start
    bound = start  # a pointer must target an offset below this
    resume: int | None = None  # where the next name starts, once a pointer has been followed
    wire = 1  # the root label
    while True:
        if pos >= end:
            raise MalformedOption(_CODE, f"name at offset {start} is truncated")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= end:
                raise MalformedOption(_CODE, f"pointer at offset {pos} is truncated")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= bound:
                raise MalformedOption(_CODE, f"pointer at offset {pos} does not point backwards")
            if resume is None:
                resume = pos + 2
            bound = pos = target
            continue
        if kind:
            raise MalformedOption(_CODE, f"reserved label type {kind:#x} at offset {pos}")
        stop = pos + 1 + length
        if stop > end:
            raise MalformedOption(_CODE, f"label at offset {pos} is truncated")
        wire += length + 1
        if wire > _MAX_NAME:
            raise MalformedOption(_CODE, f"name at offset {start} is longer than 255 bytes")
        labels.append(data[pos + 1 : stop].decode("utf-8", "surrogateescape"))
        pos = stop
    return ".".join(labels), pos if resume is None else resume

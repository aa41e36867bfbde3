"""Command frames: name + data, metadata properties, and the standard commands' bodies."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from .._errors import RemoteProtocolError

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


def encode_command(name: bytes, data: bytes = b"") -> bytes:
    """The body of a command frame: name length, name, data."""
    if not 0 < len(name) < 256:
        raise ValueError("command name must be 1 to 255 bytes")
    return bytes((len(name),)) + name + data


def decode_command_untrusted(body: bytes) -> tuple[bytes, bytes]:
    """Split a command frame's body into ``(name, data)``."""
    if not body:
        raise RemoteProtocolError("malformed command: empty")
    n = body[0]
    if n == 0 or len(body) < 1 + n:
        raise RemoteProtocolError("malformed command: bad name length")
    return body[1 : 1 + n], body[1 + n :]


def encode_metadata(properties: Mapping[str, bytes]) -> bytes:
    """Metadata properties as READY/INITIATE carry them."""
    out = []
    for name, value in properties.items():
        raw = name.encode("ascii")
        if not 0 < len(raw) < 256:
            raise ValueError(f"property name must be 1 to 255 ASCII bytes: {name!r}")
        out.append(bytes((len(raw),)) + raw + _U32.pack(len(value)) + bytes(value))
    return b"".join(out)


def decode_metadata_untrusted(data: bytes) -> dict[str, bytes]:
    """Parse metadata properties. Names are returned as given; compare them case-insensitively.

    Raises:
        RemoteProtocolError: truncated or malformed properties.
    """
    props: dict[str, bytes] = {}
    seen: set[str] = set()
    pos = 0
    end = len(data)
    while pos < end:
        n = data[pos]
        pos += 1
        if n == 0 or pos + n + 4 > end:
            raise RemoteProtocolError("malformed metadata: bad property name")
        try:
            name = data[pos : pos + n].decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("malformed metadata: property name is not ASCII") from None
        pos += n
        if name.lower() in seen:
            # (names compare ignoring case: "Identity" then "identity" would
            # route by one and show the other; libzmq sends each name once)
            raise RemoteProtocolError(f"malformed metadata: property {name!r} given twice")
        seen.add(name.lower())
        (vlen,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + vlen > end:
            raise RemoteProtocolError("malformed metadata: value runs past the end")
        props[name] = data[pos : pos + vlen]
        pos += vlen
    return props


def get_property(props: Mapping[str, bytes], name: str) -> bytes | None:
    """Look a property up by name, ignoring case as RFC 37 says."""
    lname = name.lower()
    for key, value in props.items():
        if key.lower() == lname:
            return value
    return None


def encode_ready(properties: Mapping[str, bytes]) -> bytes:
    return encode_command(b"READY", encode_metadata(properties))


def encode_error(reason: str) -> bytes:
    raw = reason.encode("utf-8", "replace")[:255]
    return encode_command(b"ERROR", bytes((len(raw),)) + raw)


def decode_error_untrusted(data: bytes) -> str:
    if not data:
        return ""
    n = data[0]
    return data[1 : 1 + n].decode("utf-8", "replace")


def encode_ping(ttl_deciseconds: int, context: bytes = b"") -> bytes:
    if len(context) > 16:
        raise ValueError("PING context is at most 16 bytes")
    return encode_command(b"PING", _U16.pack(min(max(ttl_deciseconds, 0), 0xFFFF)) + context)


def decode_ping_untrusted(data: bytes) -> tuple[int, bytes]:
    """A PING's TTL and context. A context over 16 bytes is cut to 16, as libzmq
    4.3 does (it answers with the first 16 and keeps the connection)."""
    if len(data) < 2:
        raise RemoteProtocolError("malformed PING")
    return _U16.unpack_from(data)[0], data[2:18]


def encode_pong(context: bytes = b"") -> bytes:
    return encode_command(b"PONG", context)

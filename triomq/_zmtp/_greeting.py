"""The 64-byte ZMTP 3.x greeting."""

from __future__ import annotations

import attrs

from .._errors import RemoteProtocolError

GREETING_SIZE = 64
SIGNATURE_SIZE = 10
#: libzmq sends a ZMTP 1.0 length (1) in the padding, for old peers.
SIGNATURE = b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f"
OUR_MAJOR = 3
OUR_MINOR = 1


@attrs.frozen
class Greeting:
    """A decoded greeting."""

    major: int
    minor: int
    mechanism: bytes
    as_server: bool


def encode_greeting(mechanism: bytes, as_server: bool) -> bytes:
    """Our whole greeting: signature, version 3.1, mechanism, as-server flag, filler."""
    if not 0 < len(mechanism) <= 20:
        raise ValueError(f"mechanism name must be 1 to 20 bytes, got {mechanism!r}")
    return (
        SIGNATURE
        + bytes((OUR_MAJOR, OUR_MINOR))
        + mechanism.ljust(20, b"\x00")
        + (b"\x01" if as_server else b"\x00")
        + bytes(31)
    )


def check_signature_untrusted(data: bytes | bytearray | memoryview) -> None:
    """Check the first bytes of a peer's greeting as soon as they arrive.

    Raises:
        RemoteProtocolError: the bytes cannot start a ZMTP 3.x greeting.
    """
    if len(data) >= 1 and data[0] != 0xFF:
        raise RemoteProtocolError("bad greeting: not a ZMTP 3.x signature")
    if len(data) >= SIGNATURE_SIZE and not data[9] & 0x01:
        raise RemoteProtocolError("bad greeting: not a ZMTP 3.x signature")
    if len(data) >= SIGNATURE_SIZE + 1 and data[10] < 3:
        raise RemoteProtocolError(
            f"unsupported ZMTP version {data[10]}: triomq speaks ZMTP 3.0 and 3.1"
        )


def decode_greeting_untrusted(data: bytes | bytearray | memoryview) -> Greeting:
    """Decode a peer's 64-byte greeting.

    Raises:
        RemoteProtocolError: the bytes are not a valid ZMTP 3.x greeting.
    """
    if len(data) != GREETING_SIZE:
        raise RemoteProtocolError(f"greeting must be {GREETING_SIZE} bytes")
    check_signature_untrusted(data)
    raw_mech = bytes(data[12:32])
    mechanism = raw_mech.rstrip(b"\x00")
    if not mechanism or b"\x00" in mechanism or not all(
        0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 or c in b"-_.+" for c in mechanism
    ):
        raise RemoteProtocolError(f"bad greeting: invalid mechanism name {raw_mech!r}")
    # (libzmq 4.3.5 sends 0 here whatever its role, a PLAIN or CURVE server
    # too: the peer's flag says nothing, and roles come from our own options)
    as_server = data[32]
    if as_server not in (0, 1):
        raise RemoteProtocolError("bad greeting: as-server must be 0 or 1")
    return Greeting(major=data[10], minor=data[11], mechanism=mechanism, as_server=bool(as_server))

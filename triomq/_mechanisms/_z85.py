"""Z85 (RFC 32/Z85) and CURVE key helpers.

Z85 writes 4 bytes as 5 printable characters (base 85, big-endian). ZeroMQ uses
it for CURVE keys: 32 raw bytes are 40 characters of text. The functions here
mirror pyzmq's ``zmq.z85`` and ``zmq.curve_keypair`` / ``zmq.curve_public``.

The key functions need PyNaCl (``pip install triomq[curve]``); the codec does not.
"""

from __future__ import annotations

import struct

__all__ = ["curve_keypair", "curve_public", "normalize_key", "z85_decode", "z85_encode"]

_ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
#: byte value -> digit, or 255 for a byte that is not in the alphabet
_DECODE = bytearray(b"\xff" * 256)
for _i, _c in enumerate(_ALPHABET):
    _DECODE[_c] = _i
del _i, _c

_MAX_WORD = 0xFFFFFFFF

#: a CURVE key's length, raw and in Z85
KEY_SIZE = 32
Z85_KEY_SIZE = 40


def z85_encode(data: bytes | bytearray | memoryview) -> bytes:
    """Encode *data* (a multiple of 4 bytes long) as Z85 text (ASCII bytes)."""
    data = bytes(data)
    if len(data) % 4:
        raise ValueError(f"Z85 can only encode a multiple of 4 bytes, got {len(data)}")
    alphabet = _ALPHABET
    out = bytearray()
    for (word,) in struct.iter_unpack(">I", data):
        out += bytes(
            (
                alphabet[word // 52200625],
                alphabet[word // 614125 % 85],
                alphabet[word // 7225 % 85],
                alphabet[word // 85 % 85],
                alphabet[word % 85],
            )
        )
    return bytes(out)


def z85_decode(text: bytes | bytearray | memoryview | str) -> bytes:
    """Decode Z85 *text* (a multiple of 5 characters long) into bytes.

    Raises:
        ValueError: bad length, a character outside the Z85 alphabet, or a group
            of 5 characters whose value does not fit in 4 bytes.
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("Z85 text must be ASCII") from None
    else:
        raw = bytes(text)
    if len(raw) % 5:
        raise ValueError(f"Z85 text length must be a multiple of 5, got {len(raw)}")
    table = _DECODE
    words = []
    for i in range(0, len(raw), 5):
        value = 0
        for c in raw[i : i + 5]:
            digit = table[c]
            if digit == 255:
                raise ValueError(f"invalid Z85 character {chr(c)!r} at offset {i}")
            value = value * 85 + digit
        if value > _MAX_WORD:
            raise ValueError(f"Z85 group at offset {i} does not fit in 4 bytes")
        words.append(value)
    return struct.pack(f">{len(words)}I", *words)


def normalize_key(key: bytes | bytearray | memoryview | str) -> bytes:
    """A CURVE key as 32 raw bytes, from 32 raw bytes or 40 characters of Z85.

    Raises:
        ValueError: anything else.
    """
    if isinstance(key, str):
        if len(key) != Z85_KEY_SIZE:
            raise ValueError(f"a Z85 CURVE key is {Z85_KEY_SIZE} characters, got {len(key)}")
        return z85_decode(key)
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ValueError(f"a CURVE key must be bytes or str, not {type(key).__name__}")
    raw = bytes(key)
    if len(raw) == KEY_SIZE:
        return raw
    if len(raw) == Z85_KEY_SIZE:
        return z85_decode(raw)
    raise ValueError(
        f"a CURVE key is {KEY_SIZE} raw bytes or {Z85_KEY_SIZE} Z85 characters, got {len(raw)} bytes"
    )


def curve_keypair() -> tuple[bytes, bytes]:
    """A new CURVE key pair ``(public, secret)``, each as 40 bytes of Z85 text."""
    from nacl.bindings import crypto_box_keypair

    public, secret = crypto_box_keypair()
    return z85_encode(public), z85_encode(secret)


def curve_public(secret_key: bytes | bytearray | memoryview | str) -> bytes:
    """The public key (40 bytes of Z85) for a secret key (Z85 or 32 raw bytes)."""
    from nacl.bindings import crypto_scalarmult_base

    return z85_encode(crypto_scalarmult_base(normalize_key(secret_key)))

"""Z85 (RFC 32) and the CURVE key helpers, checked against pyzmq."""

from __future__ import annotations

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85 as zmq_z85

from triomq._mechanisms._z85 import (
    curve_keypair,
    curve_public,
    normalize_key,
    z85_decode,
    z85_encode,
)

ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

words = st.integers(min_value=0, max_value=64).flatmap(
    lambda n: st.binary(min_size=4 * n, max_size=4 * n)
)


def test_rfc_example() -> None:
    raw = bytes([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    assert z85_encode(raw) == b"HelloWorld"
    assert z85_decode(b"HelloWorld") == raw
    assert z85_decode("HelloWorld") == raw


def test_extremes() -> None:
    assert z85_encode(b"") == b"" and z85_decode(b"") == b""
    assert z85_encode(b"\x00" * 4) == b"00000"
    assert z85_encode(b"\xff" * 4) == b"%nSc0"
    assert z85_decode(b"%nSc0") == b"\xff" * 4


@given(words)
def test_matches_pyzmq(data: bytes) -> None:
    encoded = z85_encode(data)
    assert encoded == zmq_z85.encode(data)
    assert z85_decode(encoded) == data
    assert z85_decode(encoded.decode("ascii")) == data
    assert set(encoded) <= set(ALPHABET)


@given(st.binary(min_size=1).filter(lambda b: len(b) % 4))
def test_encode_bad_length(data: bytes) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        z85_encode(data)


@pytest.mark.parametrize("text", [b"Hell", b"HelloWorl", "abcdefghijk"])
def test_decode_bad_length(text: bytes | str) -> None:
    with pytest.raises(ValueError, match="multiple of 5"):
        z85_decode(text)


@pytest.mark.parametrize("text", [b"Hello Worl", b'"ello', "héllo", b"hell\x00", b"hel,o"])
def test_decode_bad_character(text: bytes | str) -> None:
    with pytest.raises(ValueError):
        z85_decode(text)


def test_decode_overflow() -> None:
    # "%nSc0" is 2**32 - 1; anything above does not fit in 4 bytes
    with pytest.raises(ValueError, match="fit"):
        z85_decode(b"%nSc1")
    with pytest.raises(ValueError, match="fit"):
        z85_decode(b"#####")


def test_curve_keypair() -> None:
    public, secret = curve_keypair()
    assert len(public) == len(secret) == 40
    assert set(public + secret) <= set(ALPHABET)
    assert curve_public(secret) == public
    assert zmq.curve_public(secret) == public
    assert curve_keypair() != (public, secret)


def test_curve_public_matches_pyzmq() -> None:
    public, secret = zmq.curve_keypair()
    assert curve_public(secret) == public
    assert curve_public(secret.decode()) == public
    assert curve_public(z85_decode(secret)) == public


def test_normalize_key() -> None:
    public, _ = zmq.curve_keypair()
    raw = z85_decode(public)
    assert len(raw) == 32
    assert normalize_key(raw) == raw
    assert normalize_key(bytearray(raw)) == raw
    assert normalize_key(public) == raw
    assert normalize_key(public.decode()) == raw
    for bad in (b"", raw[:31], raw + b"\x00", public[:39], public + b"0", "x" * 32, "é" * 40):
        with pytest.raises(ValueError):
            normalize_key(bad)
    with pytest.raises(ValueError):
        normalize_key(b" " * 40)  # 40 bytes but not Z85
    with pytest.raises(ValueError):
        normalize_key(42)  # type: ignore[arg-type]

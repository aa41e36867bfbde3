from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triomq._pgm import MessageDecoder, MessageEncoder
from triomq._pgm._framing import encode_frame_header

SETTINGS = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layout(messages: list[list[bytes]], max_payload: int) -> list[tuple[int, int]]:
    """For each message, the indices of the payloads it starts and ends in."""
    cap = max_payload - 2
    spans = []
    pos = 0
    for m in messages:
        start = pos
        for f in m:
            pos += len(encode_frame_header(len(f), False)) + len(f)
        spans.append((start // cap, (pos - 1) // cap))
    return spans


def _decode(payloads: list[bytes], decoder: MessageDecoder | None = None) -> list[list[bytes]]:
    decoder = decoder or MessageDecoder()
    out: list[list[bytes]] = []
    for p in payloads:
        out.extend(decoder.feed(p))
    assert decoder.errors == 0
    return out


def test_frame_headers() -> None:
    assert encode_frame_header(0, False) == b"\x01\x00"
    assert encode_frame_header(253, True) == b"\xfe\x01"
    assert encode_frame_header(254, False) == b"\xff" + (255).to_bytes(8, "big") + b"\x00"
    assert encode_frame_header(70000, True) == b"\xff" + (70001).to_bytes(8, "big") + b"\x01"


def test_known_encoding() -> None:
    enc = MessageEncoder(100)
    assert enc.encode([[b"A"]]) == [b"\x00\x00\x02\x00A"]
    assert enc.encode([[b"a", b"bc"], [b""]]) == [b"\x00\x00\x02\x01a\x03\x00bc\x01\x00"]
    # A message continued over payloads: 0xFFFF when no message starts.
    small = MessageEncoder(5)  # 3 bytes of frames per payload
    assert small.encode([[b"abcd"], [b"z"]]) == [
        b"\x00\x00\x05\x00a",
        b"\xff\xffbcd",
        b"\x00\x00\x02\x00z",
    ]
    assert small.encode([[b"abc"], [b"z"]]) == [
        b"\x00\x00\x04\x00a",
        b"\x00\x02bc\x02",
        b"\xff\xff\x00z",
    ]


def test_encoder_rejects() -> None:
    with pytest.raises(ValueError):
        MessageEncoder(2)
    with pytest.raises(ValueError):
        MessageEncoder(65536)
    with pytest.raises(ValueError):
        MessageEncoder(100).encode([[]])
    assert MessageEncoder(100).encode([]) == []


SIZES = [0, 1, 2, 253, 254, 255, 256, 1000, 65535, 65536, 200_000]


@pytest.mark.parametrize("max_payload", [3, 4, 5, 7, 16, 255, 256, 1428, 1448, 9000, 65535])
def test_round_trip_sizes(max_payload: int) -> None:
    rng = random.Random(max_payload)
    messages = [[rng.randbytes(n)] for n in SIZES]
    multi = SIZES if max_payload >= 16 else SIZES[:8]  # keep tiny payloads quick
    messages += [[rng.randbytes(n) for n in multi[i : i + 3]] for i in range(0, len(multi), 3)]
    enc = MessageEncoder(max_payload)
    payloads = enc.encode(messages)
    assert all(len(p) <= max_payload for p in payloads)
    assert _decode(payloads) == messages
    # One message per encode call works the same.
    payloads = [p for m in messages for p in enc.encode([m])]
    assert _decode(payloads) == messages


def test_round_trip_every_max_payload() -> None:
    rng = random.Random(7)
    messages = [[rng.randbytes(rng.choice([0, 1, 5, 40, 300]))] for _ in range(30)]
    messages.append([b"x", b"", b"yz" * 200])
    for max_payload in range(3, 700):
        payloads = MessageEncoder(max_payload).encode(messages)
        assert all(len(p) <= max_payload for p in payloads)
        assert _decode(payloads) == messages, max_payload


messages_st = st.lists(
    st.lists(st.binary(max_size=600), min_size=1, max_size=4), min_size=1, max_size=12
)


@SETTINGS
@given(messages_st, st.integers(3, 2000), st.integers(0, 50))
def test_late_join_property(messages: list[list[bytes]], max_payload: int, join: int) -> None:
    payloads = MessageEncoder(max_payload).encode(messages)
    join %= len(payloads)
    spans = _layout(messages, max_payload)
    expected = [m for m, (first, _last) in zip(messages, spans, strict=True) if first >= join]
    decoder = MessageDecoder()
    assert _decode(payloads[join:], decoder) == expected


@SETTINGS
@given(messages_st, st.integers(3, 2000), st.integers(0, 50))
def test_reset_after_loss_property(
    messages: list[list[bytes]], max_payload: int, lost: int
) -> None:
    payloads = MessageEncoder(max_payload).encode(messages)
    lost %= len(payloads)
    spans = _layout(messages, max_payload)
    expected = [m for m, (first, last) in zip(messages, spans, strict=True) if last < lost or first > lost]
    decoder = MessageDecoder()
    out = _decode(payloads[:lost], decoder)
    decoder.reset()  # the receiver lost payload `lost`
    out += _decode(payloads[lost + 1 :], decoder)
    assert out == expected


def test_late_join_skips_to_offset() -> None:
    enc = MessageEncoder(12)
    messages = [[b"A" * 20], [b"B" * 3], [b"C" * 30]]
    payloads = enc.encode(messages)
    dec = MessageDecoder()
    assert dec.feed(payloads[1]) == []  # the middle of A: no offset
    assert not dec.joined
    out = []
    for p in payloads[2:]:
        out += dec.feed(p)
    assert out == messages[1:]


def test_offset_at_end_of_payload_is_accepted() -> None:
    # libzmq's encoder may point the offset just past the last byte, when a
    # message ends there and no other is queued yet.
    dec = MessageDecoder()
    assert dec.feed(b"\x00\x00\x02\x00A") == [[b"A"]]
    assert dec.feed(b"\x00\x00\x04\x00ab") == []
    assert dec.feed(b"\x00\x01c") == [[b"abc"]]
    assert dec.feed(b"\x00\x00\x02\x00z") == [[b"z"]]
    assert dec.errors == 0
    late = MessageDecoder()
    assert late.feed(b"\x00\x02xy") == []
    assert late.joined
    assert late.feed(b"\x00\x00\x02\x00q") == [[b"q"]]
    assert late.errors == 0


@pytest.mark.parametrize(
    "bad",
    [
        b"\x00",  # shorter than the offset
        b"\x00\x09\x02\x00A",  # offset past the end
        b"\x00\x00\x00\x00",  # zero length
        b"\x00\x00\xff" + (0).to_bytes(8, "big") + b"\x00",  # zero 8-byte length
        b"\x00\x00\x03\x00A\x02\x00B",  # a message starts, but offset says another at 0
    ],
)
def test_errors_resync(bad: bytes) -> None:
    dec = MessageDecoder()
    dec.feed(b"\x00\x00\x02\x00A")
    dec.feed(bad)
    assert dec.errors >= 1
    # Whatever happened, the next announced message is decoded whole.
    out = dec.feed(b"\xff\xffjunk")
    out += dec.feed(b"\x00\x02zz\x02\x00Z")
    assert out == [[b"Z"]]


def test_unannounced_message_start_is_an_error() -> None:
    dec = MessageDecoder()
    assert dec.feed(b"\x00\x00\x04\x00ab") == []
    # Completes the message, then another starts although the offset says none does.
    assert dec.feed(b"\xff\xffc\x02\x00Z") == [[b"abc"]]
    assert dec.errors == 1 and not dec.joined


def test_offset_contradicting_continuation() -> None:
    dec = MessageDecoder()
    dec.feed(b"\x00\x00\x06\x00ab")  # 5-byte body, 2 so far
    # The offset says the next message starts at 1, but 3 bytes remain.
    out = dec.feed(b"\x00\x01c\x02\x00Z")
    assert out == [[b"Z"]]
    assert dec.errors == 1


def test_max_msg_size() -> None:
    dec = MessageDecoder(max_msg_size=10)
    payloads = MessageEncoder(100).encode([[b"x" * 11], [b"y" * 10]])
    out = dec.feed(payloads[0])
    assert out == [] and dec.errors == 1
    payloads = MessageEncoder(100).encode([[b"y" * 10]])
    assert dec.feed(payloads[0]) == [[b"y" * 10]]


def test_partial_header_across_payloads() -> None:
    body = b"q" * 300
    stream = encode_frame_header(300, False) + body
    for cut in range(1, 11):
        p1 = b"\x00\x00" + stream[:cut]
        p2 = b"\xff\xff" + stream[cut:]
        dec = MessageDecoder()
        assert dec.feed(p1) == []
        assert dec.feed(p2) == [[body]]

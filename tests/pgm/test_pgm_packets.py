from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triomq._pgm import (
    BadPacket,
    Fragment,
    Nak,
    Ncf,
    Odata,
    Rdata,
    Spm,
    Spmr,
    UnsupportedPacket,
    decode_packet_untrusted,
    encode_packet,
)
from triomq._pgm._packets import checksum

GSI = bytes.fromhex("a1b2c3d4e5f6")
SETTINGS = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
gsis = st.binary(min_size=6, max_size=6)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


@st.composite
def fragments(draw: st.DrawFn, sqn: int, tsdu_len: int) -> Fragment:
    index = draw(st.integers(0, 1000))
    offset = draw(st.integers(index, index + 100_000))
    apdu_length = draw(st.integers(offset + tsdu_len, offset + tsdu_len + 100_000))
    return Fragment((sqn - index) & 0xFFFFFFFF, offset, apdu_length)


@st.composite
def data_packets(draw: st.DrawFn) -> Odata | Rdata:
    cls = draw(st.sampled_from([Odata, Rdata]))
    sqn = draw(u32)
    payload = draw(st.binary(max_size=1500))
    frag = None
    if payload and draw(st.booleans()):
        frag = draw(fragments(sqn, len(payload)))
    return cls(draw(u16), draw(u16), draw(gsis), sqn, draw(u32), payload, frag)


@st.composite
def nak_packets(draw: st.DrawFn) -> Nak | Ncf:
    cls = draw(st.sampled_from([Nak, Ncf]))
    extra = tuple(draw(st.lists(u32, max_size=62)))
    return cls(draw(u16), draw(u16), draw(gsis), draw(u32), draw(ipv4), draw(ipv4), extra)


packets = st.one_of(
    data_packets(),
    nak_packets(),
    st.builds(Spm, u16, u16, gsis, u32, u32, u32, ipv4),
    st.builds(Spmr, u16, u16, gsis),
)


EXAMPLES = [
    Odata(1000, 5555, GSI, 7, 3, b"hello"),
    Odata(1000, 5555, GSI, 7, 3, b""),
    Rdata(1000, 5555, GSI, 0xFFFFFFFF, 0xFFFFFF00, b"x" * 1428),
    Odata(1000, 5555, GSI, 12, 3, b"y" * 100, Fragment(10, 2856, 3000)),
    Rdata(1000, 5555, GSI, 0, 3, b"z" * 5, Fragment(0xFFFFFFFF, 1, 6)),
    Spm(1000, 5555, GSI, 1, 2, 1, "192.168.1.10"),
    Nak(5555, 1000, GSI, 42, "192.168.1.10", "239.192.1.1"),
    Nak(5555, 1000, GSI, 42, "192.168.1.10", "239.192.1.1", tuple(range(43, 43 + 62))),
    Ncf(1000, 5555, GSI, 42, "192.168.1.10", "239.192.1.1", (50, 51)),
    Spmr(5555, 1000, GSI),
]


@pytest.mark.parametrize("pkt", EXAMPLES, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("with_checksum", [True, False])
def test_round_trip_examples(pkt: object, with_checksum: bool) -> None:
    data = encode_packet(pkt, with_checksum=with_checksum)  # type: ignore[arg-type]
    assert decode_packet_untrusted(data) == pkt
    assert (data[6:8] != b"\x00\x00") == with_checksum


@SETTINGS
@given(packets)
def test_round_trip_property(pkt: object) -> None:
    data = encode_packet(pkt)  # type: ignore[arg-type]
    assert decode_packet_untrusted(data) == pkt
    assert decode_packet_untrusted(bytearray(data)) == pkt


def test_odata_layout() -> None:
    data = encode_packet(Odata(0x1234, 0x5678, GSI, 0x01020304, 0x05060708, b"abc"))
    assert data[0:2] == b"\x12\x34"
    assert data[2:4] == b"\x56\x78"
    assert data[4] == 0x04  # ODATA
    assert data[5] == 0x00  # no options
    assert data[8:14] == GSI
    assert data[14:16] == b"\x00\x03"  # TSDU length
    assert data[16:24] == bytes.fromhex("0102030405060708")
    assert data[24:] == b"abc"
    # Internet checksum: the whole packet sums to 0xFFFF.
    padded = data + b"\0" * (len(data) % 2)
    words = struct.unpack(f">{len(padded) // 2}H", padded)
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def test_fragment_option_layout() -> None:
    data = encode_packet(Rdata(1, 2, GSI, 11, 9, b"q" * 4, Fragment(10, 1400, 1404)))
    assert data[4] == 0x05  # RDATA
    assert data[5] == 0x01  # options present
    assert data[24:28] == bytes((0x00, 4, 0, 20))  # OPT_LENGTH, total 20
    assert data[28] == 0x81  # OPT_FRAGMENT | OPT_END
    assert data[29] == 16
    assert data[30:32] == b"\x00\x00"
    assert struct.unpack(">III", data[32:44]) == (10, 1400, 1404)
    assert data[44:] == b"qqqq"


def test_spm_and_nak_layout() -> None:
    spm = encode_packet(Spm(1, 2, GSI, 5, 6, 7, "10.1.2.3"), with_checksum=False)
    assert len(spm) == 36
    assert struct.unpack(">IIIHH", spm[16:32]) == (5, 6, 7, 1, 0)
    assert spm[32:36] == bytes((10, 1, 2, 3))
    nak = encode_packet(Nak(2, 1, GSI, 9, "10.1.2.3", "239.1.2.3", (10, 11)), with_checksum=False)
    assert nak[4] == 0x08
    assert nak[5] == 0x03  # options present | network significant
    assert struct.unpack(">IHH", nak[16:24]) == (9, 1, 0)
    assert nak[24:28] == bytes((10, 1, 2, 3))
    assert struct.unpack(">HH", nak[28:32]) == (1, 0)
    assert nak[32:36] == bytes((239, 1, 2, 3))
    assert nak[36:40] == bytes((0, 4, 0, 16))  # OPT_LENGTH: 4 + 12
    assert nak[40:44] == bytes((0x82, 12, 0, 0))  # OPT_NAK_LIST | OPT_END
    assert struct.unpack(">II", nak[44:52]) == (10, 11)


def test_checksum_never_zero() -> None:
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\xff\xff") == 0xFFFF
    assert checksum(b"\x00\x01") == 0xFFFE


def _fix_checksum(data: bytes | bytearray) -> bytes:
    data = bytearray(data)
    data[6:8] = b"\x00\x00"
    data[6:8] = checksum(bytes(data)).to_bytes(2, "big")
    return bytes(data)


GOOD = encode_packet(EXAMPLES[3])


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "short"),
        (GOOD[:15], "short"),
        (_fix_checksum(GOOD[:4] + b"\x03" + GOOD[5:]), "type"),
        (_fix_checksum(GOOD[:4] + b"\x77" + GOOD[5:]), "type"),
        (GOOD[:-1] + bytes((GOOD[-1] ^ 1,)), "checksum"),
        (_fix_checksum(GOOD[:-1]), "TSDU length"),
        (_fix_checksum(GOOD + b"!"), "TSDU length"),
        (
            _fix_checksum(GOOD[:24] + b"\x01" + GOOD[25:]),
            "OPT_LENGTH",
        ),  # first option not OPT_LENGTH
        (_fix_checksum(GOOD[:27] + b"\xf0" + GOOD[28:]), "fit"),  # total length past the end
        (_fix_checksum(GOOD[:28] + b"\x01" + GOOD[29:]), "length"),  # no end bit: chain overruns
        (_fix_checksum(GOOD[:29] + b"\x0f" + GOOD[30:]), "length"),  # option overruns the chain
        (_fix_checksum(GOOD[:29] + b"\x02" + GOOD[30:]), "length"),  # option length too small
        (
            _fix_checksum(GOOD[:36] + b"\x00\x00\x00\x00" + GOOD[40:]),
            "fragment",
        ),  # offset 0 != index 2
        (_fix_checksum(GOOD[:40] + b"\x00\x00\x00\x05" + GOOD[44:]), "overruns"),  # APDU too short
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed(data: bytes, why: str) -> None:
    with pytest.raises(BadPacket, match=f"(?i){why}"):
        decode_packet_untrusted(data)


def test_unsupported() -> None:
    spm = bytearray(encode_packet(Spm(1, 2, GSI, 5, 6, 7, "10.1.2.3"), with_checksum=False))
    spm[28:30] = b"\x00\x02"  # IPv6 AFI
    with pytest.raises(UnsupportedPacket):
        decode_packet_untrusted(bytes(spm))
    spm[28:30] = b"\x00\x07"
    with pytest.raises(BadPacket, match="AFI"):
        decode_packet_untrusted(bytes(spm))
    poll = bytearray(spm)
    poll[4] = 0x01
    with pytest.raises(UnsupportedPacket):
        decode_packet_untrusted(bytes(poll))
    parity = bytearray(encode_packet(EXAMPLES[0], with_checksum=False))
    parity[5] = 0x80
    with pytest.raises(UnsupportedPacket):
        decode_packet_untrusted(bytes(parity))


def test_unknown_options_are_skipped() -> None:
    base = encode_packet(Odata(1, 2, GSI, 5, 5, b"data"), with_checksum=False)
    opts = bytes((0x00, 4, 0, 12)) + bytes((0x0D, 4, 0, 0)) + bytes((0x8E, 4, 0, 0))  # SYN, FIN|END
    data = bytearray(base[:24] + opts + base[24:])
    data[5] = 0x01
    assert decode_packet_untrusted(bytes(data)) == Odata(1, 2, GSI, 5, 5, b"data")


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        encode_packet(Odata(1, 2, b"short", 5, 5, b""))
    with pytest.raises(ValueError):
        encode_packet(Odata(70000, 2, GSI, 5, 5, b""))
    with pytest.raises(ValueError):
        encode_packet(Odata(1, 2, GSI, 1 << 32, 5, b""))
    with pytest.raises(ValueError):
        encode_packet(Spm(1, 2, GSI, 1, 2, 3, "not an address"))
    with pytest.raises(ValueError):
        encode_packet(Nak(1, 2, GSI, 1, "1.2.3.4", "1.2.3.4", tuple(range(63))))


def _decode_only_bad_packet(data: bytes) -> None:
    try:
        decode_packet_untrusted(data)
    except BadPacket:
        pass


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    _decode_only_bad_packet(data)


@SETTINGS
@given(st.binary(min_size=16, max_size=200), st.sampled_from([0x00, 0x04, 0x05, 0x08, 0x0A, 0x0C]))
def test_random_bodies_without_checksum(data: bytes, ptype: int) -> None:
    # Checksum 0 ("none") and a real type: the parser has to look deeper.
    data = bytearray(data)
    data[4] = ptype
    data[6:8] = b"\x00\x00"
    _decode_only_bad_packet(bytes(data))


@SETTINGS
@given(
    packets,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 20),
    st.sampled_from(["zero", "fix", "keep"]),
)
def test_mutated_packets(pkt: object, edits: list[tuple[int, int]], cut: int, csum: str) -> None:
    data = bytearray(encode_packet(pkt))  # type: ignore[arg-type]
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut:
        del data[-cut:]
    if len(data) >= 8:
        if csum == "zero":
            data[6:8] = b"\x00\x00"
        elif csum == "fix":
            data = bytearray(_fix_checksum(data))
    _decode_only_bad_packet(bytes(data))

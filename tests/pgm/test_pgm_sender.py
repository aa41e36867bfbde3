from __future__ import annotations

import math
import random

import pytest

from triomq._pgm import (
    Nak,
    Ncf,
    Odata,
    PgmSender,
    Rdata,
    Spm,
    Spmr,
    decode_packet_untrusted,
    encode_packet,
    max_tsdu,
)

GSI = bytes.fromhex("0102030405a6")
GROUP = "239.192.1.1"
SRC = "10.0.0.1"
SPORT, PORT = 4242, 5555
INITIAL = 0xFFFFFFFE  # wraps after two packets


def make_sender(**kw: object) -> PgmSender:
    params: dict[str, object] = {"initial_sqn": INITIAL}
    params.update(kw)
    rate = params.pop("rate_kbps", 100_000)
    return PgmSender(GSI, SPORT, PORT, GROUP, SRC, 1500, rate, 10.0, random.Random(1), **params)  # type: ignore[arg-type]


def decode_all(datagrams: list[bytes]) -> list[object]:
    return [decode_packet_untrusted(d) for d in datagrams]


def nak(sqns: list[int], **kw: object) -> bytes:
    fields: dict[str, object] = {
        "sport": PORT,
        "dport": SPORT,
        "gsi": GSI,
        "source_nla": SRC,
        "group_nla": GROUP,
    }
    fields.update(kw)
    return encode_packet(Nak(sqn=sqns[0], nak_list=tuple(sqns[1:]), **fields))  # type: ignore[arg-type]


def test_sizes() -> None:
    assert max_tsdu(1500) == 1448
    assert max_tsdu(1500, fragment=True) == 1428
    s = make_sender()
    assert (s.max_tsdu, s.max_tsdu_fragment, s.max_apdu) == (1448, 1428, 1428)


def test_initial_spm_and_heartbeats() -> None:
    s = make_sender()
    assert s.next_deadline() == -math.inf
    (spm,) = decode_all(s.on_timer(100.0))
    assert spm == Spm(SPORT, PORT, GSI, 0, INITIAL, INITIAL - 1, SRC)
    # Start-up heartbeats: as after data.
    assert s.next_deadline() == pytest.approx(100.004)
    assert s.on_timer(100.001) == []


def test_odata_and_heartbeat_schedule() -> None:
    s = make_sender(heartbeat_spm_ivls=(0.004, 0.004, 0.008, 0.016), ambient_spm_ivl=8.0)
    s.on_timer(0.0)
    (pkt,) = decode_all(s.send([b"hello"], 1.0))
    assert pkt == Odata(SPORT, PORT, GSI, INITIAL, INITIAL, b"\x00\x00\x06\x00hello")
    times = []
    now = 1.0
    for _ in range(6):
        now = s.next_deadline()
        out = decode_all(s.on_timer(now))
        assert len(out) == 1 and isinstance(out[0], Spm)
        assert (out[0].trail, out[0].lead) == (INITIAL, INITIAL)
        times.append(round(now - 1.0, 6))
    # Heartbeats at +4, +8, +16, +32 ms, then ambient SPMs every 8 s.
    assert times == [0.004, 0.008, 0.016, 0.032, 8.032, 16.032]
    spm_sqns = [s.stats.spm_packets]
    assert spm_sqns == [7]


def test_sequence_numbers_wrap_and_trail_advances() -> None:
    s = make_sender(txw_sqns=3)
    sqns = []
    trails = []
    for i in range(5):
        (pkt,) = decode_all(s.send([bytes([i])], float(i)))
        assert isinstance(pkt, Odata)
        sqns.append(pkt.sqn)
        trails.append(pkt.trail)
    assert sqns == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2]
    assert trails == [0xFFFFFFFE, 0xFFFFFFFE, 0xFFFFFFFE, 0xFFFFFFFF, 0]
    assert (s.trail, s.lead) == (0, 2)


def test_batching_and_fragmentation() -> None:
    s = make_sender()
    out = decode_all(s.send_many([[b"a"], [b"b", b"c"]], 0.0))
    assert [p.payload for p in out] == [b"\x00\x00\x02\x00a\x02\x01b\x02\x00c"]  # type: ignore[attr-defined]
    big = make_sender(max_apdu=5000)
    body = bytes(range(256)) * 16  # 4096 bytes: APDU 2 + 10 + 4096
    pkts = decode_all(big.send([body], 0.0))
    assert len(pkts) == 3
    apdu = b""
    for i, p in enumerate(pkts):
        assert isinstance(p, Odata) and p.fragment is not None
        assert p.sqn == (INITIAL + i) & 0xFFFFFFFF
        assert p.fragment.first_sqn == INITIAL
        assert p.fragment.offset == len(apdu)
        assert p.fragment.apdu_length == 4108
        assert len(p.payload) <= 1428
        apdu += p.payload
    assert apdu == b"\x00\x00\xff" + (4097).to_bytes(8, "big") + b"\x00" + body
    # An APDU that fits one TSDU is not fragmented even when max_apdu is larger.
    (small,) = decode_all(big.send([b"x" * 1400], 1.0))
    assert isinstance(small, Odata) and small.fragment is None


def test_rate_limit() -> None:
    # 80 kbit/s = 10 000 bytes/s; bursts of 3000 bytes.
    s = make_sender(rate_kbps=80)
    now = 0.0
    first = s.send_many([[b"x" * 972] for _ in range(10)], now)
    assert s.queued_bytes > 0
    assert s.send_delay(now) > 0
    sent = first[:]
    assert len(sent) == 2  # 10 messages pack into 7 TSDUs of up to 1428 bytes; two fit the burst
    while s.queued_bytes:
        deadline = s.next_deadline()
        assert deadline >= now
        now = max(now, deadline)
        sent += [p for p in s.on_timer(now) if isinstance(decode_packet_untrusted(p), Odata)]
    assert len(sent) == s.stats.odata_packets == 7
    # Each datagram costs its length plus 28 bytes of IP/UDP; the burst was free.
    assert now == pytest.approx((sum(len(p) + 28 for p in sent) - 3000) / 10_000, abs=0.002)
    assert s.send_delay(now) == 0


def test_nak_gets_ncf_and_rdata() -> None:
    s = make_sender()
    odata = decode_all(s.send_many([[bytes([i]) * 1500] for i in range(3)], 0.0))
    assert len(odata) == 4
    out = decode_all(s.on_packet(nak([0xFFFFFFFF, 0, 7]), 1.0))
    ncf, r1, r2 = out
    assert ncf == Ncf(SPORT, PORT, GSI, 0xFFFFFFFF, SRC, GROUP, (0,))
    for r, o in ((r1, odata[1]), (r2, odata[2])):
        assert isinstance(r, Rdata) and isinstance(o, Odata)
        assert (r.sqn, r.payload, r.fragment) == (o.sqn, o.payload, o.fragment)
        assert r.trail == s.trail
    # Repeated soon after: confirmed again, but not repaired again.
    assert decode_all(s.on_packet(nak([0]), 1.01)) == [Ncf(SPORT, PORT, GSI, 0, SRC, GROUP)]
    out = decode_all(s.on_packet(nak([0]), 1.2))
    assert [type(p) for p in out] == [Ncf, Rdata]
    assert s.stats.naks_received == 3 and s.stats.rdata_packets == 3


def test_nak_outside_window_is_not_confirmed() -> None:
    s = make_sender(txw_sqns=2)
    for i in range(4):
        s.send([bytes([i])], 0.0)
    assert s.on_packet(nak([INITIAL]), 1.0) == []
    assert s.stats.nak_sqns_unavailable == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"gsi": b"\x00" * 6},
        {"dport": SPORT + 1},
        {"sport": PORT + 1},
        {"group_nla": "239.0.0.9"},
        {"source_nla": "10.9.9.9"},
    ],
)
def test_nak_for_someone_else_is_ignored(kw: dict[str, object]) -> None:
    s = make_sender()
    s.send([b"x"], 0.0)
    assert s.on_packet(nak([INITIAL], **kw), 1.0) == []
    assert s.stats.naks_ignored == 1


def test_repairs_are_rate_limited_and_go_first() -> None:
    s = make_sender(rate_kbps=80)
    s.send([b"a" * 1000], 0.0)
    s.send_many([[b"b" * 1400] for _ in range(3)], 0.0)  # most of it queued
    assert s.queued_bytes
    out = decode_all(s.on_packet(nak([INITIAL]), 0.0))
    assert [type(p) for p in out] == [Ncf]  # the RDATA waits for tokens
    data: list[object] = []
    while not data:
        data = [p for p in decode_all(s.on_timer(s.next_deadline())) if not isinstance(p, Spm)]
    assert [type(p) for p in data] == [Rdata]


def test_spmr_and_garbage() -> None:
    s = make_sender()
    s.on_timer(0.0)
    (spm,) = decode_all(s.on_packet(encode_packet(Spmr(PORT, SPORT, GSI)), 0.5))
    assert isinstance(spm, Spm) and spm.spm_sqn == 1
    assert s.on_packet(b"garbage", 0.5) == []
    assert s.on_packet(encode_packet(Odata(1, 2, GSI, 1, 1, b"")), 0.5) == []
    assert s.stats.bad_packets == 1


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        PgmSender(b"short", 1, 2, GROUP, SRC, 1500, 100, 10, random.Random())
    with pytest.raises(ValueError):
        PgmSender(GSI, 1, 2, "nope", SRC, 1500, 100, 10, random.Random())
    with pytest.raises(ValueError):
        PgmSender(GSI, 1, 2, GROUP, SRC, 1500, 100, 10, random.Random(), max_apdu=70000)

from __future__ import annotations

import math
import random

import pytest

from triomq._pgm import (
    Loss,
    Nak,
    Ncf,
    Odata,
    PgmReceiver,
    PgmSender,
    Rdata,
    ReceiverOutput,
    Spm,
    Tsi,
    decode_packet_untrusted,
    encode_packet,
)
from triomq._pgm._receiver import MAX_PEERS

GSI = bytes.fromhex("0102030405a6")
GROUP = "239.192.1.1"
SRC = "10.0.0.1"
SPORT, PORT = 4242, 5555
INITIAL = 0xFFFFFFF0
TSI = Tsi(GSI, SPORT)


def make_sender(**kw: object) -> PgmSender:
    params: dict[str, object] = {"initial_sqn": INITIAL}
    params.update(kw)
    return PgmSender(GSI, SPORT, PORT, GROUP, SRC, 1500, 100_000, 10.0, random.Random(1), **params)  # type: ignore[arg-type]


def make_receiver(**kw: object) -> PgmReceiver:
    return PgmReceiver(PORT, GROUP, random.Random(2), **kw)  # type: ignore[arg-type]


def spm(lead: int, trail: int | None = None, sqn: int = 0, nla: str = SRC) -> bytes:
    if trail is None:
        trail = (lead + 1) & 0xFFFFFFFF
    return encode_packet(Spm(SPORT, PORT, GSI, sqn, trail, lead, nla))


def ncf(sqns: list[int]) -> bytes:
    return encode_packet(Ncf(SPORT, PORT, GSI, sqns[0], SRC, GROUP, tuple(sqns[1:])))


class Harness:
    """A receiver fed by hand, accumulating what it outputs."""

    def __init__(self, receiver: PgmReceiver) -> None:
        self.r = receiver
        self.messages: list[list[bytes]] = []
        self.naks: list[tuple[Nak, str]] = []
        self.losses: list[Loss] = []

    def _take(self, out: ReceiverOutput) -> ReceiverOutput:
        self.messages += out.messages
        self.losses += out.losses
        for o in out.outgoing:
            pkt = decode_packet_untrusted(o.data)
            assert isinstance(pkt, Nak)
            self.naks.append((pkt, o.dest))
        return out

    def feed(self, data: bytes, now: float, src: str = SRC) -> ReceiverOutput:
        return self._take(self.r.on_packet(data, src, now))

    def run_until(self, end: float) -> float:
        """Fire every timer due up to ``end``; returns the time of the last one."""
        last = -math.inf
        while self.r.next_deadline() <= end:
            last = self.r.next_deadline()
            self._take(self.r.on_timer(last))
        return last

    def nak_sqns(self) -> list[int]:
        return [s for n, _ in self.naks for s in n.sqns]


def messages_and_packets(
    sender: PgmSender, n: int, size: int = 10, *, together: bool = False
) -> tuple[list[list[bytes]], list[bytes]]:
    msgs = [[i.to_bytes(2, "big") * (size // 2)] for i in range(n)]
    if together:
        pkts = sender.send_many(msgs, 0.0)
    else:
        pkts = [p for m in msgs for p in sender.send(m, 0.0)]
    return msgs, pkts


def W(i: int) -> int:
    """The wire sequence number of the sender's i-th packet."""
    return (INITIAL + i) & 0xFFFFFFFF


def test_in_order_delivery_and_duplicates() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 40)
    h = Harness(make_receiver())
    h.feed(spm(INITIAL - 1), 0.0)
    for p in pkts:
        h.feed(p, 0.1)
        h.feed(p, 0.1)  # duplicate
    assert h.messages == msgs
    assert h.r.stats.duplicates == 40
    assert h.r.peers == [TSI]
    assert h.r.next_deadline() == pytest.approx(0.1 + 5 * 8.192)


def test_reordering_within_back_off_needs_no_nak() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 30)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0)
    for p in reversed(pkts[1:]):
        h.feed(p, 0.001)
    h.run_until(1.0)
    assert h.messages == msgs
    assert h.naks == []


def test_gap_naks_after_back_off() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 10)
    h = Harness(make_receiver(nak_bo_ivl=0.05))
    h.feed(spm(INITIAL - 1), 0.0)
    h.feed(pkts[0], 1.0, src="10.0.0.77")
    h.feed(pkts[4], 1.0, src="10.0.0.77")
    deadline = h.r.next_deadline()
    assert 1.0 <= deadline < 1.05
    h.run_until(deadline)
    ((nak, dest),) = h.naks
    # Unicast to the NLA from the SPM; one NAK lists every missing packet.
    assert dest == SRC
    assert nak == Nak(PORT, SPORT, GSI, INITIAL + 1, SRC, GROUP, (INITIAL + 2, INITIAL + 3))
    # The source answers; the repairs complete the stream.
    answers = s.on_packet(encode_packet(nak), 1.1)
    kinds = [type(decode_packet_untrusted(a)) for a in answers]
    assert kinds[0] is Ncf and kinds.count(Ncf) == 1
    for a in answers:
        h.feed(a, 1.11)
    for p in pkts[5:]:
        h.feed(p, 1.2)
    assert h.messages == msgs
    assert h.losses == []


def test_nak_goes_to_packet_source_without_spm() -> None:
    s = make_sender()
    _msgs, pkts = messages_and_packets(s, 3)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0, src="10.0.0.5")
    h.feed(pkts[2], 0.0, src="10.0.0.5")
    h.run_until(0.1)
    ((nak, dest),) = h.naks
    assert dest == "10.0.0.5" and nak.source_nla == "10.0.0.5" and nak.sqn == INITIAL + 1


def test_ncf_suppresses_nak_then_rdata_fills() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 3)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0)
    h.feed(pkts[2], 0.0)
    h.feed(ncf([INITIAL + 1]), 0.001)  # someone else NAKed it
    h.run_until(0.1)
    assert h.naks == [] and h.r.stats.naks_suppressed == 1
    h.feed(encode_packet(_as_rdata(pkts[1])), 0.15)
    assert h.messages == msgs


def _as_rdata(odata: bytes) -> Rdata:
    p = decode_packet_untrusted(odata)
    assert isinstance(p, Odata)
    return Rdata(p.sport, p.dport, p.gsi, p.sqn, p.trail, p.payload, p.fragment)


def test_foreign_nak_suppresses() -> None:
    s = make_sender()
    _msgs, pkts = messages_and_packets(s, 3)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0)
    h.feed(pkts[2], 0.0)
    other = encode_packet(Nak(PORT, SPORT, GSI, INITIAL + 1, SRC, GROUP))
    h.feed(other, 0.0, src="10.0.0.99")
    assert h.run_until(0.1) == -math.inf  # nothing due: waiting for the NCF
    assert h.naks == []
    # No NCF within nak_rpt_ivl: back to back-off and NAK ourselves.
    h.run_until(0.3)
    assert h.nak_sqns() == [INITIAL + 1]


def test_gives_up_after_ncf_retries_and_resumes_at_next_message() -> None:
    s = make_sender()
    # Three messages of 3000 bytes packed into 7 packets of 1426 bytes of frames:
    # message 0 is in packets 0-2, message 1 in 2-4, message 2 in 4-6.
    msgs, pkts = messages_and_packets(s, 3, size=3000, together=True)
    assert len(pkts) == 7
    h = Harness(make_receiver(nak_ncf_retries=2))
    h.feed(spm(INITIAL - 1), 0.0)
    for i, p in enumerate(pkts):
        if i != 4:  # the packet holding the end of message 1 and the start of message 2
            h.feed(p, 0.0)
    h.run_until(10.0)
    assert h.nak_sqns() == [INITIAL + 4] * 3  # the NAK, then two retries
    assert h.losses == [Loss(TSI, INITIAL + 4, 1)]
    assert h.r.stats.lost_sqns == 1 and h.r.stats.loss_events == 1
    # Message 0 was whole before the gap; 1 and 2 touched the lost packet.
    assert h.messages == msgs[:1]
    more = [p for m in [[b"after"]] for p in s.send(m, 0.0)]
    h.feed(more[0], 10.0)
    assert h.messages == [*msgs[:1], [b"after"]]


def test_gives_up_after_data_retries() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 3)
    h = Harness(make_receiver(nak_data_retries=3, nak_ncf_retries=0))
    h.feed(pkts[0], 0.0)
    h.feed(pkts[2], 0.0)
    now = 0.0
    for _ in range(10):
        now = h.r.next_deadline()
        if now == math.inf or h.losses:
            break
        h.run_until(now)
        if h.naks and h.r.stats.ncf_packets < len(h.naks):
            h.feed(ncf([INITIAL + 1]), now + 0.001)  # confirmed, but the RDATA never comes
    assert h.losses == [Loss(TSI, INITIAL + 1, 1)]
    assert len(h.naks) == 4  # first NAK + 3 data retries
    assert h.messages == [msgs[0], msgs[2]]


def test_trail_passing_a_gap_is_a_loss() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 6)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0)
    h.feed(pkts[3], 0.0)
    # The source's window moved past the gap: SPM with trail = INITIAL + 3.
    h.feed(spm(INITIAL + 5, trail=INITIAL + 3, sqn=5), 0.01)
    assert h.losses == [Loss(TSI, INITIAL + 1, 2)]
    assert h.messages == [msgs[0], msgs[3]]
    # ... and the SPM's lead tells of 4 and 5: they are NAKed.
    h.run_until(0.1)
    assert h.nak_sqns() == [INITIAL + 4, INITIAL + 5]


def test_data_far_ahead_forces_out_of_window() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 20)
    h = Harness(make_receiver(rxw_sqns=5))
    h.feed(pkts[0], 0.0)
    h.feed(pkts[19], 0.0)
    assert h.losses == [Loss(TSI, INITIAL + 1, 14)]
    h.run_until(0.06)
    assert h.nak_sqns() == [W(i) for i in range(15, 19)]
    for p in pkts[15:19]:
        h.feed(p, 0.1)
    assert h.messages == [msgs[0], *msgs[15:]]


def test_late_join_mid_message() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 3, size=3000)
    h = Harness(make_receiver())
    for p in pkts[1:]:  # joins in the middle of message 0
        h.feed(p, 0.0)
    assert h.messages == msgs[1:]
    assert h.naks == [] and h.losses == []
    h.run_until(1.0)
    assert h.naks == []


def test_late_join_via_spm() -> None:
    s = make_sender()
    msgs, pkts = messages_and_packets(s, 4)
    h = Harness(make_receiver())
    h.feed(spm(INITIAL + 1), 0.0)  # the source already sent 0 and 1
    h.feed(pkts[3], 0.0)
    h.run_until(0.1)
    assert h.nak_sqns() == [INITIAL + 2]
    h.feed(pkts[2], 0.2)
    assert h.messages == msgs[2:]


def test_tail_loss_found_by_spm() -> None:
    s = make_sender()
    _msgs, pkts = messages_and_packets(s, 3)
    h = Harness(make_receiver())
    h.feed(pkts[0], 0.0)
    h.feed(spm(INITIAL + 2, trail=INITIAL, sqn=1), 0.004)
    h.run_until(0.1)
    assert h.nak_sqns() == [INITIAL + 1, INITIAL + 2]


def test_rdata_does_not_start_a_session() -> None:
    s = make_sender()
    _msgs, pkts = messages_and_packets(s, 2)
    h = Harness(make_receiver())
    h.feed(encode_packet(_as_rdata(pkts[1])), 0.0)
    assert h.r.peers == []
    h.feed(pkts[0], 0.0)
    h.feed(pkts[1], 0.0)
    assert len(h.messages) == 2


def test_fragmented_apdus_with_repair() -> None:
    s = make_sender(max_apdu=9000)
    msgs = [[bytes([i]) * 7000] for i in range(3)]
    pkts = [p for m in msgs for p in s.send(m, 0.0)]
    assert len(pkts) == 15 and all(decode_packet_untrusted(p).fragment for p in pkts)  # type: ignore[union-attr]
    h = Harness(make_receiver())
    h.feed(spm(INITIAL - 1), 0.0)
    for i, p in enumerate(pkts):
        if i not in (2, 7):
            h.feed(p, 0.0)
    assert h.messages == []
    h.run_until(0.06)
    assert sorted(h.nak_sqns()) == [INITIAL + 2, INITIAL + 7]
    for nak, _dest in h.naks:
        for reply in s.on_packet(encode_packet(nak), 0.07):
            h.feed(reply, 0.08)
    assert h.messages == msgs


def test_fragment_loss_drops_whole_apdu() -> None:
    s = make_sender(max_apdu=9000)
    msgs = [[bytes([i]) * 7000] for i in range(3)]
    pkts = [p for m in msgs for p in s.send(m, 0.0)]
    h = Harness(make_receiver(nak_ncf_retries=0))
    h.feed(spm(INITIAL - 1), 0.0)
    for i, p in enumerate(pkts):
        if i != 7:  # the middle fragment of message 1
            h.feed(p, 0.0)
    h.run_until(5.0)
    assert h.losses == [Loss(TSI, INITIAL + 7, 1)]
    assert h.messages == [msgs[0], msgs[2]]
    assert h.r.stats.framing_errors == 0


def test_sources_are_independent_and_expire() -> None:
    a = make_sender()
    b = PgmSender(
        b"bbbbbb", 999, PORT, GROUP, "10.0.0.2", 1500, 1000, 10, random.Random(3), initial_sqn=5
    )
    h = Harness(make_receiver(peer_expiry=10.0))
    for i in range(5):
        for p in a.send([b"a%d" % i], 0.0) + b.send([b"b%d" % i], 0.0):
            h.feed(p, 0.0)
    assert [m[0] for m in h.messages] == [x for i in range(5) for x in (b"a%d" % i, b"b%d" % i)]
    assert set(h.r.peers) == {TSI, Tsi(b"bbbbbb", 999)}
    h.feed(a.send([b"late"], 1.0)[0], 5.0)
    assert h.r.next_deadline() == pytest.approx(10.0)
    h.run_until(10.0)
    assert h.r.peers == [TSI]
    assert h.r.stats.peers_expired == 1


def test_ignores_garbage_and_other_ports() -> None:
    h = Harness(make_receiver())
    h.feed(b"\x00" * 40, 0.0)
    other = PgmSender(GSI, SPORT, PORT + 1, GROUP, SRC, 1500, 1000, 10, random.Random(3))
    for p in other.send([b"x"], 0.0):
        h.feed(p, 0.0)
    h.feed(ncf([1]), 0.0)  # unknown source
    assert h.r.peers == [] and h.messages == []
    assert h.r.stats.bad_packets == 1 and h.r.stats.ignored_packets == 2
    assert h.r.next_deadline() == math.inf


@pytest.mark.parametrize("nla", ["255.255.255.255", "239.1.2.3", "0.1.2.3", "0.0.0.0"])
def test_naks_never_go_to_an_nla_that_is_not_unicast(nla: str) -> None:
    # an SPM is not authenticated: a broadcast or multicast NLA (which the kernel
    # refuses, or which reaches everyone) falls back to where the data came from
    s = make_sender()
    _, pkts = messages_and_packets(s, 5)
    h = Harness(make_receiver(nak_bo_ivl=0.05))
    h.feed(spm(INITIAL - 1, nla=nla), 0.0, src="10.0.0.9")
    h.feed(pkts[0], 1.0, src="10.0.0.9")
    h.feed(pkts[3], 1.0, src="10.0.0.9")
    h.run_until(h.r.next_deadline())
    assert [dest for _, dest in h.naks] == ["10.0.0.9"]


def test_a_receiver_follows_at_most_max_peers_sources() -> None:
    # anyone on the group can claim to be a source: each costs a window of state
    r = make_receiver()

    def spm_from(i: int, spm_sqn: int) -> bytes:
        return encode_packet(Spm(SPORT, PORT, i.to_bytes(6, "big"), spm_sqn, 1, 0, SRC))

    for i in range(MAX_PEERS + 10):
        r.on_packet(spm_from(i, 0), SRC, 0.0)
    assert len(r.peers) == MAX_PEERS
    assert r.stats.ignored_packets == 10
    # the sources it follows are heard as before
    spms = r.stats.spm_packets
    r.on_packet(spm_from(0, 1), SRC, 0.1)
    assert r.stats.spm_packets == spms + 1 and r.stats.ignored_packets == 10

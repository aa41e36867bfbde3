"""End-to-end: one PgmSender, several PgmReceivers, a lossy simulated network."""

from __future__ import annotations

import random

import pytest
from pgm_sim import Network, Node, batches, make_messages

# Retry limits high enough that 30 % loss on every leg never exhausts them:
# libzmq's defaults (2 NCF / 5 data retries) give up on ~10 % of NAKs there.
PATIENT = {"nak_ncf_retries": 60, "nak_data_retries": 60}


def indices(node: Node) -> list[int]:
    return [int.from_bytes(m[0][:4], "big") for m in node.messages]


def assert_whole_subsequence(node: Node, messages: list[list[bytes]]) -> list[int]:
    """Every delivered message is one that was sent, intact, in order, once."""
    idx = indices(node)
    assert idx == sorted(set(idx)), "out of order or duplicated"
    for i, m in zip(idx, node.messages, strict=True):
        assert m == messages[i], f"message {i} corrupt"
    return idx


@pytest.mark.parametrize("drop", [0.1, 0.3])
def test_every_receiver_gets_every_message(drop: float) -> None:
    messages = make_messages(random.Random(1), 20_000)
    assert max(sum(len(f) for f in m) for m in messages) > 190_000
    net = Network(int(drop * 100), drop=drop, duplicate=0.05, reorder=0.05, receiver_kwargs=PATIENT)
    nodes = [net.add_receiver() for _ in range(3)]
    net.warm_up()
    net.queue(batches(messages, random.Random(2)))
    net.run(lambda: all(len(n.messages) >= len(messages) for n in nodes), max_time=120)
    for node in nodes:
        assert node.messages == messages
        assert node.losses == []
        stats = node.receiver.stats
        assert stats.lost_sqns == 0 and stats.framing_errors == 0
        assert stats.rdata_packets > 0 and stats.duplicates > 0 and stats.naks_sent > 0
    assert net.sender.stats.rdata_packets > 0


def test_heavy_duplication_reordering_fragmentation_and_wrap() -> None:
    messages = make_messages(random.Random(3), 3_000, big_every=300)
    net = Network(
        5,
        drop=0.15,
        duplicate=0.3,
        reorder=0.3,
        delay=0.002,
        sender_kwargs={"max_apdu": 20_000, "initial_sqn": 0xFFFFFFFF - 2_000},
        receiver_kwargs=PATIENT,
    )
    nodes = [net.add_receiver() for _ in range(3)]
    net.warm_up()
    net.queue(batches(messages, random.Random(4), max_batch=10))
    net.run(lambda: all(len(n.messages) >= len(messages) for n in nodes), max_time=120)
    assert net.sender.lead < 0xFFFFFFFF - 2_000  # wrapped
    for node in nodes:
        assert node.messages == messages
        assert node.losses == []


def test_loss_bigger_than_the_window() -> None:
    messages = make_messages(random.Random(5), 3_000, big_every=500)
    fast_naks = {"nak_bo_ivl": 0.01, "nak_rpt_ivl": 0.03, "nak_rdata_ivl": 0.03, **PATIENT}
    net = Network(
        6, drop=0.02, rate_kbps=8_000, recovery_ivl=0.3, receiver_kwargs=fast_naks
    )  # 1 MB/s, 300 KB windows
    nodes = [net.add_receiver() for _ in range(3)]
    net.warm_up()
    net.queue(batches(messages, random.Random(6)))
    net.run(lambda: net.now >= 1.0, max_time=10)
    # One receiver's link goes down for 0.8 s: 800 KB, well past the window.
    victim = nodes[1]
    outage_start = net.sent_messages
    victim.down.partition(until=net.now + 0.8)
    net.run(lambda: net.now >= victim.down.down_until, max_time=10)
    outage_end = net.sent_messages
    net.run(
        lambda: net.all_sent and all(indices(n)[-1:] == [len(messages) - 1] for n in nodes),
        max_time=60,
    )
    for node in (nodes[0], nodes[2]):
        assert node.messages == messages and node.losses == []
    idx = assert_whole_subsequence(victim, messages)
    missing = sorted(set(range(len(messages))) - set(idx))
    assert len(missing) > 100
    # Only messages sent during the outage (or being repaired as it began) are
    # missing: everything after it is delivered, starting at a whole message.
    assert outage_start - 20 <= missing[0] and missing[-1] < outage_end
    stats = victim.receiver.stats
    assert victim.losses and stats.loss_events == len(victim.losses)
    assert stats.lost_sqns == sum(loss.count for loss in victim.losses)
    assert stats.lost_sqns > net.sender.window.max_sqns
    assert stats.framing_errors == 0


def test_unanswered_naks_give_up_cleanly() -> None:
    # libzmq's retry limits; the uplink is dead, so nothing can be repaired.
    messages = make_messages(random.Random(7), 2_000, big_every=400)
    net = Network(8, drop=0.05)
    node = net.add_receiver()
    node.up.drop = 1.0
    net.warm_up()
    net.queue(batches(messages, random.Random(8)))
    net.run(lambda: net.all_sent, max_time=60)
    net.run_for(3.0)  # heartbeat SPMs reveal tail losses; NAKs time out
    idx = assert_whole_subsequence(node, messages)
    assert 0 < len(idx) < len(messages)
    stats = node.receiver.stats
    assert node.losses and stats.loss_events == len(node.losses)
    assert stats.lost_sqns == sum(loss.count for loss in node.losses)
    assert stats.naks_sent > 0 and net.sender.stats.naks_received == 0
    assert stats.framing_errors == 0
    # Every packet sent was either received or reported lost.
    assert stats.odata_packets + stats.lost_sqns == net.sender.stats.odata_packets


def test_late_joiner_starts_at_a_whole_message() -> None:
    rng = random.Random(9)
    messages = [[i.to_bytes(4, "big") + rng.randbytes(100)] for i in range(50)]
    messages.append([(50).to_bytes(4, "big") + rng.randbytes(200_000)])
    messages += [[i.to_bytes(4, "big") + rng.randbytes(100)] for i in range(51, 100)]
    net = Network(10, drop=0.1, rate_kbps=8_000, receiver_kwargs=PATIENT)
    early = net.add_receiver()
    net.warm_up()
    net.queue(iter([[m] for m in messages]))
    # Join while the 200 KB message (about 140 packets) is half sent.
    net.run(lambda: net.sender.stats.odata_packets >= 50 + 70, max_time=30)
    late = net.add_receiver()
    net.run(lambda: all(indices(n)[-1:] == [99] for n in (early, late)), max_time=60)
    assert early.messages == messages
    idx = assert_whole_subsequence(late, messages)
    assert idx == list(range(idx[0], 100))
    assert 51 <= idx[0] <= 55
    assert late.losses == []

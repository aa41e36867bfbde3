"""PUB, SUB, XPUB, XSUB: filtering, slow subscribers, re-subscription, both wire forms, proxy."""

from __future__ import annotations

import socket as stdlib_socket

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import triomq
from triomq._mechanisms._null import NullMechanism
from triomq._options import SocketOptions
from triomq._patterns._prefix import PrefixIndex
from triomq._patterns._pubsub import Pub
from triomq._zmtp._connection import ZMTPConnection
from triomq._zmtp._events import NEED_DATA, Message, Subscription
from triomq._zmtp._frames import encode_message

from .helpers import raw_handshake, wait_for_event, wait_subscribed


def test_prefix_index_counts_and_matches() -> None:
    index = PrefixIndex()
    assert index.add(b"ab", "p1") == (True, True)
    assert index.add(b"ab", "p1") == (False, False)  # counted
    assert index.add(b"ab", "p2") == (True, False)
    assert index.add(b"", "p3") == (True, True)
    assert index.match_keys(b"abc") == {"p1", "p2", "p3"}
    assert index.match_keys(b"a") == {"p3"}
    assert index.remove(b"ab", "p1") == (False, False)
    assert index.remove(b"ab", "p1") == (True, False)
    assert index.match_keys(b"abc") == {"p2", "p3"}
    assert index.remove_key("p2") == [b"ab"]
    assert index.remove(b"zz", "p1") == (False, False)
    assert index.matches(b"anything") and not PrefixIndex().matches(b"x")


def test_publisher_index_holds_a_key_once_per_prefix() -> None:
    """A publisher's index (uncounted) holds a pipe once per prefix, as libzmq's
    mtrie: a repeated subscribe changes nothing and one remove ends it."""
    index = PrefixIndex(counted=False)
    assert index.add(b"ab", "p1") == (True, True)
    assert index.add(b"ab", "p1") == (False, False)
    assert index.add(b"ab", "p2") == (True, False)
    assert index.remove(b"ab", "p1") == (True, False)
    assert index.match_keys(b"abc") == ("p2",)
    assert index.remove(b"ab", "p1") == (False, False)  # not held
    assert index.remove(b"ab", "p2") == (True, True)
    assert not index


class _CountedPipe:
    """A pipe with room for *room* messages, recording what a pattern queues."""

    routing_id = b""
    connected = True
    terminating = False

    def __init__(self, room: int, hands_over: bool = False) -> None:
        self.left = room
        self.hands_over = hands_over
        self.queued: list[list[bytes]] = []

    def writable(self) -> bool:
        return self.left > 0

    def room(self) -> int:
        return self.left

    def write(self, msg: list[bytes]) -> None:
        self.write_many([msg])

    def write_many(self, msgs: list[list[bytes]]) -> None:
        assert len(msgs) <= self.left
        self.left -= len(msgs)
        self.queued += msgs


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from([b"", b"a", b"ab", b"b"]), max_size=2), st.integers(0, 30), st.booleans()),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.sampled_from([b"a", b"ab", b"abc", b"b", b"c"]), max_size=60),
)
def test_send_batch_queues_and_drops_as_sending_one_by_one(subscribers, topics) -> None:  # type: ignore[no-untyped-def]
    """A PUB's batch gives every subscriber the messages it matches, in order,
    until its pipe is full, and counts the rest as dropped for that pipe: the
    same as sending them one at a time (runs of messages for the same
    subscribers are queued as one slice). An inproc peer, which takes the
    message objects themselves, never shares one with another subscriber.
    (Not with a disk swap: the pipes of a socket share its budget, which a
    batch fills one subscriber after another, one by one sends in turn.)"""
    msgs = [[topic, b"%d" % i] for i, topic in enumerate(topics)]

    def publish(batch: bool) -> tuple[list[list[list[bytes]]], dict[int, int], int]:
        pub = Pub(SocketOptions())
        pipes = [_CountedPipe(room, hands_over) for _, room, hands_over in subscribers]
        for pipe, (prefixes, _, _) in zip(pipes, subscribers, strict=True):
            pub.attach(pipe)  # type: ignore[arg-type]
            for prefix in prefixes:
                pub.subscription(pipe, prefix, True)  # type: ignore[arg-type]
        if batch:
            assert pub.send_batch(msgs) == len(msgs)
        else:
            for msg in msgs:
                assert pub.send(msg)
        for i, pipe in enumerate(pipes):
            if pipe.hands_over:
                mine = {id(m) for m in pipe.queued}
                assert not any(mine & {id(m) for m in other.queued} for other in pipes[:i] + pipes[i + 1 :])
        drops = {pipes.index(p): n for p, n in pub.dropped_by_pipe.items()}  # type: ignore[arg-type]
        return [pipe.queued for pipe in pipes], drops, pub.dropped

    expected = publish(batch=False)
    assert publish(batch=True) == expected
    for (prefixes, room, _), queued in zip(subscribers, expected[0], strict=True):
        matching = [m for m in msgs if any(m[0].startswith(p) for p in prefixes)]
        assert queued == matching[:room]


async def test_filtering_overlap_unsubscribe_and_empty(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUB) as pub, triomq.open_socket(triomq.SUB) as sub:
            await sub.connect(await pub.bind(endpoint))
            await sub.subscribe(b"a")
            await sub.subscribe(b"ab")
            await sub.subscribe(b"end")
            await wait_subscribed(pub, sub, b"end")
            for topic in [b"a1", b"ab1", b"b1", b"abc"]:
                await pub.send_multipart([topic, b"data"])
            await pub.send_multipart([b"end", b""])
            got = []
            while (msg := await sub.recv_multipart())[0] != b"end":
                got.append(msg[0])
            assert got == [b"a1", b"ab1", b"abc"]  # each once, though two prefixes match
            # unsubscribing one of two overlapping prefixes keeps the other
            await sub.unsubscribe(b"a")
            await wait_subscribed(pub, sub, b"ab")
            for topic in [b"a1", b"ab2", b"end"]:
                await pub.send_multipart([topic, b""])
            got = []
            while (msg := await sub.recv_multipart())[0] != b"end":
                got.append(msg[0])
            assert got == [b"ab2"]
            # the empty subscription takes everything
            await sub.subscribe(b"")
            await wait_subscribed(pub, sub, b"zzz")
            await pub.send_multipart([b"zzz", b"x"])
            assert await sub.recv_multipart() == [b"zzz", b"x"]


async def test_subscriptions_are_reference_counted() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB) as xpub, triomq.open_socket(triomq.SUB) as sub:
            await sub.connect(await xpub.bind("tcp://127.0.0.1:0"))
            await sub.subscribe(b"t")
            await sub.subscribe(b"t")
            assert await xpub.recv() == b"\x01t"
            await sub.unsubscribe(b"t")  # one left: nothing goes upstream
            await sub.subscribe(b"u")
            assert await xpub.recv() == b"\x01u"
            await sub.unsubscribe(b"t")
            assert await xpub.recv() == b"\x00t"


@pytest.mark.parametrize("mode", ["default", "manual"])
async def test_one_cancel_ends_a_repeated_subscription(mode: str) -> None:
    """An XSUB forwards every subscribe but only the last unsubscribe (as
    libzmq's): the publisher holds the topic once for that peer, so the single
    CANCEL ends it (libzmq's mtrie), also when an xpub_manual application
    mirrors every report."""
    manual = mode == "manual"
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.XPUB, xpub_manual=manual) as xpub,
            triomq.open_socket(triomq.XSUB) as xsub,
        ):
            await xsub.connect(await xpub.bind("tcp://127.0.0.1:0"))
            await xsub.wait_peers(1)
            for msg in [b"\x01A", b"\x01A", b"\x00A", b"\x00A"]:
                await xsub.send(msg)
            expected = [b"\x01A", b"\x01A", b"\x00A"] if manual else [b"\x01A", b"\x00A"]
            reports = []
            for _ in expected:
                reports.append(report := await xpub.recv())
                if manual:  # the application grants each request as it reads it
                    await (xpub.subscribe if report[:1] == b"\x01" else xpub.unsubscribe)(report[1:])
            assert reports == expected
            await xsub.send(b"\x01B")
            assert await xpub.recv() == b"\x01B"
            if manual:
                await xpub.subscribe(b"B")
            await xpub.send(b"A-late")  # nobody holds A any more
            await xpub.send(b"B-msg")
            # (in order on the one connection: A-late would have come first)
            assert await xsub.recv() == b"B-msg"


async def test_slow_joiner_misses_earlier_messages() -> None:
    async with triomq.open_socket(triomq.PUB) as pub:
        ep = await pub.bind("inproc://slow-joiner")
        await pub.send(b"too early")  # no subscriber: dropped, not queued
        async with triomq.open_socket(triomq.SUB, subscribe=[b""]) as sub:
            await sub.connect(ep)
            await wait_subscribed(pub, sub)
            await pub.send(b"in time")
            assert await sub.recv() == b"in time"


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
async def test_slow_subscriber_never_blocks_the_publisher(transport: str) -> None:
    n_subs, n_msgs = 20, 3000
    payload = b"x" * 4096  # 12 MB in all: more than the kernel buffers a stalled peer
    with trio.fail_after(60):
        async with triomq.open_socket(triomq.PUB, sndhwm=100) as pub:
            ep = await pub.bind("tcp://127.0.0.1:0" if transport == "tcp" else "inproc://slow-sub")
            async with trio.open_nursery() as nursery:
                subs = [await nursery.start(_open_sub, ep, i == 0) for i in range(n_subs)]
                for sub in subs:
                    await wait_subscribed(pub, sub)
                counts = [0] * n_subs

                async def reader(i: int, sub: triomq.Socket) -> None:
                    while (msg := await sub.recv()) != b"end":
                        counts[i] += msg == payload  # (other subscribers' probes arrive too)

                async with trio.open_nursery() as readers:
                    for i, sub in enumerate(subs[1:], 1):  # subs[0] never reads
                        readers.start_soon(reader, i, sub)
                    for _ in range(n_msgs):
                        pub.send_nowait(payload)  # a PUB never waits: this never raises
                        await trio.lowlevel.checkpoint()  # publish at a pace the fast readers keep up with
                    # a PUB drops "end" at a full pipe too, and nothing tells when a
                    # reader's queue has room again: resend until every reader ended
                    # (polls, under the fail_after)
                    while readers.child_tasks:
                        pub.send_nowait(b"end")
                        await trio.sleep(0.01)
                assert counts[1:] == [n_msgs] * (n_subs - 1)
                stats = pub.statistics()
                assert stats.dropped > 0  # the slow one's messages were dropped, and counted
                dropped_by_pipe = pub.pattern.dropped_by_pipe  # type: ignore[attr-defined]
                assert len(dropped_by_pipe) == 1 and sum(dropped_by_pipe.values()) == stats.dropped
                nursery.cancel_scope.cancel()


async def _open_sub(ep: str, slow: bool, task_status: trio.TaskStatus[triomq.Socket]) -> None:
    async with triomq.open_socket(triomq.SUB, rcvhwm=10 if slow else 1000, subscribe=[b""]) as sub:
        await sub.connect(ep)
        task_status.started(sub)
        await trio.sleep_forever()


def free_port() -> int:
    with stdlib_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sub_resubscribes_after_publisher_restart() -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    with trio.fail_after(15):
        async with triomq.open_socket(triomq.SUB, reconnect_ivl=0.01) as sub:
            await sub.subscribe(b"weather")
            await sub.connect(ep)
            for generation in range(2):
                async with triomq.open_socket(triomq.XPUB) as pub:
                    await pub.bind(ep)
                    # the subscription arrives by itself after every (re)connect
                    assert await pub.recv() == b"\x01weather"
                    await pub.send(b"weather %d" % generation)
                    assert await sub.recv() == b"weather %d" % generation


async def test_xpub_verbose_manual_and_welcome() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB, xpub_verbose=True) as xpub:
            ep = await xpub.bind("inproc://verbose")
            async with triomq.open_socket(triomq.SUB) as s1, triomq.open_socket(triomq.SUB) as s2:
                await s1.connect(ep)
                await s2.connect(ep)
                await s1.subscribe(b"x")
                await s2.subscribe(b"x")
                assert [await xpub.recv(), await xpub.recv()] == [b"\x01x", b"\x01x"]
        async with triomq.open_socket(triomq.XPUB, xpub_manual=True) as xpub:
            ep = await xpub.bind("inproc://manual")
            async with triomq.open_socket(triomq.SUB) as sub:
                await sub.connect(ep)
                await sub.subscribe(b"asked")
                assert await xpub.recv() == b"\x01asked"
                await xpub.subscribe(b"granted")  # the application decides
                await xpub.send(b"asked-1")
                await xpub.send(b"granted-1")
                await sub.subscribe(b"granted")
                assert await xpub.recv() == b"\x01granted"
                await xpub.send(b"granted-2")
                # only what the XPUB granted reaches the peer, filtered again by the SUB
                assert await sub.recv() == b"granted-1"
                assert await sub.recv() == b"granted-2"
        async with triomq.open_socket(triomq.XPUB, xpub_welcome_msg=b"welcome") as xpub:
            ep = await xpub.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.SUB, subscribe=[b"welcome"]) as sub:
                await sub.connect(ep)
                assert await sub.recv() == b"welcome"


async def test_xsub_sends_subscriptions_as_messages() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB) as xpub, triomq.open_socket(triomq.XSUB) as xsub:
            await xsub.connect(await xpub.bind("tcp://127.0.0.1:0"))
            await xsub.send(b"\x01news")
            assert await xpub.recv() == b"\x01news"
            await xpub.send(b"news!")
            await xpub.send(b"other")  # filtered at the publisher
            await xpub.send(b"news again")
            assert await xsub.recv() == b"news!"
            assert await xsub.recv() == b"news again"
            await xsub.send(b"\x00news")
            assert await xpub.recv() == b"\x00news"


@pytest.mark.parametrize("transport", ["tcp", "ipc", "inproc"])
async def test_xpub_hands_out_reports_and_messages_in_arrival_order(transport: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An XPUB's application gets a peer's subscription reports and the
    messages it sent upstream in the order they came, as libzmq's XPUB (one
    queue): a report is not served before the messages that arrived first."""
    endpoint = {
        "tcp": "tcp://127.0.0.1:0",
        "ipc": f"ipc://{tmp_path}/order.ipc",
        "inproc": "inproc://xpub-order",
    }[transport]
    sent = [[b"hello"], [b"\x01A"], [b"multi", b"part"], [b"\x00A"], [b"\x01B"], [b"tail"], [b""], [b"last"]]
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB) as xpub, triomq.open_socket(triomq.XSUB) as xsub:
            await xsub.connect(await xpub.bind(endpoint))
            await xsub.wait_peers(1)
            for msg in sent:
                await xsub.send_multipart(msg)
            got = [await xpub.recv_multipart() for _ in sent]
            assert got == sent
            # a report and a message both name the XSUB that sent them
            await xsub.send(b"\x01C")
            await xsub.send(b"data")
            report, peer = await xpub.recv_multipart_with_peer()
            assert report == [b"\x01C"] and peer is not None and peer.socket_type == "XSUB"
            data, peer = await xpub.recv_multipart_with_peer()
            assert data == [b"data"] and peer is not None and peer.socket_type == "XSUB"


@pytest.mark.parametrize("mode", ["default", "verboser", "manual"])
async def test_xpub_reports_of_a_peer_that_left(mode: str) -> None:
    """When a subscriber leaves, libzmq's XPUB reports a cancel for the topics
    nobody else holds (default), every topic it held (xpub_verboser), or every
    topic it asked for (xpub_manual, so a manual proxy can cancel upstream).
    Reports not read yet when it leaves are kept, as libzmq keeps them."""
    manual = mode == "manual"
    options = {"default": {}, "verboser": {"xpub_verboser": True}, "manual": {"xpub_manual": True}}[mode]
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB, **options) as xpub, xpub.monitor() as events:
            ep = await xpub.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.SUB, subscribe=[b"A"]) as s2:
                await s2.connect(ep)
                assert await xpub.recv() == b"\x01A"
                if manual:
                    await xpub.subscribe(b"A")
                async with triomq.open_socket(triomq.SUB) as s1:
                    await s1.connect(ep)
                    await s1.subscribe(b"A")
                    await s1.subscribe(b"B")
                    if manual:  # (asked, not granted)
                        assert [await xpub.recv(), await xpub.recv()] == [b"\x01A", b"\x01B"]
                    else:  # in place at the XPUB (its reports unread)
                        await wait_subscribed(xpub, s1, b"B")
                await wait_for_event(events, triomq.Disconnected)  # s1 left
                expected = {
                    "default": [b"\x01B", b"\x00B"],
                    "verboser": [b"\x01A", b"\x01B", b"\x00A", b"\x00B"],
                    "manual": [b"\x00A", b"\x00B"],
                }[mode]
                got = [await xpub.recv_multipart_with_peer() for _ in expected]
                assert [msg for msg, _ in got] == [[report] for report in expected]
                # every one names s1, which has left (as the messages it sent would)
                (peer,) = {id(peer): peer for _, peer in got}.values()
                assert peer is not None and peer.socket_type == "SUB"
                assert all(p is not peer for p in xpub.peers())
                if manual:
                    # mirroring a departed peer's report does nothing (libzmq ignores it too)
                    await xpub.unsubscribe(b"A")
                await xpub.send(b"A-still")  # s2 holds A still
                assert await s2.recv() == b"A-still"


async def test_xpub_reports_a_cancel_of_what_was_never_subscribed() -> None:
    """libzmq's XPUB reports a peer's CANCEL of a topic it does not hold (its
    mtrie's rm says "not found", which is not "others remain")."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB) as xpub:
            ep = await xpub.bind("tcp://127.0.0.1:0")
            stream, _conn, _ = await _raw_peer(int(ep.rsplit(":", 1)[1]), triomq.SUB, 0)
            for msg in [b"\x01A", b"\x00never", b"\x00A", b"\x00A"]:
                await stream.send_all(encode_message([msg]))
            assert [await xpub.recv() for _ in range(4)] == [b"\x01A", b"\x00never", b"\x00A", b"\x00A"]
            await stream.aclose()


async def test_subscribers_linger_0_by_default() -> None:
    """SUB and XSUB default to linger 0, as libzmq's xsub.cpp sets it: an XSUB
    whose upstream messages an XPUB does not read closes at once. Other types
    keep None, and an explicit linger is kept."""
    for kind, options, linger in [
        (triomq.SUB, {}, 0),
        (triomq.XSUB, {}, 0),
        (triomq.XSUB, {"linger": 5.0}, 5.0),
        (triomq.PUB, {}, None),
        (triomq.XPUB, {}, None),
    ]:
        async with triomq.open_socket(kind, **options) as sock:
            assert sock.options.linger == linger
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB, rcvhwm=1) as xpub:
            ep = await xpub.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.XSUB, sndhwm=1) as xsub:
                await xsub.connect(ep)
                await xsub.wait_peers(1)
                # until the XPUB's queue and the kernel's buffers are full
                while not xsub.statistics().queued_out:
                    xsub.send_nowait(b"u" * 1_000_000)
                    await trio.testing.wait_all_tasks_blocked()  # (its writer waits for room)
            # (closing did not wait for it: we got here)


async def test_inproc_pub_discards_what_an_xsub_sends_upstream() -> None:
    """A PUB reads and discards an XSUB's messages upstream, as libzmq's PUB:
    over inproc they no longer pile up in the queue the two share until the
    XSUB drops what it sends (also those queued before the PUB bound)."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUB) as pub, triomq.open_socket(triomq.XSUB) as xsub:
            await xsub.connect("inproc://pub-discards")
            for i in range(10):
                xsub.send_nowait(b"early %d" % i)  # queued: no PUB yet
            await pub.bind("inproc://pub-discards")
            await xsub.send(b"\x01")
            await wait_subscribed(pub, xsub)
            for i in range(3000):  # more than sndhwm + rcvhwm
                xsub.send_nowait(b"upstream %d" % i)
            assert pub.statistics().queued_in == 0
            assert xsub.statistics().dropped == 0
            await pub.send(b"down")  # the subscription is in place all the same
            assert await xsub.recv() == b"down"


async def test_connecting_xpub_welcomes_once() -> None:
    """A connecting XPUB sends xpub_welcome_msg once, as libzmq writes it once
    into the pipe it keeps across reconnects, not again on every reconnect."""
    ep = f"tcp://127.0.0.1:{free_port()}"
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB, xpub_welcome_msg=b"hi", reconnect_ivl=0.01) as xpub:
            await xpub.connect(ep)
            async with triomq.open_socket(triomq.SUB, subscribe=[b""]) as sub:
                await sub.bind(ep)
                assert await sub.recv() == b"hi"
                assert await xpub.recv() == b"\x01"
            async with triomq.open_socket(triomq.SUB, subscribe=[b""]) as sub:
                await sub.bind(ep)
                # the XPUB reconnected (the first peer's leaving is reported first)
                while await xpub.recv() != b"\x01":
                    pass
                await xpub.send(b"after")
                assert await sub.recv() == b"after"


async def test_connecting_xpub_forgets_subscriptions_across_a_reconnect() -> None:
    """Documented difference from libzmq (docs/pyzmq.rst): a connecting XPUB
    reports its peer's topics cancelled when the connection breaks, and
    reports them again when the peer, back, subscribes again."""
    ep = f"tcp://127.0.0.1:{free_port()}"
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB, reconnect_ivl=0.01) as xpub:
            await xpub.connect(ep)
            for _ in range(2):
                async with triomq.open_socket(triomq.SUB, subscribe=[b"A"]) as sub:
                    await sub.bind(ep)
                    assert await xpub.recv() == b"\x01A"
                assert await xpub.recv() == b"\x00A"


async def _raw_peer(port: int, socket_type: triomq.SocketType, minor: int):  # type: ignore[no-untyped-def]
    """A ZMTP 3.<minor> peer built from the codec, over a plain trio stream."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn, events = await raw_handshake(stream, socket_type, minor=minor)
    return stream, conn, events


async def test_publisher_talks_to_a_zmtp30_subscriber() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.XPUB) as xpub:
            ep = await xpub.bind("tcp://127.0.0.1:0")
            stream, conn, _ = await _raw_peer(int(ep.rsplit(":", 1)[1]), triomq.SUB, 0)
            # a 3.0 subscriber subscribes with a message: \x01topic
            await stream.send_all(encode_message([b"\x01old"]))
            assert await xpub.recv() == b"\x01old"
            await xpub.send(b"old style")
            seen = []
            while not seen:
                conn.receive_data(await stream.receive_some())
                while (event := conn.next_event()) is not NEED_DATA:
                    seen.append(event)
            assert seen == [Message([b"old style"])]
            await stream.aclose()


async def test_subscriber_uses_message_form_towards_zmtp30_publisher() -> None:
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with triomq.open_socket(triomq.SUB, subscribe=[b"t"]) as sub:
            await sub.connect(f"tcp://127.0.0.1:{port}")
            stream = await listeners[0].accept()
            conn = ZMTPConnection(triomq.PUB, NullMechanism())
            greeting = bytearray(conn.data_to_send())
            greeting[11] = 0  # we are a ZMTP 3.0 publisher
            await stream.send_all(bytes(greeting))
            raw = b""
            while b"\x01t" not in raw:
                data = await stream.receive_some()
                raw += data
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, Subscription):
                        assert event == Subscription(b"t", True)
                if out := conn.data_to_send():
                    await stream.send_all(out)
            assert b"SUBSCRIBE" not in raw  # 3.0: the message form, not the command
            await stream.send_all(conn.encode_message([b"t-data"]) + conn.encode_message([b"x-data"]))
            await stream.send_all(conn.encode_message([b"t-more"]))
            assert await sub.recv() == b"t-data"
            assert await sub.recv() == b"t-more"
            await stream.aclose()
        await listeners[0].aclose()


@pytest.mark.parametrize("kind", ["forwarder", "queue", "streamer"])
async def test_proxy_devices(kind: str) -> None:
    with trio.fail_after(15):
        if kind == "forwarder":
            front_t, back_t = triomq.XSUB, triomq.XPUB
        elif kind == "queue":
            front_t, back_t = triomq.ROUTER, triomq.DEALER
        else:
            front_t, back_t = triomq.PULL, triomq.PUSH
        async with triomq.open_socket(front_t) as front, triomq.open_socket(back_t) as back, \
                triomq.open_socket(triomq.PUSH) as capture, triomq.open_socket(triomq.PULL) as tap:
            f_ep = await front.bind("tcp://127.0.0.1:0")
            b_ep = await back.bind("tcp://127.0.0.1:0")
            await tap.connect(await capture.bind("inproc://capture-" + kind))
            control = triomq.ProxyControl()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: triomq.proxy(front, back, capture, control=control))
                if kind == "forwarder":
                    async with triomq.open_socket(triomq.PUB) as pub, triomq.open_socket(triomq.SUB) as sub:
                        await pub.connect(f_ep)
                        await sub.connect(b_ep)
                        await sub.subscribe(b"w")
                        await wait_subscribed(pub, sub, b"w")
                        control.pause()
                        await pub.send(b"w-paused")
                        with trio.move_on_after(0.1):
                            await sub.recv()
                            pytest.fail("a paused proxy forwarded a message")
                        control.resume()
                        assert await sub.recv() == b"w-paused"
                elif kind == "queue":
                    async with triomq.open_socket(triomq.REQ) as req, triomq.open_socket(triomq.REP) as rep:
                        await req.connect(f_ep)
                        await rep.connect(b_ep)
                        await req.send(b"through the broker")
                        assert await rep.recv() == b"through the broker"
                        await rep.send(b"and back")
                        assert await req.recv() == b"and back"
                else:
                    async with triomq.open_socket(triomq.PUSH) as push, triomq.open_socket(triomq.PULL) as pull:
                        await push.connect(f_ep)
                        await pull.connect(b_ep)
                        for i in range(100):
                            await push.send(b"%d" % i)
                        assert [await pull.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]
                assert control.forwarded > 0
                assert await tap.recv_multipart()  # the capture socket saw a copy
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("stuck", ["paused", "no_peer", "full"])
async def test_cancelled_proxy_puts_back_the_message_it_holds(stuck: str) -> None:
    """Cancelling proxy() consumes nothing: the message it took from the
    frontend, and could not queue on the backend (paused, no peer, at the
    HWM), is the frontend's next message again, as libzmq's proxy loses
    nothing at TERMINATE."""
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL) as front,
            triomq.open_socket(triomq.PUSH, sndhwm=1) as back,
            triomq.open_socket(triomq.PUSH) as src,
            triomq.open_socket(triomq.PULL, rcvhwm=1) as sink,
        ):
            await front.bind(f"inproc://proxy-front-{stuck}")
            await back.bind(f"inproc://proxy-back-{stuck}")
            await src.connect(f"inproc://proxy-front-{stuck}")
            if stuck != "no_peer":
                await sink.connect(f"inproc://proxy-back-{stuck}")
            control = triomq.ProxyControl()
            first = 2 if stuck == "full" else 0  # (sndhwm 1 + rcvhwm 1 fit downstream)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: triomq.proxy(front, back, control=control))
                await trio.testing.wait_all_tasks_blocked()  # waiting for a message
                if stuck == "paused":
                    control.pause()  # it takes the next one, then waits to go on
                for i in range(first + 3):
                    await src.send(b"m%d" % i)
                await trio.testing.wait_all_tasks_blocked()  # parked, holding a message
                nursery.cancel_scope.cancel()
            assert control.forwarded == first
            assert [await front.recv() for _ in range(3)] == [b"m%d" % i for i in range(first, first + 3)]
            assert [await sink.recv() for _ in range(first)] == [b"m%d" % i for i in range(first)]


async def test_inproc_subscribers_each_get_messages_of_their_own() -> None:
    """Over inproc a subscriber receives the message objects themselves: with
    several subscribers each gets its own, so one that changes what it
    received (say, pops the topic) changes nothing for the others. The same
    for an XSUB's messages to several publishers."""
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PUB) as pub,
            triomq.open_socket(triomq.SUB, subscribe=[b""]) as a,
            triomq.open_socket(triomq.SUB, subscribe=[b""]) as b,
        ):
            await pub.bind("inproc://own-copies")
            for sub in (a, b):
                await sub.connect("inproc://own-copies")  # (subscribed as it joins)
            await pub.send_multipart([b"topic", b"one"])
            await pub.send_many([[b"topic", b"two"], [b"topic", b"three"]])
            for body in (b"one", b"two", b"three"):
                got = await a.recv_multipart()
                assert got.pop(0) == b"topic"
                assert await b.recv_multipart() == [b"topic", body]
        async with (
            triomq.open_socket(triomq.XSUB) as xsub,
            triomq.open_socket(triomq.XPUB) as x1,
            triomq.open_socket(triomq.XPUB) as x2,
        ):
            for i, xpub in enumerate((x1, x2)):
                await xpub.bind(f"inproc://own-copies-{i}")
                await xsub.connect(f"inproc://own-copies-{i}")
            await xsub.wait_peers(2)
            await xsub.send_multipart([b"up", b"stream"])
            got = await x1.recv_multipart()
            got.clear()
            assert await x2.recv_multipart() == [b"up", b"stream"]


async def _queued_in(sock: triomq.Socket, n: int) -> None:
    """Wait until *n* messages wait in *sock*'s incoming queues (polls: no event for that)."""
    while sock.statistics().queued_in < n:
        await trio.sleep(0.01)


@pytest.mark.parametrize("kind", ["SUB", "XSUB"])
async def test_recv_many_filters_what_arrived_before_an_unsubscribe(kind: str) -> None:
    """A SUB filters on its side too: messages already received for a topic it
    then leaves are not handed out, by recv or by recv_many. An XSUB does not
    filter: it hands out whatever arrived."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUB) as pub, triomq.open_socket(getattr(triomq, kind)) as sub:
            ep = await pub.bind("tcp://127.0.0.1:0")
            await sub.connect(ep)
            for topic in (b"a", b"b"):
                if kind == "SUB":
                    await sub.subscribe(topic)
                else:
                    await sub.send(b"\x01" + topic)
            await wait_subscribed(pub, sub, b"a")
            await wait_subscribed(pub, sub, b"b")
            msgs = [[b"%s%d" % (b"ab"[i % 2 : i % 2 + 1], i), b"body"] for i in range(200)]
            await pub.send_many(msgs)
            await _queued_in(sub, 200)
            if kind == "SUB":
                await sub.unsubscribe(b"b")
            else:
                await sub.send(b"\x00b")
            got: list[list[bytes]] = []
            with trio.move_on_after(0.2):  # then nothing more comes
                while True:
                    got += await sub.recv_many(37)
            expected = [m for m in msgs if m[0][:1] == b"a"] if kind == "SUB" else msgs
            assert got == expected

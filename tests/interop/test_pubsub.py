"""PUB/SUB, XPUB and XSUB between triomq and libzmq: subscriptions on the wire, filtering."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import zmq

import triomq

TEST_TIMEOUT = 20

#: first frame of the messages a publisher repeats until a subscriber gets one
SYNC = b"a-sync"
#: messages published once the subscription is known to be there
TRAFFIC = [b"a", b"b", b"ab", b"ba", b"", b"a-1", b"xa", b"A", b"a-2", b"b-a"]
END = b"a-end"
MATCHING = [t for t in TRAFFIC if t.startswith(b"a")] + [END]


async def _sync_libzmq_sub(peers: Any, pub: triomq.Socket, sub: Any) -> None:
    """Publish SYNC from triomq until the libzmq subscriber gets one."""
    while True:
        await pub.send_multipart([SYNC, b"x"])
        await pub.send_multipart([b"b-sync", b"x"])  # does not match: never arrives
        if await peers.z(peers.zpoll_recv, sub, 20) is not None:
            return


async def _sync_triomq_sub(peers: Any, pub: Any, sub: triomq.Socket) -> None:
    """Publish SYNC from libzmq until the triomq subscriber gets one."""
    while True:
        await peers.z(pub.send_multipart, [SYNC, b"x"])
        await peers.z(pub.send_multipart, [b"b-sync", b"x"])
        with trio.move_on_after(0.02):
            await sub.recv_multipart()
            return


async def _recv_poking(peers: Any, tsock: triomq.Socket, zsock: Any) -> list[bytes]:
    """Receive on *tsock* while making *zsock* process its pending commands.

    A bound libzmq socket attaches a newly accepted connection only when its
    application thread next uses the socket; until then a SUBSCRIBE set with
    setsockopt has no pipe to go to. ``getsockopt(EVENTS)`` processes commands.
    """
    while True:
        with trio.move_on_after(0.05):
            return await tsock.recv_multipart()
        await peers.z(zsock.getsockopt, zmq.EVENTS)


async def test_triomq_pub_libzmq_sub_filters(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.PUB, zmq.SUB, triomq_binds=triomq_binds, zmq_options={"SUBSCRIBE": b"a"}
        ) as (pub, sub):
            await _sync_libzmq_sub(peers, pub, sub)
            for topic in TRAFFIC:
                await pub.send_multipart([topic, b"body"])
            await pub.send_multipart([END, b"body"])

            def receive_until_end() -> list[bytes]:
                got = []
                while True:
                    msg = sub.recv_multipart()
                    assert msg[0].startswith(b"a"), msg
                    if msg[0] == SYNC:
                        continue  # late copies of the synchronisation message
                    assert msg[1:] == [b"body"]
                    got.append(msg[0])
                    if msg[0] == END:
                        return got

            assert await peers.z(receive_until_end) == MATCHING


async def test_libzmq_pub_triomq_sub_filters(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.SUB, zmq.PUB, triomq_binds=triomq_binds) as (sub, pub):
            await sub.subscribe(b"a")
            await _sync_triomq_sub(peers, pub, sub)
            for topic in TRAFFIC:
                await peers.z(pub.send_multipart, [topic, b"body"])
            await peers.z(pub.send_multipart, [END, b"body"])
            got = []
            while True:
                msg = await sub.recv_multipart()
                assert msg[0].startswith(b"a"), msg
                if msg[0] == SYNC:
                    continue
                assert msg[1:] == [b"body"]
                got.append(msg[0])
                if msg[0] == END:
                    break
            assert got == MATCHING


async def test_libzmq_pub_triomq_sub_subscribe_option(peers: Any, triomq_binds: bool) -> None:
    """The ``subscribe`` option's topics are sent to a libzmq PUB on connect."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB, zmq.PUB, triomq_binds=triomq_binds, tri_options={"subscribe": [b"a"]}
        ) as (sub, pub):
            await _sync_triomq_sub(peers, pub, sub)


async def test_libzmq_xpub_sees_triomq_sub_subscriptions(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.SUB, zmq.XPUB, triomq_binds=triomq_binds) as (sub, xpub):
            await sub.subscribe(b"topic")
            assert await peers.z(xpub.recv_multipart) == [b"\x01topic"]
            # the subscription is in place: a matching message goes through, others do not
            await peers.z(xpub.send_multipart, [b"other", b"no"])
            await peers.z(xpub.send_multipart, [b"topic-1", b"yes"])
            assert await sub.recv_multipart() == [b"topic-1", b"yes"]
            await sub.subscribe(b"")
            assert await peers.z(xpub.recv_multipart) == [b"\x01"]
            await sub.unsubscribe(b"")
            assert await peers.z(xpub.recv_multipart) == [b"\x00"]
            await sub.unsubscribe(b"topic")
            assert await peers.z(xpub.recv_multipart) == [b"\x00topic"]


async def test_libzmq_verbose_xpub_sees_each_subscribe_of_a_triomq_sub(peers: Any, triomq_binds: bool) -> None:
    """As libzmq's SUB, a triomq SUB sends a SUBSCRIBE per subscribe() (an
    XPUB_VERBOSE counts them) and a CANCEL only at the last unsubscribe()."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB, zmq.XPUB, triomq_binds=triomq_binds, zmq_options={"XPUB_VERBOSE": 1}
        ) as (sub, xpub):
            await sub.subscribe(b"A")
            await sub.subscribe(b"A")
            assert [await peers.z(xpub.recv_multipart) for _ in range(2)] == [[b"\x01A"], [b"\x01A"]]
            await sub.unsubscribe(b"A")
            await sub.subscribe(b"B")  # (a marker: the unsubscribe sent nothing before it)
            assert await peers.z(xpub.recv_multipart) == [b"\x01B"]
            await sub.unsubscribe(b"A")
            assert await peers.z(xpub.recv_multipart) == [b"\x00A"]


async def test_libzmq_xpub_gets_existing_subscriptions_on_connect(peers: Any, triomq_binds: bool) -> None:
    """Subscriptions made before the connection are sent once it is up."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB, zmq.XPUB, triomq_binds=triomq_binds, tri_options={"subscribe": [b"t1", b"t2"]}
        ) as (_sub, xpub):
            got = {(await peers.z(xpub.recv_multipart))[0] for _ in range(2)}
            assert got == {b"\x01t1", b"\x01t2"}


async def test_triomq_xpub_sees_libzmq_sub_subscriptions(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.XPUB, zmq.SUB, triomq_binds=triomq_binds) as (xpub, sub):
            await peers.z(sub.setsockopt, zmq.SUBSCRIBE, b"topic")
            assert await _recv_poking(peers, xpub, sub) == [b"\x01topic"]
            await xpub.send_multipart([b"other", b"no"])
            await xpub.send_multipart([b"topic-1", b"yes"])
            assert await peers.z(sub.recv_multipart) == [b"topic-1", b"yes"]
            await peers.z(sub.setsockopt, zmq.UNSUBSCRIBE, b"topic")
            assert await xpub.recv_multipart() == [b"\x00topic"]


async def test_triomq_xpub_ends_a_libzmq_sub_subscription_made_twice(peers: Any, triomq_binds: bool) -> None:
    """libzmq's SUB sends a SUBSCRIBE per subscribe but one CANCEL, at the last
    unsubscribe: the triomq XPUB reports the topic gone and stops sending it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.XPUB, zmq.SUB, triomq_binds=triomq_binds) as (xpub, sub):
            for _ in range(2):
                await peers.z(sub.setsockopt, zmq.SUBSCRIBE, b"A")
            assert await _recv_poking(peers, xpub, sub) == [b"\x01A"]
            for _ in range(2):
                await peers.z(sub.setsockopt, zmq.UNSUBSCRIBE, b"A")
            assert await xpub.recv_multipart() == [b"\x00A"]
            await peers.z(sub.setsockopt, zmq.SUBSCRIBE, b"B")
            assert await xpub.recv_multipart() == [b"\x01B"]
            await xpub.send_multipart([b"A-late", b"x"])
            await xpub.send_multipart([b"B-msg", b"x"])
            # (the SUB filters too: the XPUB's index is what let A-late through)
            assert await peers.z(sub.recv_multipart) == [b"B-msg", b"x"]
            assert xpub.pattern.index.match_keys(b"A-late") == ()  # type: ignore[attr-defined]


async def test_triomq_xsub_to_libzmq_pub(peers: Any, triomq_binds: bool) -> None:
    """A triomq XSUB subscribes by sending b"\\x01topic"; a libzmq PUB then sends it
    only the matching messages."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.XSUB, zmq.PUB, triomq_binds=triomq_binds) as (xsub, pub):
            await xsub.send(b"\x01a")
            await _sync_triomq_sub(peers, pub, xsub)
            for topic in TRAFFIC:
                await peers.z(pub.send_multipart, [topic, b"body"])
            await peers.z(pub.send_multipart, [END, b"body"])
            got = []
            while True:
                msg = await xsub.recv_multipart()
                assert msg[0].startswith(b"a"), msg  # XSUB does not filter: the PUB did
                if msg[0] == SYNC:
                    continue
                got.append(msg[0])
                if msg[0] == END:
                    break
            assert got == MATCHING


async def test_triomq_xsub_to_libzmq_xpub(peers: Any, triomq_binds: bool) -> None:
    """What a triomq XSUB sends arrives at a libzmq XPUB in the message form."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.XSUB, zmq.XPUB, triomq_binds=triomq_binds) as (xsub, xpub):
            await xsub.send(b"\x01topic")
            assert await peers.z(xpub.recv_multipart) == [b"\x01topic"]
            # anything else goes upstream as a message
            await xsub.send_multipart([b"hello", b"\x01not a subscription"])
            assert await peers.z(xpub.recv_multipart) == [b"hello", b"\x01not a subscription"]
            await xsub.send(b"\x00topic")
            assert await peers.z(xpub.recv_multipart) == [b"\x00topic"]


async def test_libzmq_xsub_to_triomq_xpub(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.XPUB, zmq.XSUB, triomq_binds=triomq_binds) as (xpub, xsub):
            await peers.z(xsub.send, b"\x01topic")
            assert await _recv_poking(peers, xpub, xsub) == [b"\x01topic"]
            await xpub.send_multipart([b"nope", b"x"])
            await xpub.send_multipart([b"topic!", b"x"])
            assert await peers.z(xsub.recv_multipart) == [b"topic!", b"x"]
            # (libzmq's XSUB reads every frame starting with 0/1 as a subscription)
            await peers.z(xsub.send_multipart, [b"upstream", b"data"])
            assert await xpub.recv_multipart() == [b"upstream", b"data"]
            await peers.z(xsub.send, b"\x00topic")
            assert await xpub.recv_multipart() == [b"\x00topic"]


async def test_triomq_xpub_reports_unsubscribe_when_libzmq_sub_leaves(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.XPUB, zmq.SUB, triomq_binds=triomq_binds, zmq_options={"SUBSCRIBE": b"gone"}
        ) as (xpub, sub):
            assert await _recv_poking(peers, xpub, sub) == [b"\x01gone"]
            await peers.z(sub.close)
            assert await xpub.recv_multipart() == [b"\x00gone"]


# ---------------------------------------------------------------- ZMTP 3.0 peers (by hand)


async def test_triomq_pub_accepts_zmtp30_message_subscriptions(peers: Any, zmtp: Any) -> None:
    """A ZMTP 3.0 SUB subscribes with a \\x01topic message; triomq PUB then filters by it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.XPUB, linger=0) as xpub:
            endpoint = await xpub.bind(peers.endpoint())
            async with await zmtp.open_raw(endpoint) as stream:
                await stream.send_all(zmtp.greeting(minor=0) + zmtp.ready(b"SUB"))
                theirs = await zmtp.read_exactly(stream, 64)
                assert theirs[10:12] == b"\x03\x01"
                flags, body = await zmtp.read_frame(stream)
                assert flags == 0x04 and body.startswith(b"\x05READY")
                await stream.send_all(zmtp.frame(b"\x01a"))
                assert await xpub.recv_multipart() == [b"\x01a"]
                await xpub.send_multipart([b"b", b"no"])
                await xpub.send_multipart([b"ab", b"yes"])
                assert await zmtp.read_frame(stream) == (0x01, b"ab")
                assert await zmtp.read_frame(stream) == (0x00, b"yes")
                await stream.send_all(zmtp.frame(b"\x00a"))
                assert await xpub.recv_multipart() == [b"\x00a"]


async def test_triomq_sub_sends_message_subscriptions_to_zmtp30_pub(peers: Any, zmtp: Any) -> None:
    """Towards a peer that greeted as ZMTP 3.0, subscriptions are \\x01topic messages."""
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.SUB, linger=0) as sub:
            endpoint = await sub.bind(peers.endpoint())
            async with await zmtp.open_raw(endpoint) as stream:
                await stream.send_all(zmtp.greeting(minor=0) + zmtp.ready(b"PUB"))
                await zmtp.read_exactly(stream, 64)
                flags, body = await zmtp.read_frame(stream)
                assert flags == 0x04 and body.startswith(b"\x05READY")
                await sub.subscribe(b"topic")
                assert await zmtp.read_frame(stream) == (0x00, b"\x01topic")
                await stream.send_all(zmtp.frame(b"other") + zmtp.frame(b"topic!"))
                assert await sub.recv() == b"topic!"
                await sub.unsubscribe(b"topic")
                assert await zmtp.read_frame(stream) == (0x00, b"\x00topic")


async def test_triomq_sub_sends_subscribe_commands_to_zmtp31_pub(peers: Any, zmtp: Any) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.SUB, linger=0) as sub:
            endpoint = await sub.bind(peers.endpoint())
            async with await zmtp.open_raw(endpoint) as stream:
                await stream.send_all(zmtp.greeting(minor=1) + zmtp.ready(b"PUB"))
                await zmtp.read_exactly(stream, 64)
                await zmtp.read_frame(stream)  # READY
                await sub.subscribe(b"topic")
                assert await zmtp.read_frame(stream) == (0x04, b"\x09SUBSCRIBEtopic")
                await sub.unsubscribe(b"topic")
                assert await zmtp.read_frame(stream) == (0x04, b"\x06CANCELtopic")


# ---------------------------------------------------------------- XPUB reports, as libzmq's XPUB


async def test_xpub_hands_out_libzmq_xsub_messages_and_reports_in_order(peers: Any) -> None:
    """libzmq's XPUB keeps a peer's subscriptions and upstream messages in one
    queue, in arrival order; triomq's XPUB hands them out the same way."""
    sent = [[b"hello"], [b"\x01A"], [b"multi", b"part"], [b"\x00A"], [b"\x01B"], [b"tail"], [b""], [b"last"]]
    with trio.fail_after(TEST_TIMEOUT):
        zxpub = peers.zsocket(zmq.XPUB)
        zxsub = peers.zsocket(zmq.XSUB)
        await peers.z(zxsub.connect, await peers.z(peers.zbind, zxpub))
        async with peers.link(triomq.XPUB, zmq.XSUB, triomq_binds=True) as (xpub, xsub):
            for msg in sent:
                await peers.z(xsub.send_multipart, msg)
                await peers.z(zxsub.send_multipart, msg)
            reference = [await peers.z(zxpub.recv_multipart) for _ in sent]
            assert reference == sent
            assert [await xpub.recv_multipart() for _ in sent] == reference


@pytest.mark.parametrize("mode", ["default", "verboser", "manual"])
async def test_xpub_reports_a_libzmq_sub_that_leaves_as_libzmq_does(peers: Any, mode: str) -> None:
    """S2 holds A; S1 holds A and B, then closes. libzmq's XPUB then reports
    the topics nobody holds any more (default), all S1 held (verboser), or all
    S1 asked for (manual); triomq's reports the same, in the same order."""
    zopts = {"default": {}, "verboser": {"XPUB_VERBOSER": 1}, "manual": {"XPUB_MANUAL": 1}}[mode]
    topts = {"default": {}, "verboser": {"xpub_verboser": True}, "manual": {"xpub_manual": True}}[mode]
    on_join, on_leave = (1, 1) if mode == "default" else (2, 2)

    async def scenario(recv: Any, endpoint: str) -> list[list[bytes]]:
        s2 = peers.zsocket(zmq.SUB)
        await peers.z(s2.connect, endpoint)
        await peers.z(s2.setsockopt, zmq.SUBSCRIBE, b"A")
        got = [await recv()]
        s1 = peers.zsocket(zmq.SUB)
        await peers.z(s1.connect, endpoint)
        await peers.z(s1.setsockopt, zmq.SUBSCRIBE, b"A")
        await peers.z(s1.setsockopt, zmq.SUBSCRIBE, b"B")
        got += [await recv() for _ in range(on_join)]
        await peers.z(s1.close, 0)
        got += [await recv() for _ in range(on_leave)]
        return got

    with trio.fail_after(TEST_TIMEOUT):
        zxpub = peers.zsocket(zmq.XPUB, **zopts)
        reference = await scenario(lambda: peers.z(zxpub.recv_multipart), await peers.z(peers.zbind, zxpub))
        expected = {
            "default": [[b"\x01A"], [b"\x01B"], [b"\x00B"]],
            "verboser": [[b"\x01A"], [b"\x01A"], [b"\x01B"], [b"\x00A"], [b"\x00B"]],
            "manual": [[b"\x01A"], [b"\x01A"], [b"\x01B"], [b"\x00A"], [b"\x00B"]],
        }[mode]
        assert reference == expected
        async with triomq.open_socket(triomq.XPUB, linger=0, **topts) as xpub:
            endpoint = await xpub.bind(peers.endpoint())
            assert await scenario(xpub.recv_multipart, endpoint) == reference


async def test_xpub_reports_a_cancel_of_a_topic_never_subscribed_as_libzmq(peers: Any, zmtp: Any) -> None:
    """A raw ZMTP 3.1 SUB cancels a topic it never subscribed: libzmq's XPUB
    reports it (its mtrie finds nothing, which is not "others remain"), and so
    does triomq's. Both are sent the same bytes."""
    wire = b"".join(zmtp.command(b"SUBSCRIBE" if sub else b"CANCEL", topic) for sub, topic in [
        (True, b"A"), (False, b"never"), (False, b"A")
    ])
    expected = [[b"\x01A"], [b"\x00never"], [b"\x00A"]]

    async def play(endpoint: str, recv: Any) -> list[list[bytes]]:
        async with await zmtp.open_raw(endpoint) as stream:
            await stream.send_all(zmtp.greeting(minor=1) + zmtp.ready(b"SUB"))
            await zmtp.read_exactly(stream, 64)
            await zmtp.read_frame(stream)  # READY
            await stream.send_all(wire)
            return [await recv() for _ in expected]

    with trio.fail_after(TEST_TIMEOUT):
        zxpub = peers.zsocket(zmq.XPUB)
        assert await play(await peers.z(peers.zbind, zxpub), lambda: peers.z(zxpub.recv_multipart)) == expected
        async with triomq.open_socket(triomq.XPUB, linger=0) as xpub:
            assert await play(await xpub.bind(peers.endpoint()), xpub.recv_multipart) == expected

"""REQ, REP, DEALER, ROUTER: envelopes, routing ids, and surviving cancellation."""

from __future__ import annotations

import socket as stdlib_socket

import pytest
import trio
import trio.testing

import triomq

from .helpers import raw_handshake, wait_for_event


async def test_req_rep_round_trips(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
            await req.connect(await rep.bind(endpoint))
            for i in range(20):
                await req.send_multipart([b"q", b"%d" % i])
                assert await rep.recv_multipart() == [b"q", b"%d" % i]
                await rep.send_multipart([b"a", b"%d" % i])
                assert await req.recv_multipart() == [b"a", b"%d" % i]


async def test_req_strict_mode_enforces_alternation() -> None:
    async with triomq.open_socket(triomq.REQ, req_relaxed=False, linger=0) as req:
        await req.connect("inproc://strict-nobody")
        with pytest.raises(triomq.StateError):
            await req.recv()
        await req.send(b"1")
        with pytest.raises(triomq.StateError):
            await req.send(b"2")
    async with triomq.open_socket(triomq.REP) as rep:
        with pytest.raises(triomq.StateError, match="receive a request"):
            await rep.send(b"nothing asked")


async def test_router_sees_envelope_and_routes_by_id(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER) as router:
            ep = await router.bind(endpoint)
            async with triomq.open_socket(triomq.REQ, routing_id=b"alice") as alice, \
                    triomq.open_socket(triomq.DEALER) as anon:
                await alice.connect(ep)
                await anon.connect(ep)
                await alice.send(b"hi from alice")
                rid, *rest = await router.recv_multipart()
                assert rid == b"alice"
                assert rest[-2:] == [b"", b"hi from alice"]  # REQ envelope: [request id,] "", body
                await anon.send_multipart([b"", b"hi from anon"])
                anon_id, empty, body = await router.recv_multipart()
                assert len(anon_id) == 5 and anon_id[0] == 0  # libzmq's generated id
                assert (empty, body) == (b"", b"hi from anon")
                await router.send_multipart([anon_id, b"", b"to anon"])
                await router.send_multipart([rid, *rest[:-1], b"to alice"])
                assert await anon.recv_multipart() == [b"", b"to anon"]
                assert await alice.recv() == b"to alice"


async def test_router_unknown_id_dropped_or_unreachable() -> None:
    async with triomq.open_socket(triomq.ROUTER) as router:
        await router.send_multipart([b"nobody", b"x"])  # dropped silently
        assert router.statistics().dropped == 1
    async with triomq.open_socket(triomq.ROUTER, router_mandatory=True) as router:
        with pytest.raises(triomq.HostUnreachable):
            await router.send_multipart([b"nobody", b"x"])


async def test_router_duplicate_id_refused_unless_handover(transport: str, endpoint: str) -> None:
    if transport == "inproc":
        endpoint = f"inproc://dup-{transport}"
    with trio.fail_after(10):
        for handover in (False, True):
            async with triomq.open_socket(triomq.ROUTER, router_handover=handover) as router:
                ep = await router.bind(endpoint if transport != "inproc" else f"{endpoint}-{handover}")
                async with triomq.open_socket(triomq.DEALER, routing_id=b"same") as first:
                    await first.connect(ep)
                    await first.send(b"one")
                    assert await router.recv_multipart() == [b"same", b"one"]
                    async with triomq.open_socket(triomq.DEALER, routing_id=b"same", linger=0) as second:
                        await second.connect(ep)
                        if handover:
                            await second.send(b"two")
                            assert await router.recv_multipart() == [b"same", b"two"]
                            await router.send_multipart([b"same", b"for the newcomer"])
                            assert await second.recv() == b"for the newcomer"
                        else:
                            await router.send_multipart([b"same", b"for the first"])
                            assert await first.recv() == b"for the first"
                            assert router.statistics().peers == 1


async def test_router_handover_ends_the_old_connection(endpoint: str) -> None:
    # as libzmq's router.cpp: the old pipe takes a generated id and is terminated;
    # what it sent before the handover is still read (under that id), nothing is
    # sent to it any more, and its peer sees the connection end
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, router_handover=True) as router:
            ep = await router.bind(endpoint)
            async with router.monitor() as events, triomq.open_socket(
                triomq.DEALER, routing_id=b"same", reconnect_ivl=None
            ) as first:
                await first.connect(ep)
                await first.send(b"one")
                assert await router.recv_multipart() == [b"same", b"one"]
                await first.send(b"sent before the handover")
                async with first.monitor() as first_events:
                    async with triomq.open_socket(triomq.DEALER, routing_id=b"same", linger=0) as second:
                        await second.connect(ep)
                        await second.send(b"two")
                        if not endpoint.startswith("inproc"):  # (inproc hands over in connect)
                            event = await wait_for_event(events, triomq.Disconnected)
                            assert "handed over" in event.reason
                            await wait_for_event(first_events, triomq.Disconnected)
                        got = [await router.recv_multipart() for _ in range(2)]
                        assert [b"same", b"two"] in got
                        (old,) = [m for m in got if m != [b"same", b"two"]]
                        assert old[0] != b"same" and old[1:] == [b"sent before the handover"]
                        assert (router.statistics().peers, first.statistics().peers) == (1, 0)
                        await router.send_multipart([b"same", b"for the newcomer"])
                        assert await second.recv() == b"for the newcomer"


async def test_dealer_round_robin_and_fair_queue(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.DEALER) as dealer:
            ep = await dealer.bind(endpoint)
            async with triomq.open_socket(triomq.DEALER) as a, triomq.open_socket(triomq.DEALER) as b:
                await a.connect(ep)
                await b.connect(ep)
                await dealer.wait_peers(2)
                for i in range(4):
                    await dealer.send(b"%d" % i)
                assert [await a.recv() for _ in range(2)] + [await b.recv() for _ in range(2)] in (
                    [b"0", b"2", b"1", b"3"],
                    [b"1", b"3", b"0", b"2"],
                )


async def _echo_rep(rep: triomq.Socket, hold: trio.Event | None = None) -> None:
    async for msg in rep:
        if hold is not None:
            await hold.wait()
        await rep.send_multipart([b"re:" + msg[0]])


@pytest.mark.parametrize("where", ["before_send", "after_send", "while_receiving"])
async def test_req_recovers_from_cancellation_at_every_point(where: str, endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
            await req.connect(await rep.bind(endpoint))
            release = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_echo_rep, rep, release)
                if where == "before_send":
                    with trio.CancelScope() as scope:
                        scope.cancel()
                        await req.send(b"never")
                    release.set()
                else:
                    await req.send(b"old")
                    if where == "after_send":
                        with trio.CancelScope() as scope:
                            scope.cancel()
                            await req.recv()
                    else:
                        with trio.move_on_after(0.05):
                            await req.recv()  # the REP is holding the reply: times out
                    release.set()
                # the socket is still usable; a late "re:old" is not taken for the answer
                await req.send(b"new")
                assert await req.recv() == b"re:new"
                await req.send(b"again")
                assert await req.recv() == b"re:again"
                nursery.cancel_scope.cancel()


async def test_req_abandoned_request_not_yet_sent_is_withdrawn() -> None:
    async with triomq.open_socket(triomq.REQ, linger=0) as req:
        await req.connect("inproc://withdraw")  # nobody bound yet
        await req.send(b"first")
        await req.send(b"second")  # abandons "first", which never left
        assert req.statistics().queued_out == 1
        async with triomq.open_socket(triomq.REP) as rep:
            await rep.bind("inproc://withdraw")
            assert await rep.recv() == b"second"
            await rep.send(b"ok")
            assert await req.recv() == b"ok"


async def test_rep_survives_cancelled_recv_and_send() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
            await rep.bind("inproc://rep-cancel")
            await req.connect("inproc://rep-cancel")
            with trio.move_on_after(0.01):
                await rep.recv()  # nothing yet: cancelled, nothing consumed
            await req.send(b"one")
            assert await rep.recv() == b"one"
            with trio.CancelScope() as scope:
                scope.cancel()
                await rep.send(b"reply lost to cancellation")
            # the handler was cancelled: the REP goes on serving the next request
            await req.send(b"two")  # REQ relaxed: "one" is abandoned
            assert await rep.recv() == b"two"
            await rep.send(b"re:two")
            assert await req.recv() == b"re:two"


@pytest.mark.parametrize("server_type", [triomq.REP, triomq.ROUTER])
async def test_many_concurrent_req_clients(server_type: triomq.SocketType, endpoint: str) -> None:
    clients, rounds = 20, 10
    with trio.fail_after(20):
        async with triomq.open_socket(server_type) as server:
            ep = await server.bind(endpoint)

            async def serve() -> None:
                while True:
                    msg = await server.recv_multipart()
                    if server_type is triomq.ROUTER:
                        envelope, body = msg[:-1], msg[-1]
                        await server.send_multipart([*envelope, body.upper()])
                    else:
                        await server.send(msg[0].upper())

            async def client(n: int) -> None:
                async with triomq.open_socket(triomq.REQ) as req:
                    await req.connect(ep)
                    for i in range(rounds):
                        await req.send(b"c%d-%d" % (n, i))
                        assert await req.recv() == b"C%d-%d" % (n, i)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                async with trio.open_nursery() as clients_nursery:
                    for n in range(clients):
                        clients_nursery.start_soon(client, n)
                nursery.cancel_scope.cancel()


def free_port() -> int:
    with stdlib_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_rpc_client_survives_server_restart() -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    policy = triomq.RetryPolicy(attempt_timeout=0.3, attempts=20, backoff=0.01)

    async def handler(frames: list[bytes]) -> list[bytes]:
        return [b"ok:" + frames[0]]

    async def run_server(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
                await router.bind(ep)
                await triomq.serve(router, handler, task_status=_started(task_status, scope))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(run_server)
            async with (
                triomq.open_rpc_client(ep, policy=policy, reconnect_ivl=0.01) as client,
                client.socket.monitor() as events,
            ):
                assert await client.request(b"1") == [b"ok:1"]
                server.cancel()  # the server dies...
                async with trio.open_nursery() as calls:
                    results = []

                    async def call() -> None:
                        results.append(await client.request([b"2"]))

                    calls.start_soon(call)
                    # ...and stays away through a few attempts: reconnects fail
                    # until the request has timed out and been sent again
                    reconnects = 0
                    while reconnects < 3 or client.retries < 1:
                        await wait_for_event(events, triomq.ConnectRetried)
                        reconnects += 1
                    server = await nursery.start(run_server)  # ...and comes back
                assert results == [[b"ok:2"]]
                assert client.retries >= 1
            server.cancel()


def _started(task_status: trio.TaskStatus[trio.CancelScope], scope: trio.CancelScope):  # type: ignore[no-untyped-def]
    class _Relay:
        def started(self, value: object = None) -> None:
            task_status.started(scope)

    return _Relay()


async def test_rpc_gives_up_with_a_clear_error() -> None:
    policy = triomq.RetryPolicy(attempt_timeout=0.05, attempts=3)
    async with triomq.open_rpc_client(
        f"tcp://127.0.0.1:{free_port()}", policy=policy, linger=0
    ) as client:
        with pytest.raises(triomq.RequestFailed, match="no reply after 3 attempts"):
            await client.request(b"anyone?")


async def test_rpc_client_works_with_a_rep_server_and_many_calls_in_flight() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER) as router:
            ep = await router.bind("inproc://rpc-many")

            async def slow_upper(frames: list[bytes]) -> bytes:
                await trio.sleep(0.05)
                return frames[0].upper()

            async with trio.open_nursery() as nursery:
                await nursery.start(triomq.serve, router, slow_upper)
                async with triomq.open_rpc_client(ep) as client:
                    results: dict[int, list[bytes]] = {}

                    async def call(i: int) -> None:
                        results[i] = await client.request(b"x%d" % i)

                    async with trio.open_nursery() as calls:
                        for i in range(50):
                            calls.start_soon(call, i)
                    assert results == {i: [b"X%d" % i] for i in range(50)}
                nursery.cancel_scope.cancel()
        # and against a plain REP, which echoes the client's envelope
        async with triomq.open_socket(triomq.REP) as rep:
            ep = await rep.bind("inproc://rpc-rep")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_echo_rep, rep)
                async with triomq.open_rpc_client(ep) as client:
                    assert await client.request(b"ping") == [b"re:ping"]
                nursery.cancel_scope.cancel()


async def test_heartbeats_detect_a_dead_peer() -> None:
    """A peer that stops answering PINGs is dropped (and the connecting side reconnects)."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.DEALER, heartbeat_ivl=0.05, heartbeat_timeout=0.1) as d:
            listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
            port = listener.socket.getsockname()[1]
            async with d.monitor() as events:
                await d.connect(f"tcp://127.0.0.1:{port}")
                # a fake peer that completes the greeting and READY, then goes silent
                stream = await listener.accept()
                await raw_handshake(stream, triomq.ROUTER)
                gone = await wait_for_event(events, triomq.Disconnected)
                assert "heartbeat" in gone.reason
                await stream.aclose()
                await listener.aclose()


async def test_req_reads_the_reply_of_a_peer_that_has_left(transport: str, endpoint: str) -> None:
    """A worker answers and exits before the REQ reads: the reply waits in a
    draining pipe, and taking it (which detaches that pipe) must not make it
    look like a reply from some other connection."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REQ) as req, req.monitor() as events:
            ep = await req.bind(endpoint)
            async with triomq.open_socket(triomq.REP) as rep:
                await rep.connect(ep)
                await req.send(b"job")
                assert await rep.recv() == b"job"
                await rep.send(b"done")
            if transport != "inproc":  # inproc ends its pipes as the REP closes
                await wait_for_event(events, triomq.Disconnected)
            stats = req.statistics()
            assert (stats.peers, stats.queued_in) == (0, 1)  # gone, the reply still queued
            assert await req.recv() == b"done"
            assert req.pattern.stale_replies == 0  # type: ignore[attr-defined]
            assert req.statistics().pipes == 0  # and the drained pipe went away


async def test_rep_drops_the_reply_to_a_requester_that_has_left(transport: str, endpoint: str) -> None:
    """A client that times out and closes mid-request: the REP's reply is
    dropped (counted), as libzmq's, and the REP goes on serving."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, rep.monitor() as events:
            ep = await rep.bind(endpoint)
            async with triomq.open_socket(triomq.REQ, linger=0) as req:
                await req.connect(ep)
                await req.send(b"slow question")
                assert await rep.recv() == b"slow question"
            if transport != "inproc":  # inproc ends its pipes as the REQ closes
                await wait_for_event(events, triomq.Disconnected)
            assert rep.statistics().pipes == 0
            await rep.send(b"answer nobody waits for")  # no StateError
            assert rep.statistics().dropped == 1
            async with triomq.open_socket(triomq.REQ) as req:
                await req.connect(ep)
                await req.send(b"next")
                assert await rep.recv() == b"next"
                await rep.send(b"re:next")
                assert await req.recv() == b"re:next"


async def test_rep_recv_many_hands_out_one_request_at_a_time() -> None:
    """Only the request received last can be answered: a batch would leave
    the others unanswered, so a REP's recv_many returns one (as a REQ's)."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep:
            ep = await rep.bind("inproc://rep-many")
            async with (
                triomq.open_socket(triomq.REQ) as a,
                triomq.open_socket(triomq.REQ) as b,
                triomq.open_socket(triomq.REQ) as c,
            ):
                clients = [a, b, c]
                for i, req in enumerate(clients):
                    await req.connect(ep)
                    await req.send(b"q%d" % i)
                assert rep.statistics().queued_in == 3  # inproc: all three are here
                answered = []
                for _ in clients:
                    batch = await rep.recv_many()
                    assert len(batch) == 1
                    answered.append(batch[0][0])
                    await rep.send(b"re:" + batch[0][0])
                assert sorted(answered) == [b"q0", b"q1", b"q2"]
                assert [await req.recv() for req in clients] == [b"re:q0", b"re:q1", b"re:q2"]
                assert rep.pattern.abandoned == 0  # type: ignore[attr-defined]


async def test_send_many_stops_at_a_refused_message_and_counts_what_went(endpoint: str) -> None:
    """A message the pattern refuses mid-batch ends the batch: the ones before it
    are queued, returned and counted; only a refused first message raises."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, router_mandatory=True) as router:
            ep = await router.bind(endpoint)
            async with triomq.open_socket(triomq.DEALER, routing_id=b"d") as dealer:
                await dealer.connect(ep)
                await router.wait_peers(1)
                batch = [[b"d", b"1"], [b"d", b"2"], [b"nobody", b"3"], [b"d", b"4"]]
                assert await router.send_many(batch) == 2
                assert router.statistics().sent == 2
                assert [await dealer.recv() for _ in range(2)] == [b"1", b"2"]
                with pytest.raises(triomq.HostUnreachable):
                    await router.send_many(batch[2:])  # the refused one is first now
                with pytest.raises(triomq.HostUnreachable):
                    router.send_many_nowait(batch[2:])
                assert router.statistics().sent == 2
                assert router.send_many_nowait(batch[3:]) == 1
                assert await dealer.recv() == b"4"

        # the same rule for REQ/REP state: one reply per request, one request per reply
        async with (
            triomq.open_socket(triomq.REP) as rep,
            triomq.open_socket(triomq.REQ, req_relaxed=False) as req,
        ):
            await req.connect(await rep.bind(endpoint))
            assert await req.send_many([[b"q"], [b"second request"]]) == 1
            assert await rep.recv() == b"q"
            assert await rep.send_many([[b"a"], [b"second reply"]]) == 1
            assert rep.statistics().sent == 1
            assert await req.recv() == b"a"


async def test_serve_survives_replies_it_cannot_make_or_send(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that returns text, and a reply whose client has left (with
    router_mandatory): each is logged and that request gets no reply, as the
    docstring says; serve() goes on answering the others."""
    slow_started, client_gone = trio.Event(), trio.Event()

    async def handler(frames: list[bytes]) -> bytes:
        if frames == [b"text"]:
            return "not bytes"  # type: ignore[return-value]
        if frames == [b"slow"]:
            slow_started.set()
            await client_gone.wait()
        return frames[0].upper()

    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.ROUTER, router_mandatory=True) as router,
            router.monitor() as events,
        ):
            ep = await router.bind("tcp://127.0.0.1:0")
            async with trio.open_nursery() as nursery:
                await nursery.start(triomq.serve, router, handler)  # dies -> the test fails
                async with triomq.open_socket(triomq.DEALER, linger=0) as leaving:
                    await leaving.connect(ep)
                    await leaving.send_multipart([b"", b"slow"])
                    await slow_started.wait()
                await wait_for_event(events, triomq.Disconnected)
                client_gone.set()  # its reply now has no peer to go to
                async with triomq.open_socket(triomq.DEALER) as client:
                    await client.connect(ep)
                    await client.send_multipart([b"", b"text"])
                    await client.send_multipart([b"", b"ok"])
                    assert await client.recv_multipart() == [b"", b"OK"]
                nursery.cancel_scope.cancel()
    failures = sorted(type(r.exc_info[1]).__name__ for r in caplog.records if r.exc_info)
    assert failures == ["HostUnreachable", "TypeError"]


async def test_uncorrelated_req_discards_a_late_reply_when_a_new_request_begins() -> None:
    """With req_correlate=False nothing marks a late reply as stale, so a new
    request discards what is waiting, as libzmq's req_t::xsend does."""
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.REP) as rep,
            triomq.open_socket(triomq.REQ, req_correlate=False) as req,
        ):
            await req.connect(await rep.bind("inproc://late-uncorrelated"))
            await req.send(b"req1")
            assert await rep.recv() == b"req1"
            with trio.CancelScope() as scope:
                scope.cancel()
                await req.recv()  # the caller gave up on req1
            await rep.send(b"re:req1")  # inproc: queued at the REQ at once
            assert req.statistics().queued_in == 1
            await req.send(b"req2")
            assert await rep.recv() == b"req2"
            await rep.send(b"re:req2")
            assert await req.recv() == b"re:req2"
            assert req.pattern.stale_replies == 1  # type: ignore[attr-defined]


async def test_req_and_rep_drop_a_message_recv_put_back_once_they_send() -> None:
    """recv() puts back a multi-frame message; the application then sends. For
    a REQ that message was the old reply, for a REP the request just answered:
    neither may come out of the next receive."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
            await req.connect(await rep.bind("inproc://put-back"))
            await req.send(b"req1")
            assert await rep.recv() == b"req1"
            await rep.send_multipart([b"re:req1", b"extra"])
            with pytest.raises(triomq.StateError, match="2 frames"):
                await req.recv()
            await req.send(b"req2")
            assert await rep.recv() == b"req2"
            await rep.send(b"re:req2")
            assert await req.recv_multipart() == [b"re:req2"]

            await req.send_multipart([b"two", b"frames"])
            with pytest.raises(triomq.StateError, match="2 frames"):
                await rep.recv()
            await rep.send(b"error: send one frame")  # answers the put-back request
            assert await req.recv() == b"error: send one frame"
            await req.send(b"next")
            assert await rep.recv_multipart() == [b"next"]
            await rep.send(b"re:next")
            assert await req.recv() == b"re:next"


@pytest.mark.parametrize("options", [{"immediate": True}, {"sndhwm": 1}])
async def test_rpc_attempt_timeout_bounds_a_send_that_cannot_go(options: dict[str, object]) -> None:
    """With no server, a DEALER that may not queue (immediate) or whose queue is
    full (the first attempt's copy fills sndhwm=1) waits to send: that wait is
    part of the attempt, so the call still fails after its attempts."""
    policy = triomq.RetryPolicy(attempt_timeout=0.05, attempts=3)
    with trio.fail_after(5):
        async with triomq.open_rpc_client(
            f"tcp://127.0.0.1:{free_port()}", policy=policy, **options
        ) as client:
            with pytest.raises(triomq.RequestFailed, match="no reply after 3 attempts"):
                await client.request(b"anyone?")
            assert client.retries == 2


async def test_rpc_backoff_never_waits_longer_than_backoff_max(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``backoff_max`` is the longest wait between attempts, the first one included."""
    policy = triomq.RetryPolicy(attempt_timeout=1, attempts=2, backoff=10, backoff_max=3)
    async with triomq.open_socket(triomq.ROUTER) as router:
        ep = await router.bind("inproc://rpc-backoff")  # nobody answers
        async with triomq.open_rpc_client(ep, policy=policy) as client:
            started = trio.current_time()
            with pytest.raises(triomq.RequestFailed):
                await client.request(b"x")
            assert trio.current_time() - started == pytest.approx(1 + 3 + 1)


async def test_rpc_client_block_exception_comes_out_as_itself() -> None:
    """As with open_socket, the client's dispatcher task does not turn an
    exception of the block into an ExceptionGroup."""
    with pytest.raises(KeyError, match="mine"):
        async with triomq.open_rpc_client("inproc://rpc-nobody"):
            raise KeyError("mine")


async def test_rpc_cancelled_call_leaves_the_client_usable_and_its_late_reply_is_dropped() -> None:
    started, release = trio.Event(), trio.Event()

    async def handler(frames: list[bytes]) -> bytes:
        if frames == [b"first"]:
            started.set()
            await release.wait()
        return b"re:" + frames[0]

    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER) as router, trio.open_nursery() as nursery:
            ep = await router.bind("tcp://127.0.0.1:0")
            await nursery.start(triomq.serve, router, handler)
            async with triomq.open_rpc_client(ep) as client:
                with trio.CancelScope() as scope:
                    nursery.start_soon(_cancel_when_set, started, scope)
                    await client.request(b"first")
                assert scope.cancelled_caught
                release.set()  # the first call's reply comes now, ahead of the next one's
                assert await client.request(b"second") == [b"re:second"]
                assert client.stale_replies == 1
            nursery.cancel_scope.cancel()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@pytest.mark.parametrize("server_from_attempt", [None, 3])
async def test_rpc_retries_take_back_the_copies_nobody_read(
    autojump_clock: trio.testing.MockClock, server_from_attempt: int | None
) -> None:
    """While the server is away, each attempt's copy waits in the DEALER's
    queue. A retry takes the unread one back, so a server that comes back runs
    the request once, not once per attempt; after the last attempt (or a
    cancelled call) no copy is left to run at all."""
    handled: list[list[bytes]] = []

    async def handler(frames: list[bytes]) -> bytes:
        handled.append(frames)
        return b"done"

    policy = triomq.RetryPolicy(attempt_timeout=1, attempts=4)
    ep = f"inproc://rpc-withdraw-{server_from_attempt}"
    async with triomq.open_rpc_client(ep, policy=policy) as client, trio.open_nursery() as nursery:

        async def server_later(delay: float) -> None:
            await trio.sleep(delay)  # (virtual time: into the given attempt)
            async with triomq.open_socket(triomq.ROUTER) as router:
                await router.bind(ep)
                await triomq.serve(router, handler)

        if server_from_attempt is None:
            with pytest.raises(triomq.RequestFailed):
                await client.request(b"job")
            nursery.start_soon(server_later, 0)
            assert await client.request(b"second job") == [b"done"]
            assert handled == [[b"second job"]]
        else:
            nursery.start_soon(server_later, server_from_attempt - 0.5)
            assert await client.request(b"job") == [b"done"]
            assert handled == [[b"job"]]
        nursery.cancel_scope.cancel()

"""Who sent a message: PeerInfo from the handshake, with the authenticator's user id."""

from __future__ import annotations

import trio

import triomq


async def test_recv_with_peer_reports_the_authenticated_user() -> None:
    server_public, server_secret = triomq.curve_keypair()
    client_public, client_secret = triomq.curve_keypair()

    async def authenticator(request: triomq.AuthRequest) -> str | bool:
        return "alice" if request.public_key == triomq.z85_decode(client_public) else False

    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.PULL,
            curve_server=True,
            curve_secretkey=server_secret,
            authenticator=authenticator,
        ) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(
                triomq.PUSH,
                curve_serverkey=server_public,
                curve_publickey=client_public,
                curve_secretkey=client_secret,
                metadata={"X-Shard": b"7"},
            ) as push:
                await push.connect(ep)
                await push.send(b"hello")
                msg, peer = await pull.recv_multipart_with_peer()
                assert msg == [b"hello"]
                assert peer is not None
                assert peer.user_id == "alice"
                assert peer.socket_type == "PUSH"
                assert peer.address == "127.0.0.1"
                assert peer.endpoint == ep
                assert peer.metadata["X-Shard"] == b"7"
                assert pull.peers() == [peer]


async def test_peer_of_each_message_over_several_connections() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER) as router:
            ep = await router.bind("inproc://peers")
            async with triomq.open_socket(triomq.DEALER, routing_id=b"a") as a, triomq.open_socket(
                triomq.DEALER, routing_id=b"b"
            ) as b:
                await a.connect(ep)
                await b.connect(ep)
                await a.send(b"from a")
                await b.send(b"from b")
                for _ in range(2):
                    msg, peer = await router.recv_multipart_with_peer()
                    assert peer is not None and msg[0] == peer.routing_id
                    assert msg[1] == b"from " + peer.routing_id


async def test_per_peer_counters() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUB, sndhwm=2) as pub:
            await pub.bind("inproc://counters")
            async with triomq.open_socket(triomq.SUB, subscribe=[b""], rcvhwm=1) as sub:
                await sub.connect("inproc://counters")
                await pub.wait_peers()
                for i in range(10):
                    pub.send_nowait(b"%d" % i)
                (stats,) = pub.peer_statistics()
                assert stats.connected and stats.peer is not None and stats.peer.socket_type == "SUB"
                assert stats.queued_out == 3  # sndhwm + rcvhwm on inproc
                assert stats.sent == 3 and stats.dropped == 7
                assert pub.statistics().dropped == 7
                (sub_stats,) = sub.peer_statistics()
                assert sub_stats.queued_in == 3
                await sub.recv()
                assert sub.peer_statistics()[0].queued_in == 2

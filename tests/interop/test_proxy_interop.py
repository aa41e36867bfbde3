"""A triomq proxy between libzmq publishers and triomq subscribers."""

from __future__ import annotations

import trio
import zmq

import triomq


async def test_proxy_between_libzmq_publishers_and_triomq_subscribers() -> None:
    ctx = zmq.Context()
    try:
        with trio.fail_after(20):
            async with triomq.open_socket(triomq.XSUB) as front, triomq.open_socket(triomq.XPUB) as back:
                f_ep = await front.bind("tcp://127.0.0.1:0")
                b_ep = await back.bind("tcp://127.0.0.1:0")
                pubs = []
                for _ in range(2):
                    pub = ctx.socket(zmq.PUB)
                    pub.setsockopt(zmq.LINGER, 0)
                    pub.connect(f_ep)
                    pubs.append(pub)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(triomq.proxy, front, back)
                    async with triomq.open_socket(triomq.SUB) as weather, triomq.open_socket(
                        triomq.SUB
                    ) as everything:
                        await weather.connect(b_ep)
                        await everything.connect(b_ep)
                        await weather.subscribe(b"weather")
                        await everything.subscribe(b"")
                        # publish until both subscriptions have travelled through the proxy
                        # to the libzmq publishers (they filter at the source)
                        got_weather = got_all = False
                        while not (got_weather and got_all):
                            for i, pub in enumerate(pubs):
                                await trio.to_thread.run_sync(pub.send_multipart, [b"weather", b"%d" % i])
                                await trio.to_thread.run_sync(pub.send_multipart, [b"sports", b"%d" % i])
                            with trio.move_on_after(0.05):
                                while True:
                                    topic, _ = await weather.recv_multipart()
                                    assert topic == b"weather"  # filtered all the way
                                    got_weather = True
                            with trio.move_on_after(0.05):
                                while True:
                                    topic, _ = await everything.recv_multipart()
                                    got_all = got_all or topic == b"sports"
                        # both publishers reach the subscribers through the one proxy
                        seen: set[bytes] = set()
                        while seen != {b"0", b"1"}:
                            for i, pub in enumerate(pubs):
                                await trio.to_thread.run_sync(pub.send_multipart, [b"weather", b"%d" % i])
                            with trio.move_on_after(0.05):
                                while True:
                                    seen.add((await weather.recv_multipart())[1])
                    nursery.cancel_scope.cancel()
                for pub in pubs:
                    pub.close()
    finally:
        ctx.term()

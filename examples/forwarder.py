"""A forwarder proxy: XSUB on one side, XPUB on the other, ``triomq.proxy()`` in between.

Concurrency idea: a device is just another task. The proxy task forwards
messages downstream and subscriptions upstream (XPUB passes its subscribers'
subscriptions to XSUB, which passes them to the publishers), so filtering
still happens at the publisher. Publisher, proxy and subscribers are tasks of
one nursery; when the subscribers have what they want, cancelling the
nursery stops the endless publisher and the proxy together.

    python examples/forwarder.py
"""

import itertools

import trio

import triomq


async def forwarder(*, task_status: trio.TaskStatus[tuple[str, str]]) -> None:
    async with (
        triomq.open_socket(triomq.XSUB) as frontend,  # publishers connect here
        triomq.open_socket(triomq.XPUB) as backend,  # subscribers connect here
    ):
        endpoints = (
            await frontend.bind("tcp://127.0.0.1:0"),
            await backend.bind("tcp://127.0.0.1:0"),
        )
        task_status.started(endpoints)
        control = triomq.ProxyControl()
        try:
            await triomq.proxy(frontend, backend, control=control)
        finally:
            print(f"forwarder: {control.forwarded} messages and subscriptions forwarded")


async def publisher(endpoint: str) -> None:
    async with triomq.open_socket(triomq.PUB) as pub:
        await pub.connect(endpoint)
        for n in itertools.count():
            for topic in (b"news", b"sports", b"weather"):
                await pub.send_multipart([topic, b"%s bulletin %d" % (topic, n)])
            await trio.sleep(0.005)


async def subscriber(endpoint: str, topic: bytes, wanted: int) -> None:
    async with triomq.open_socket(triomq.SUB, subscribe=[topic]) as sub:
        await sub.connect(endpoint)
        for _ in range(wanted):
            got_topic, body = await sub.recv_multipart()
            assert got_topic == topic
        name, last = topic.decode(), body.decode()
        print(f"subscriber to {name!r}: {wanted} messages via the proxy, the last: {last}")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        frontend, backend = await nursery.start(forwarder)
        nursery.start_soon(publisher, frontend)
        async with trio.open_nursery() as subscribers:
            subscribers.start_soon(subscriber, backend, b"news", 10)
            subscribers.start_soon(subscriber, backend, b"weather", 10)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)

"""The synchronized publisher: subscribers check in over REQ/REP before anything is published.

Concurrency idea: coordinate before you fan out. A PUB socket sends to the
subscribers it has *now*; one that is still connecting (the "slow joiner")
misses what went before. So the publisher first waits until every expected
subscriber has checked in over REQ/REP, and only then publishes: nothing is
lost. Until then it sends "hello" probes, and a subscriber checks in only
once a probe has reached it, which proves its subscription is in place (the
check-in travels on another connection and could otherwise overtake it).

    python examples/sync_pub.py
"""

import trio

import triomq

SUBSCRIBERS = 3
UPDATES = 1000


async def publisher(*, task_status: trio.TaskStatus[tuple[str, str]]) -> None:
    # a big enough HWM: a PUB drops what a slow subscriber has no room for
    async with (
        triomq.open_socket(triomq.PUB, sndhwm=10_000) as pub,
        triomq.open_socket(triomq.REP) as sync,
    ):
        task_status.started(
            (await pub.bind("tcp://127.0.0.1:0"), await sync.bind("tcp://127.0.0.1:0"))
        )

        async def probe() -> None:
            while True:
                await pub.send(b"hello")
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            for checked_in in range(1, SUBSCRIBERS + 1):
                name = await sync.recv()
                await sync.send(b"ok")
                print(f"publisher: {name.decode()} checked in ({checked_in}/{SUBSCRIBERS})")
            nursery.cancel_scope.cancel()  # stop probing

        for n in range(UPDATES):
            await pub.send(b"update %d" % n)
        await pub.send(b"END")


async def subscriber(
    name: str, pub_endpoint: str, sync_endpoint: str, counts: dict[str, int]
) -> None:
    async with (
        triomq.open_socket(triomq.SUB, subscribe=[b""]) as sub,
        triomq.open_socket(triomq.REQ) as sync,
    ):
        await sub.connect(pub_endpoint)
        while await sub.recv() != b"hello":  # a probe got through: we are subscribed
            pass
        await sync.connect(sync_endpoint)
        await sync.send(name.encode())
        await sync.recv()
        received = 0
        while (msg := await sub.recv()) != b"END":
            if msg != b"hello":  # late probes
                received += 1
        counts[name] = received


async def main() -> None:
    counts: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        pub_endpoint, sync_endpoint = await nursery.start(publisher)
        for n in range(SUBSCRIBERS):
            nursery.start_soon(subscriber, f"subscriber-{n}", pub_endpoint, sync_endpoint, counts)
    for name, received in sorted(counts.items()):
        print(f"{name}: {received} of {UPDATES} updates")
    if all(received == UPDATES for received in counts.values()):
        print(f"each of {SUBSCRIBERS} subscribers received all {UPDATES} updates")
    else:
        raise SystemExit("updates were lost")


if __name__ == "__main__":
    trio.run(main)

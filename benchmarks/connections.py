"""Many connections: the memory an idle connection costs, and round trips with
1 000 DEALERs on one ROUTER.

    python benchmarks/connections.py [--peers 1000] [--rounds 20]

The ROUTER (an echo server) runs in its own process; the DEALERs, each its
own socket and connection, run as tasks of this one. Heap cost is measured
with tracemalloc in the server process (Python heap only, not kernel buffers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import trio

import triomq

SERVER = """
import json, sys, tracemalloc, trio, triomq
async def main():
    tracemalloc.start()
    async with triomq.open_socket(triomq.ROUTER, rcvhwm=0, sndhwm=0) as router:
        ep = await router.bind("tcp://127.0.0.1:0")
        base = tracemalloc.get_traced_memory()[0]
        print(json.dumps({"endpoint": ep}), flush=True)
        expected = int(sys.argv[1])
        await router.wait_peers(expected)
        await trio.sleep(0.5)
        idle = (tracemalloc.get_traced_memory()[0] - base) / expected
        print(json.dumps({"idle_bytes_per_connection": idle}), flush=True)
        tracemalloc.stop()
        async for msg in router:
            await router.send_multipart(msg)
trio.run(main)
"""


async def main_async(peers: int, rounds: int, interval: float) -> dict[str, float]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVER, str(peers)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    buf = b""

    async def next_line() -> dict[str, object]:
        nonlocal buf
        while b"\n" not in buf:
            buf += await proc.stdout.receive_some()  # type: ignore[union-attr]
        line, buf = buf.split(b"\n", 1)
        return dict(json.loads(line))

    endpoint = str((await next_line())["endpoint"])
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        ready = trio.Semaphore(0)
        go = trio.Event()

        async def client(n: int) -> None:
            async with triomq.open_socket(triomq.DEALER, linger=0) as dealer:
                await dealer.connect(endpoint)
                await dealer.wait_peers()
                ready.release()
                await go.wait()
                # each client asks once per interval, at its own offset in it
                await trio.sleep(interval * n / peers)
                for r in range(rounds):
                    t = time.perf_counter()
                    await dealer.send(b"%d-%d" % (n, r))
                    assert await dealer.recv() == b"%d-%d" % (n, r)
                    latencies.append(time.perf_counter() - t)
                    await trio.sleep(max(0.0, interval - (time.perf_counter() - t)))

        for n in range(peers):
            nursery.start_soon(client, n)
        for _ in range(peers):
            await ready.acquire()
        idle = float((await next_line())["idle_bytes_per_connection"])  # type: ignore[arg-type]
        go.set()
    proc.kill()
    await proc.wait()
    latencies.sort()
    return {
        "peers": peers,
        "idle_heap_bytes_per_connection": idle,
        "rtt_median_ms": statistics.median(latencies) * 1e3,
        "rtt_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "round_trips": len(latencies),
        "interval": interval,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a client's requests")
    args = parser.parse_args(argv)
    result = trio.run(main_async, args.peers, args.rounds, args.interval)
    print(f"{args.peers} DEALERs on one ROUTER (tcp, two processes), "
          f"each asking every {args.interval}s ({args.peers / args.interval:.0f} requests/s)")
    print(f"  idle connection, server heap   {result['idle_heap_bytes_per_connection'] / 1024:.1f} KiB")
    print(f"  round trip median              {result['rtt_median_ms']:.2f} ms")
    print(f"  round trip p99                 {result['rtt_p99_ms']:.2f} ms")
    print(f"  round trips                    {result['round_trips']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

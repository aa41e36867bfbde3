"""Throughput of a swapped pipe against an in-memory one.

    python benchmarks/swap.py [--count 200000] [--size 1024]

PUSH -> PULL over tcp in one process. In memory: sndhwm and rcvhwm hold every
message. Swapped: sndhwm=100 and a disk swap; the receiver starts only once
everything is sent, so nearly all of it goes to disk and back. Both report
messages per second from the first send to the last receive.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import trio

import triomq


async def run(count: int, size: int, swapped: bool) -> tuple[float, int]:
    payload = b"x" * size
    options = {"sndhwm": 100, "swap": 4 * count * (size + 64), "swap_dir": tempfile.mkdtemp()} if swapped else {"sndhwm": 0}
    async with triomq.open_socket(triomq.PULL, rcvhwm=0 if not swapped else 1000) as pull:
        ep = await pull.bind("tcp://127.0.0.1:0")
        async with triomq.open_socket(triomq.PUSH, **options) as push:
            await push.connect(ep)
            await push.wait_peers()
            start = time.perf_counter()
            msg = [payload]
            left = count
            while left:
                left -= await push.send_many([msg] * min(left, 256))
            spooled = push.statistics().spooled
            got = 0
            while got < count:
                got += len(await pull.recv_many())
            return count / (time.perf_counter() - start), spooled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    memory, _ = trio.run(run, args.count, args.size, False)
    swapped, spooled = trio.run(run, args.count, args.size, True)
    print(f"{args.count} x {args.size} B, PUSH->PULL tcp, batch calls")
    print(f"  in memory     {memory / 1e3:8.1f}k msg/s")
    print(f"  swapped       {swapped / 1e3:8.1f}k msg/s  ({spooled} of them spooled when sending ended)")
    print(f"  ratio         {swapped / memory:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""epgm:// (PGM over UDP multicast on 127.0.0.1): throughput and the cost of repairs.

    python benchmarks/multicast.py            # full counts
    python benchmarks/multicast.py --quick    # smaller counts

The sender and each receiver run in their own process. A run: the PUB binds,
the SUBs connect and wait until they have heard it (``wait_peers``), then the
PUB queues every message at once and the rate limit (``rate``) paces them. The
time of a run is from the first message handed to the PUB to the last one
received by the slowest receiver; throughput is counted once (not per
receiver). Loss is injected at each receiver (``multicast_faults_in`` drops
that share of the datagrams it receives, ``multicast_faults`` that share of
the NAKs it sends): the repair cost is what the sender multicast beyond the
original data, and the time it took.

No pyzmq column: pyzmq's wheels are built without OpenPGM, so libzmq's
epgm:// is not there to compare against.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTE = "no pyzmq comparison: pyzmq wheels are built without OpenPGM (no epgm:// in them)"


# --------------------------------------------------------------------------- peers


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _sender(ep: str, count: int, size: int, rate: int) -> None:
    import trio

    import triomq
    from triomq._engine._pgm_engine import multicast_statistics

    async with triomq.open_socket(triomq.PUB, rate=rate, sndhwm=0, linger=0) as pub:
        await pub.bind(ep)
        _emit(ready=True)
        await trio.to_thread.run_sync(sys.stdin.readline)  # "go"
        payload = os.urandom(size)
        start = time.time()
        batch = [[payload]] * 1000
        sent = 0
        while sent < count:
            sent += await pub.send_many(batch[: count - sent])
        _emit(start=start)
        await trio.to_thread.run_sync(sys.stdin.readline)  # "stop": receivers are done
        stats = multicast_statistics(pub)[0]
        pgm = stats.pgm
        _emit(
            datagrams=stats.datagrams_sent,
            bytes=stats.bytes_sent,
            odata=pgm.odata_packets,  # type: ignore[union-attr]
            rdata=pgm.rdata_packets,  # type: ignore[union-attr]
            ncf=pgm.ncf_packets,  # type: ignore[union-attr]
            naks=pgm.naks_received,  # type: ignore[union-attr]
        )


async def _receiver(ep: str, count: int, rate: int, drop: float, seed: int) -> None:
    import triomq
    from triomq._engine._pgm_engine import multicast_statistics
    from triomq._pgm import FaultInjector

    faults: dict[str, Any] = {}
    if drop:
        rng = random.Random(seed)
        faults["multicast_faults_in"] = FaultInjector(random.Random(rng.random()), drop=drop)
        faults["multicast_faults"] = FaultInjector(random.Random(rng.random()), drop=drop)
    async with triomq.open_socket(
        triomq.SUB, subscribe=[b""], rate=rate, rcvhwm=0, multicast_nak_retries=50, **faults
    ) as sub:
        await sub.connect(ep)
        await sub.wait_peers()
        _emit(ready=True)
        got = 0
        while got < count:
            got += len(await sub.recv_many(10_000))
        end = time.time()
        stats = multicast_statistics(sub)[0]
        pgm = stats.pgm
        _emit(
            end=end,
            got=got,
            lost=stats.loss_events,
            naks=pgm.naks_sent,  # type: ignore[union-attr]
            rdata=pgm.rdata_packets,  # type: ignore[union-attr]
            duplicates=pgm.duplicates,  # type: ignore[union-attr]
        )


# --------------------------------------------------------------------------- driver


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"peer {proc.args[2:]} exited with {proc.returncode}")
    return dict(json.loads(line))


def _tell(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()


_port = random.Random().randrange(20_000, 50_000)


def _endpoint() -> str:
    global _port
    _port += 1
    rng = random.Random()
    return f"epgm://127.0.0.1;239.193.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}:{_port}"


def run(receivers: int, count: int, size: int, rate: int, drop: float = 0.0) -> dict[str, Any]:
    """The median (by elapsed time) of ``REPEAT`` runs."""
    runs = sorted(
        (run_once(receivers, count, size, rate, drop) for _ in range(REPEAT)),
        key=lambda r: r["elapsed"],
    )
    return runs[len(runs) // 2]


REPEAT = 3


def run_once(receivers: int, count: int, size: int, rate: int, drop: float) -> dict[str, Any]:
    ep = _endpoint()
    sender = _spawn("sender", ep, str(count), str(size), str(rate))
    procs = [sender]
    try:
        _read(sender)
        subs = [
            _spawn("receiver", ep, str(count), str(rate), str(drop), str(k))
            for k in range(receivers)
        ]
        procs += subs
        for p in subs:
            _read(p)
        _tell(sender, "go")
        start = _read(sender)["start"]
        results = [_read(p) for p in subs]
        _tell(sender, "stop")
        sent = _read(sender)
        for p in procs:
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    elapsed = max(r["end"] for r in results) - start
    return {
        "elapsed": elapsed,
        "msgs_per_s": count / elapsed,
        "mb_per_s": count * size / elapsed / 1e6,
        "sender": sent,
        "receivers": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument(
        "--rate", type=int, default=400_000, help="rate (kbit/s) for throughput (default 400000)"
    )
    parser.add_argument(
        "--repair-rate",
        type=int,
        default=80_000,
        help="rate (kbit/s) for repair costs (default 80000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per row, median shown (3; 1 with --quick)"
    )
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat or (1 if args.quick else 3)
    scale = 5 if args.quick else 1
    rate = args.rate
    print(
        f"epgm:// on 127.0.0.1, one process per peer, {os.cpu_count()} CPUs,"
        f" median of {REPEAT} run(s) per row"
    )
    print(NOTE)
    print()
    print(f"throughput at rate={rate} kbit/s")
    print(
        "(RDATA/ODATA > 0: receivers fell behind, the kernel dropped datagrams, PGM repaired them)"
    )
    print(
        f"{'receivers':>9} {'size':>6} {'messages':>9} {'msg/s':>9} {'MB/s':>7} {'RDATA/ODATA':>12}"
    )
    for size, count in ((100, 100_000 // scale), (8_000, 10_000 // scale)):
        for receivers in (1, 3):
            r = run(receivers, count, size, rate)
            s = r["sender"]
            print(
                f"{receivers:>9} {size:>6} {count:>9} {r['msgs_per_s']:>9.0f} {r['mb_per_s']:>7.1f}"
                f" {s['rdata'] / max(1, s['odata']):>12.3f}"
            )
    print()
    rate = args.repair_rate
    print(
        f"repair cost at rate={rate} kbit/s (3 receivers, each losing this share of what it"
        " receives and of its NAKs)"
    )
    print(
        f"{'loss':>5} {'size':>6} {'messages':>9} {'MB/s':>7} {'slowdown':>9} {'extra bytes':>12}"
        f" {'RDATA/ODATA':>12} {'NAKs':>7} {'lost':>5}"
    )
    size, count = 1_000, 30_000 // scale
    base = run(3, count, size, rate)
    for drop in (0.0, 0.01, 0.10):
        r = base if drop == 0.0 else run(3, count, size, rate, drop)
        s = r["sender"]
        extra = s["bytes"] / base["sender"]["bytes"] - 1
        print(
            f"{drop:>5.0%} {size:>6} {count:>9} {r['mb_per_s']:>7.1f} {r['elapsed'] / base['elapsed']:>8.2f}x"
            f" {extra:>11.1%} {s['rdata'] / max(1, s['odata']):>12.3f} {s['naks']:>7}"
            f" {sum(x['lost'] for x in r['receivers']):>5}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("sender", "receiver"):
        import trio

        role, ep, *rest = sys.argv[1:]
        if role == "sender":
            trio.run(_sender, ep, int(rest[0]), int(rest[1]), int(rest[2]))
        else:
            trio.run(_receiver, ep, int(rest[0]), int(rest[1]), float(rest[2]), int(rest[3]))
    else:
        main()

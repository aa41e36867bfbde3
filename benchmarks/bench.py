"""triomq and pyzmq side by side, in the same run: throughput, latency, pub/sub fan-out.

    python benchmarks/bench.py                 # everything (a few minutes)
    python benchmarks/bench.py --quick         # smaller counts, fewer rows
    python benchmarks/bench.py throughput latency pubsub curve inproc

Each row runs each library in two separate processes (``peers.py``), three
times, and reports the median. Ratios are triomq / pyzmq for rates (higher is
better for triomq) and pyzmq / triomq for latency (higher is better too); the
inproc rows compare triomq's inproc with triomq's own tcp.
This machine is noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = [sys.executable, str(HERE / "peers.py")]
PYZMQ = "pyzmq"


def have_pyzmq() -> bool:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


def _endpoint(transport: str) -> str:
    if transport == "tcp":
        return "tcp://127.0.0.1:0"
    return f"ipc://{tempfile.mkdtemp(prefix='tqb')}/b"


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        PEERS + args, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)}
    )


def _read(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout)
        raise RuntimeError(f"peer {proc.args} exited with {proc.returncode} and no report")
    return dict(json.loads(line))


def _await_report(receiver: subprocess.Popen[str], sender: subprocess.Popen[str], grace: float = 30) -> dict[str, object] | None:
    """The receiver's report, or None if it is still waiting *grace* seconds after
    the sender finished (its missing messages will not come)."""
    assert receiver.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(receiver.stdout, selectors.EVENT_READ)
    deadline = None
    while not sel.select(1.0):
        if deadline is None and sender.poll() is not None:
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            return None
    return _read(receiver)


def pipeline(lib: str, transport: str, size: int, count: int, extra: list[str]) -> float:
    """PUSH -> PULL in two processes; messages per second at the receiver.

    A run whose receiver never gets every message is run again (seen with
    pyzmq on both sides over ipc, once in a few hundred runs: the PULL waits
    for messages its PUSH reported sent), and said so on stderr.
    """
    for _attempt in range(3):
        pull = _start(["pull", lib, _endpoint(transport), str(count), *extra])
        ep = str(_read(pull)["endpoint"])
        push = _start(["push", lib, ep, str(count), str(size), *extra])
        result = _await_report(pull, push)
        if result is not None:
            push.wait(120)
            pull.wait(120)
            return float(result["count"]) / float(result["seconds"])  # type: ignore[arg-type]
        print(f"  ({lib} {transport} {size} B: the receiver stalled short of {count} messages; run again)",
              file=sys.stderr)
        for proc in (pull, push):
            proc.kill()
            proc.wait()
    raise RuntimeError(f"{lib} PUSH->PULL over {transport} stalled three times")


def fanout(lib: str, transport: str, size: int, count: int, subs: int) -> float:
    """PUB -> SUBS subscribers; total messages per second delivered."""
    pub = _start(["pub", lib, _endpoint(transport), str(count), str(size), str(subs)])
    ep = str(_read(pub)["endpoint"])
    sub_procs = [_start(["sub", lib, ep, str(count)]) for _ in range(subs)]
    results = [_read(p) for p in sub_procs]
    _read(pub)
    assert pub.stdin is not None
    pub.stdin.write("\n")
    pub.stdin.flush()
    try:
        for p in [pub, *sub_procs]:
            p.wait(120)
    finally:
        for p in [pub, *sub_procs]:
            if p.poll() is None:
                p.kill()
    return sum(float(r["count"]) / float(r["seconds"]) for r in results)  # type: ignore[arg-type]


def inproc(lib: str, size: int, count: int) -> float:
    """PUSH -> PULL over inproc in one process; messages per second."""
    proc = _start(["inproc", lib, str(count), str(size)])
    result = _read(proc)
    proc.wait(60)
    return float(result["count"]) / float(result["seconds"])  # type: ignore[arg-type]


def latency(lib: str, transport: str, size: int, count: int) -> float:
    """REQ/REP round trip in two processes; median seconds."""
    rep = _start(["rep", lib, _endpoint(transport), str(count + 100)])
    ep = str(_read(rep)["endpoint"])
    req = _start(["req", lib, ep, str(count), str(size)])
    result = _read(req)
    req.wait(60)
    rep.wait(60)
    return float(result["median"])  # type: ignore[arg-type]


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def human(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def size_name(size: int) -> str:
    return f"{size // (1 << 20)} MiB" if size >= 1 << 20 else f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        print(f"{'benchmark':44} {'triomq':>14} {'pyzmq':>14} {'ratio':>8}", flush=True)

    def add(self, name: str, ours: str, theirs: str, ratio: float | None) -> None:
        r = f"{ratio:.2f}x" if ratio is not None else "-"
        self.rows.append((name, ours, theirs, r))
        print(f"{name:44} {ours:>14} {theirs:>14} {r:>8}", flush=True)

    def markdown(self) -> str:
        lines = ["| benchmark | triomq | pyzmq | ratio |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", default=["throughput", "latency", "pubsub", "inproc", "curve"])
    parser.add_argument("--quick", action="store_true", help="smaller counts and fewer rows")
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median is reported")
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    scale = 0.2 if args.quick else 1.0
    zmq_ok = have_pyzmq()
    table = Table()
    started = time.time()

    def both(name: str, ours: Callable[[], float], theirs: Callable[[], float], kind: str) -> None:
        a = median_of(runs, ours)
        b = median_of(runs, theirs) if zmq_ok else None
        if kind == "rate":
            table.add(name, f"{human(a)}/s", f"{human(b)}/s" if b else "-", a / b if b else None)
        elif kind == "bandwidth":
            table.add(name, f"{a / 1e6:.0f} MB/s", f"{b / 1e6:.0f} MB/s" if b else "-", a / b if b else None)
        else:
            table.add(name, f"{a * 1e6:.0f} us", f"{b * 1e6:.0f} us" if b else "-", b / a if b else None)

    if "throughput" in args.groups:
        sizes = [(64, 200_000), (1024, 100_000), (65536, 10_000), (1 << 20, 1000)]
        transports = ["tcp"] if args.quick else ["tcp", "ipc"]
        for transport in transports:
            for size, count in sizes:
                count = max(int(count * scale), 200)
                kind = "bandwidth" if size >= 65536 else "rate"
                mult = size if kind == "bandwidth" else 1
                both(
                    f"PUSH->PULL {transport} {size_name(size)}",
                    lambda t=transport, s=size, n=count, m=mult: pipeline("triomq", t, s, n, []) * m,
                    lambda t=transport, s=size, n=count, m=mult: pipeline(PYZMQ, t, s, n, []) * m,
                    kind,
                )
            both(
                f"PUSH->PULL {transport} 1 KiB, batch API",
                lambda t=transport: pipeline("triomq-batch", t, 1024, int(100_000 * scale), []),
                lambda t=transport: pipeline(PYZMQ, t, 1024, int(100_000 * scale), []),
                "rate",
            )
    if "inproc" in args.groups:
        count = int(200_000 * scale)
        for lib in ("triomq", "triomq-batch"):
            label = "per message" if lib == "triomq" else "batch API"
            inproc_rate = median_of(runs, lambda lib=lib: inproc(lib, 1024, count))
            tcp_rate = median_of(runs, lambda lib=lib: pipeline(lib, "tcp", 1024, count, []))
            table.add(
                f"inproc vs triomq tcp, 1 KiB, {label}",
                f"{human(inproc_rate)}/s",
                f"tcp {human(tcp_rate)}/s",
                inproc_rate / tcp_rate,
            )
    if "latency" in args.groups:
        count = int(20_000 * scale)
        # pyzmq's figure is measured once and compared with triomq and with the
        # floor of any Trio program (raw sockets, no ZMTP)
        theirs = median_of(runs, lambda: latency(PYZMQ, "tcp", 64, count)) if zmq_ok else 0.0
        for name, lib in (
            ("REQ/REP round trip tcp 64 B (median)", "triomq"),
            ("REQ/REP round trip tcp 64 B, busy_poll=200us (median)", "triomq-busy"),
            ("floor: raw echo on a Trio loop, tcp 68 B, no ZMTP (median)", "trio-raw"),
        ):
            both(name, lambda lib=lib: latency(lib, "tcp", 64, count), lambda: theirs, "latency")
    if "pubsub" in args.groups:
        for subs in (1, 10):
            count = int((100_000 if subs == 1 else 20_000) * scale)
            for lib, label in (("triomq", ""), ("triomq-batch", ", batch API")):
                both(
                    f"PUB->{subs} SUB tcp 64 B (total delivered){label}",
                    lambda lib=lib, n=count, k=subs: fanout(lib, "tcp", 64, n, k),
                    lambda n=count, k=subs: fanout(PYZMQ, "tcp", 64, n, k),
                    "rate",
                )
    if "curve" in args.groups:
        both(
            "PUSH->PULL tcp 1 KiB, CURVE",
            lambda: pipeline("triomq", "tcp", 1024, int(50_000 * scale), ["--curve"]),
            lambda: pipeline(PYZMQ, "tcp", 1024, int(50_000 * scale), ["--curve"]),
            "rate",
        )
    print(f"\n({time.time() - started:.0f} s; {runs} run(s) per row, median; ratio > 1 favours triomq)")
    if args.markdown:
        Path(args.markdown).write_text(table.markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

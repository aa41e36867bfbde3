"""The processes a benchmark runs: one side of a PUSH/PULL, PUB/SUB or REQ/REP pair,
for triomq or for pyzmq. Run as ``python benchmarks/peers.py ROLE LIB ...``;
prints one JSON line with its measurement.

Roles:
  pull   ENDPOINT COUNT       bind PULL, receive COUNT messages, report the rate
  push   ENDPOINT COUNT SIZE  connect PUSH, send COUNT messages of SIZE bytes
  sub    ENDPOINT COUNT       connect SUB (all topics), receive COUNT messages
  pub    ENDPOINT COUNT SIZE SUBS  bind PUB, wait for SUBS subscribers, publish
  rep    ENDPOINT COUNT       bind REP, echo COUNT requests
  req    ENDPOINT COUNT SIZE  connect REQ, time COUNT round trips

With LIB "triomq-batch", push/pull use the batch calls (send_many/recv_many).
With LIB "triomq-busy", rep/req set busy_poll (200 µs): receivers spin
before they sleep, trading CPU for latency.
With LIB "trio-raw", rep/req are the floor of a request/reply round trip for
any Trio program: raw non-blocking tcp sockets on a Trio loop, no ZMTP, each
side waking once per message (the bytes of a REQ's 64-byte request).
Options after the positional ones: --curve (CURVE encryption on both sides).
"""

from __future__ import annotations

import json
import sys
import time

#: the busy_poll of LIB "triomq-busy", in seconds
BUSY_POLL = 200e-6

# fixed test keys (public, secret) so both processes agree without talking
SERVER_KEYS = (b"JNvdT.Zr<Xq<}H[PuSc(7/!)7<w7)k@l3$BqbzHb", b"zufoLGfo5II=fa$co!jV68m/Z6BRVCxkr+pH!XRq")
CLIENT_KEYS = (b"tm{9s[eB$&z32?knY#111QsW)cku}37z}WMB4z*j", b">t.t:lIjiW:CKP>o[&Q}GEa^NJ&$?-{)L}<]7SFJ")


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def zmq_options(sock, curve: bool, server: bool) -> None:  # type: ignore[no-untyped-def]
    import zmq

    sock.setsockopt(zmq.LINGER, -1)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.RCVHWM, 1000)
    if curve:
        if server:
            sock.curve_server = True
            sock.curve_secretkey = SERVER_KEYS[1]
            sock.curve_publickey = SERVER_KEYS[0]
        else:
            sock.curve_serverkey = SERVER_KEYS[0]
            sock.curve_publickey = CLIENT_KEYS[0]
            sock.curve_secretkey = CLIENT_KEYS[1]


def run_zmq(role: str, endpoint: str, count: int, size: int, subs: int, curve: bool) -> None:
    import zmq

    ctx = zmq.Context()
    kind = {"pull": zmq.PULL, "push": zmq.PUSH, "sub": zmq.SUB, "pub": zmq.PUB, "rep": zmq.REP, "req": zmq.REQ}[role]
    sock = ctx.socket(kind)
    zmq_options(sock, curve, server=role in ("pull", "pub", "rep"))
    if role in ("pull", "pub", "rep"):
        if role == "pub":
            sock = _zmq_pub_socket(ctx, sock, curve)
        sock.bind(endpoint)
        report(ready=True, endpoint=sock.getsockopt_string(zmq.LAST_ENDPOINT))
    else:
        if role == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
    payload = b"x" * size
    if role == "pull" or role == "sub":
        sock.recv()
        start = time.perf_counter()
        for _ in range(count - 1):
            sock.recv()
        elapsed = time.perf_counter() - start
        report(count=count - 1, seconds=elapsed)
    elif role == "push":
        for _ in range(count):
            sock.send(payload)
    elif role == "pub":
        # XPUB: wait until every subscriber has subscribed, then publish
        for _ in range(subs):
            sock.recv()
        for _ in range(count):
            sock.send(payload)
        # keep going until the subscribers are done (they may miss none: HWM is large)
        report(done=True)
        sys.stdin.readline()
    elif role == "rep":
        for _ in range(count):
            sock.send(sock.recv())
    elif role == "req":
        for _ in range(100):  # warm up
            sock.send(payload)
            sock.recv()
        times = []
        for _ in range(count):
            t = time.perf_counter()
            sock.send(payload)
            sock.recv()
            times.append(time.perf_counter() - t)
        report(count=count, seconds=sum(times), median=sorted(times)[len(times) // 2])
    # a SUB's close could otherwise wait on a publisher that is gone; senders
    # must linger until their messages are out
    sock.close(linger=0 if role == "sub" else None)
    ctx.term()


def _zmq_pub_socket(ctx, sock, curve):  # type: ignore[no-untyped-def]
    import zmq

    sock.close()
    xpub = ctx.socket(zmq.XPUB)
    zmq_options(xpub, curve, server=True)
    xpub.setsockopt(zmq.SNDHWM, 0)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one report per subscriber, to count them
    return xpub


async def run_triomq(role: str, lib: str, endpoint: str, count: int, size: int, subs: int, curve: bool) -> None:
    import trio

    import triomq

    batch = lib == "triomq-batch"
    kind = {"pull": triomq.PULL, "push": triomq.PUSH, "sub": triomq.SUB, "pub": triomq.XPUB,
            "rep": triomq.REP, "req": triomq.REQ}[role]
    options: dict[str, object] = {}
    if curve:
        if role in ("pull", "pub", "rep"):
            options.update(curve_server=True, curve_secretkey=SERVER_KEYS[1], curve_publickey=SERVER_KEYS[0])
        else:
            options.update(curve_serverkey=SERVER_KEYS[0], curve_publickey=CLIENT_KEYS[0],
                           curve_secretkey=CLIENT_KEYS[1])
    if lib == "triomq-busy":
        options["busy_poll"] = BUSY_POLL
    if role == "pub":
        options["sndhwm"] = 0
        options["xpub_verbose"] = True  # one report per subscriber, to count them
    if role == "sub":
        options["subscribe"] = [b""]
    payload = b"x" * size
    async with triomq.open_socket(kind, **options) as sock:
        if role in ("pull", "pub", "rep"):
            report(ready=True, endpoint=await sock.bind(endpoint))
        else:
            await sock.connect(endpoint)
        if role in ("pull", "sub"):
            await sock.recv_multipart()
            start = time.perf_counter()
            left = count - 1
            if batch:
                while left:
                    left -= len(await sock.recv_many(min(left, 1024)))
            else:
                for _ in range(left):
                    await sock.recv_multipart()
            report(count=count - 1, seconds=time.perf_counter() - start)
        elif role == "push":
            if batch:
                msg = [payload]
                left = count
                while left:
                    left -= await sock.send_many([msg] * min(left, 256))
            else:
                for _ in range(count):
                    await sock.send(payload)
        elif role == "pub":
            for _ in range(subs):
                await sock.recv()
            if batch:
                msg = [payload]
                left = count
                while left:
                    left -= await sock.send_many([msg] * min(left, 256))
            else:
                for _ in range(count):
                    await sock.send(payload)
            report(done=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
        elif role == "rep":
            for _ in range(count):
                await sock.send_multipart(await sock.recv_multipart())
        elif role == "req":
            for _ in range(100):
                await sock.send(payload)
                await sock.recv()
            times = []
            for _ in range(count):
                t = time.perf_counter()
                await sock.send(payload)
                await sock.recv()
                times.append(time.perf_counter() - t)
            report(count=count, seconds=sum(times), median=sorted(times)[len(times) // 2])


async def run_raw(role: str, endpoint: str, count: int, size: int) -> None:
    """REQ/REP's floor on Trio: echo raw bytes over tcp, one wake-up per side per message."""
    import os
    import socket

    import trio

    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    if role == "rep":
        listener = socket.socket()
        listener.bind((host, 0 if port == "*" else int(port)))
        listener.listen()
        report(ready=True, endpoint=f"tcp://{host}:{listener.getsockname()[1]}")
        conn, _ = await trio.to_thread.run_sync(listener.accept)
        listener.close()
    else:
        conn = socket.create_connection((host, int(port)))
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = conn.fileno()
    if role == "rep":
        while True:
            await trio.lowlevel.wait_readable(fd)
            data = os.read(fd, 65536)
            if not data:
                break
            os.write(fd, data)
    else:
        request = b"\x01\x00\x00" + bytes([size]) + b"x" * size  # delimiter + body frames
        times = []
        for i in range(count + 100):
            t = time.perf_counter()
            os.write(fd, request)
            got = 0
            while got < len(request):
                await trio.lowlevel.wait_readable(fd)
                got += len(os.read(fd, 65536))
            if i >= 100:
                times.append(time.perf_counter() - t)
        report(count=count, seconds=sum(times), median=sorted(times)[len(times) // 2])
    conn.close()


async def run_inproc(lib: str, count: int, size: int) -> None:
    """PUSH -> PULL over inproc:// in one process (triomq only; batch with triomq-batch)."""
    import trio

    import triomq

    payload = b"x" * size
    async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
        await pull.bind("inproc://bench")
        await push.connect("inproc://bench")

        async def produce() -> None:
            if lib == "triomq-batch":
                msg = [payload]
                left = count
                while left:
                    left -= await push.send_many([msg] * min(left, 256))
            else:
                for _ in range(count):
                    await push.send(payload)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            left = count
            if lib == "triomq-batch":
                while left:
                    left -= len(await pull.recv_many(min(left, 1024)))
            else:
                for _ in range(count):
                    await pull.recv_multipart()
        report(count=count, seconds=time.perf_counter() - start)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args[0] == "inproc":
        import trio

        trio.run(run_inproc, args[1], int(args[2]), int(args[3]))
        return
    curve = "--curve" in sys.argv
    role, lib, endpoint, count = args[0], args[1], args[2], int(args[3])
    size = int(args[4]) if len(args) > 4 else 0
    subs = int(args[5]) if len(args) > 5 else 1
    if lib == "pyzmq":
        run_zmq(role, endpoint, count, size, subs, curve)
    elif lib == "trio-raw":
        import trio

        trio.run(run_raw, role, endpoint, count, size)
    else:
        import trio

        trio.run(run_triomq, role, lib, endpoint, count, size, subs, curve)


if __name__ == "__main__":
    main()

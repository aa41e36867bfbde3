"""Long-running fuzzing of every parser of peer input (not part of CI; the
hypothesis tests in tests/ are its short version).

    python benchmarks/fuzz.py --seconds 600          # about a million cases per target
    python benchmarks/fuzz.py --cases 1000000

Targets: the ZMTP connection (greeting, framing, commands, NULL handshake), the
PLAIN and CURVE server handshakes (authentication requests answered yes or no,
so the rest of the handshake is reached), the NULL and PLAIN client sides, the
PGM packet parser, the spool record decoder. Bytes are fed in random pieces,
some read into the decoder's buffer for large frames, as the session does. Inputs are random bytes and mutations (bit flips, truncation,
splices, length-field tweaks) of valid traffic. Only the library's own
protocol errors are allowed; anything else, a hang (a case over 1 s) or memory
growth is reported and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Callable

from triomq._errors import TriomqError
from triomq._mechanisms._curve import CurveMechanism
from triomq._mechanisms._null import NullMechanism
from triomq._mechanisms._plain import PlainMechanism
from triomq._mechanisms._z85 import curve_keypair, z85_decode
from triomq._pgm import BadPacket, decode_packet_untrusted
from triomq._socket_type import SocketType
from triomq._swap import CorruptRecord, decode_records_untrusted, encode_record
from triomq._zmtp._connection import ZMTPConnection
from triomq._zmtp._events import NEED_DATA, AuthenticationRequested


def _pump(a: ZMTPConnection, b: ZMTPConnection) -> bytes:
    """Run a handshake between two connections; returns every byte b received."""
    seen = b""
    for _ in range(8):
        out = a.data_to_send()
        if out:
            seen += out
            b.receive_data(out)
        while b.next_event() is not NEED_DATA:
            pass
        back = b.data_to_send()
        if back:
            a.receive_data(back)
        while a.next_event() is not NEED_DATA:
            pass
    return seen


def _valid_zmtp_traffic() -> bytes:
    a = ZMTPConnection(SocketType.DEALER, NullMechanism(), routing_id=b"id")
    b = ZMTPConnection(SocketType.ROUTER, NullMechanism())
    seen = _pump(a, b)
    return seen + a.encode_message([b"", b"x" * 300, b"y"]) + a.encode_ping(1.0, b"ctx")


def _valid_plain_client_traffic() -> bytes:
    """What a PLAIN client sends a server that lets it in: HELLO, INITIATE, messages."""
    client = ZMTPConnection(
        SocketType.REQ, PlainMechanism(as_server=False, authenticate=False, username=b"u", password=b"p")
    )
    server = ZMTPConnection(SocketType.REP, PlainMechanism(as_server=True, authenticate=True))
    seen = b""
    for _ in range(8):
        out = client.data_to_send()
        seen += out
        if out:  # (b"" would say the stream closed)
            server.receive_data(out)
        while (event := server.next_event()) is not NEED_DATA:
            if isinstance(event, AuthenticationRequested):
                server.authentication_result(True)
        if back := server.data_to_send():
            client.receive_data(back)
        while client.next_event() is not NEED_DATA:
            pass
    return seen + client.encode_message([b"", b"x" * 300]) + client.encode_ping(1.0, b"ctx")


def _server_traffic() -> tuple[bytes, bytes]:
    """What a NULL and a PLAIN server send their client: greeting, handshake, messages."""
    streams = []
    for mech in ("NULL", "PLAIN"):
        if mech == "NULL":
            client = ZMTPConnection(SocketType.DEALER, NullMechanism())
            server = ZMTPConnection(SocketType.ROUTER, NullMechanism())
        else:
            client = ZMTPConnection(
                SocketType.DEALER,
                PlainMechanism(as_server=False, authenticate=False, username=b"u", password=b"p"),
            )
            server = ZMTPConnection(SocketType.ROUTER, PlainMechanism(as_server=True, authenticate=True))
        seen = b""
        for _ in range(8):
            if out := client.data_to_send():  # (b"" would say the stream closed)
                server.receive_data(out)
            while (event := server.next_event()) is not NEED_DATA:
                if isinstance(event, AuthenticationRequested):
                    server.authentication_result(True)
            back = server.data_to_send()
            seen += back
            if back:
                client.receive_data(back)
            while client.next_event() is not NEED_DATA:
                pass
        seen += server.encode_message([b"id", b"", b"y" * 300]) + server.encode_subscription(b"t", True)
        streams.append(seen)
    return streams[0], streams[1]


def _valid_curve_client_traffic() -> tuple[bytes, bytes, bytes]:
    spub, ssec = curve_keypair()
    cpub, csec = curve_keypair()
    client = ZMTPConnection(
        SocketType.REQ,
        CurveMechanism(as_server=False, authenticate=False, public_key=z85_decode(cpub),
                       secret_key=z85_decode(csec), server_key=z85_decode(spub)),
    )
    server = ZMTPConnection(
        SocketType.REP,
        CurveMechanism(as_server=True, authenticate=False, public_key=z85_decode(spub),
                       secret_key=z85_decode(ssec)),
    )
    return _pump(client, server), spub, ssec


def mutate(rng: random.Random, data: bytes) -> bytes:
    if not data or rng.random() < 0.1:
        return rng.randbytes(rng.randint(0, 300))
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(b)) if b else 0
        if op < 0.4 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            del b[i:]
        elif op < 0.7:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op < 0.85 and b:
            b[i] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 0x7F, 0xFF])
        else:
            j = rng.randrange(len(b)) if b else 0
            b[i:i] = b[j : j + rng.randint(1, 32)]
    return bytes(b)


def feed_connection(make: Callable[[], ZMTPConnection], data: bytes, rng: random.Random) -> None:
    conn = make()
    conn.data_to_send()
    pos = 0
    while pos < len(data):  # any split
        step = rng.randint(1, 64)
        view = conn.gather_buffer() if rng.random() < 0.5 else None
        if view is not None:
            # the rest of a large frame read straight into the decoder's buffer
            step = min(step, len(view), len(data) - pos)
            view[:step] = data[pos : pos + step]
            del view
            conn.gathered(step)
        else:
            conn.receive_data(data[pos : pos + step])
        pos += step
        bulk = rng.random() < 0.5  # the session's fast path first, as it reads
        for _ in range(10_000):
            if bulk:
                conn.read_messages([], rng.randint(1, 8))
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, AuthenticationRequested):
                # answered, as the session does, so the rest of the handshake is reached
                conn.authentication_result(rng.random() < 0.8, user_id=b"u")
        else:
            raise AssertionError("connection produced endless events")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--cases", type=int, default=0, help="stop after this many cases per target")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    zmtp = _valid_zmtp_traffic()
    curve_hello, spub, ssec = _valid_curve_client_traffic()
    null_server, plain_server = _server_traffic()
    pgm_packets = _pgm_samples()
    records = b"".join(encode_record(m) for m in ([b"a"], [b"", b"b" * 100], [b"c"] * 5))

    def zmtp_target(data: bytes) -> None:
        feed_connection(lambda: ZMTPConnection(SocketType.ROUTER, NullMechanism(), maxmsgsize=4096), data, rng)

    def plain_target(data: bytes) -> None:
        feed_connection(
            lambda: ZMTPConnection(SocketType.REP, PlainMechanism(as_server=True, authenticate=True)), data, rng
        )

    def null_client_target(data: bytes) -> None:
        feed_connection(lambda: ZMTPConnection(SocketType.DEALER, NullMechanism()), data, rng)

    def plain_client_target(data: bytes) -> None:
        feed_connection(
            lambda: ZMTPConnection(
                SocketType.DEALER,
                PlainMechanism(as_server=False, authenticate=False, username=b"u", password=b"p"),
            ),
            data,
            rng,
        )

    def curve_target(data: bytes) -> None:
        feed_connection(
            lambda: ZMTPConnection(
                SocketType.REP,
                CurveMechanism(as_server=True, authenticate=False, public_key=z85_decode(spub),
                               secret_key=z85_decode(ssec)),
            ),
            data,
            rng,
        )

    def pgm_target(data: bytes) -> None:
        try:
            decode_packet_untrusted(data)
        except BadPacket:
            pass

    def records_target(data: bytes) -> None:
        try:
            decode_records_untrusted(data, final=rng.random() < 0.5)
        except CorruptRecord:
            pass

    targets: list[tuple[str, Callable[[bytes], None], list[bytes]]] = [
        ("zmtp connection", zmtp_target, [zmtp]),
        ("PLAIN server", plain_target, [_valid_plain_client_traffic(), zmtp.replace(b"NULL", b"PLAIN")]),
        ("NULL client", null_client_target, [null_server]),
        ("PLAIN client", plain_client_target, [plain_server]),
        ("CURVE server", curve_target, [curve_hello]),
        ("PGM packet parser", pgm_target, pgm_packets),
        ("spool records", records_target, [records]),
    ]
    failures = 0
    print(f"{'target':20} {'cases':>10} {'protocol errors':>16} {'max case':>9} {'max RSS':>9}")
    for name, target, seeds in targets:
        deadline = time.monotonic() + args.seconds / len(targets)
        cases = errors = 0
        slowest = 0.0
        while time.monotonic() < deadline and (not args.cases or cases < args.cases):
            data = mutate(rng, rng.choice(seeds))
            t = time.perf_counter()
            try:
                target(data)
            except TriomqError:
                errors += 1
            except Exception as exc:  # anything else is a finding
                failures += 1
                print(f"  {name}: {type(exc).__name__}: {exc} on input {data[:80]!r}")
            slowest = max(slowest, time.perf_counter() - t)
            if slowest > 1.0:
                failures += 1
                print(f"  {name}: a case took {slowest:.1f}s (hang?) on input {data[:80]!r}")
                slowest = 0.0
            cases += 1
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:20} {cases:>10} {errors:>16} {slowest * 1000:>7.1f}ms {rss:>7.0f}MB", flush=True)
    print("no failures" if not failures else f"{failures} failure(s)")
    return 1 if failures else 0


def _pgm_samples() -> list[bytes]:
    import triomq._pgm as pgm

    samples = []
    for name in dir(pgm):
        obj = getattr(pgm, name)
        if name.startswith("sample_") and callable(obj):
            samples.append(obj())
    if samples:
        return samples
    # build a few real packets with a sender
    sender = pgm.PgmSender(
        gsi=b"\x01\x02\x03\x04\x05\x06", sport=1000, dport=5555, group="239.192.1.1",
        source_addr="127.0.0.1", max_tpdu=1500, rate_kbps=100_000, recovery_ivl=10.0,
        rng=random.Random(1),
    )
    packets = list(sender.on_timer(0.0))
    packets += sender.send([b"hello", b"world"], 0.0)
    packets += sender.send([b"x" * 3000], 0.0)
    packets += sender.on_timer(1.0)
    return packets or [b"\x00" * 32]


if __name__ == "__main__":
    sys.exit(main())

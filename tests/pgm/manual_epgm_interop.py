"""Manual wire check of triomq._pgm against libzmq + OpenPGM (not collected by pytest).

Needs: Linux, root (it sniffs with AF_PACKET, as OpenPGM turns multicast loop
off), Debian's ``libzmq5`` (built with OpenPGM), a multicast-capable interface.

    python tests/pgm/manual_epgm_interop.py eth0 [drop_every]

1. libzmq PUB on epgm -> sniffed datagrams -> PgmReceiver (our NAKs are sent
   to OpenPGM for every ``drop_every``-th ODATA we pretend to lose).
2. PgmSender -> UDP multicast (loop on) -> libzmq SUB, answering OpenPGM's NAKs
   for every ``drop_every``-th ODATA we do not transmit.
"""

from __future__ import annotations

import ctypes
import fcntl
import random
import socket
import struct
import sys
import threading
import time

from triomq._pgm import PgmReceiver, PgmSender, decode_packet_untrusted

_zmq = ctypes.CDLL("libzmq.so.5", use_errno=True)
_zmq.zmq_ctx_new.restype = ctypes.c_void_p
_zmq.zmq_socket.restype = ctypes.c_void_p
_zmq.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
for _name in ("zmq_bind", "zmq_connect"):
    getattr(_zmq, _name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_zmq.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_zmq.zmq_recv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_zmq.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_zmq.zmq_getsockopt.argtypes = [
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_size_t),
]
PUB, SUB, SNDMORE, SUBSCRIBE, RATE, RCVMORE, RCVTIMEO = 1, 2, 2, 6, 8, 13, 27


def _setint(sock: int, opt: int, value: int) -> None:
    v = ctypes.c_int(value)
    assert _zmq.zmq_setsockopt(sock, opt, ctypes.byref(v), 4) == 0


def _zsend(sock: int, frames: list[bytes]) -> None:
    for i, f in enumerate(frames):
        assert _zmq.zmq_send(sock, f, len(f), SNDMORE if i < len(frames) - 1 else 0) >= 0


def _zrecv(sock: int) -> list[bytes] | None:
    frames = []
    buf = ctypes.create_string_buffer(1 << 20)
    while True:
        n = _zmq.zmq_recv(sock, buf, len(buf), 0)
        if n < 0:
            return None
        frames.append(buf.raw[:n])
        more, size = ctypes.c_int(), ctypes.c_size_t(4)
        _zmq.zmq_getsockopt(sock, RCVMORE, ctypes.byref(more), ctypes.byref(size))
        if not more.value:
            return frames


def _iface_addr(ifname: str) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    packed = struct.pack("256s", ifname.encode()[:15])
    return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, packed)[20:24])  # SIOCGIFADDR


MESSAGES = [
    [b"hello"],
    [b"multi", b"part", b""],
    [b"x" * 5000],
    [bytes(range(256)) * 300],
    *([b"m%d" % i] for i in range(100)),
    [b"y" * 253],
    [b"z" * 254],
    [b"w" * 255],
]


def libzmq_to_us(ifname: str, drop_every: int) -> None:
    group, port = "239.192.1.7", 5557
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    sniff.bind((ifname, 3))
    sniff.settimeout(0.05)
    ctx = _zmq.zmq_ctx_new()
    pub = _zmq.zmq_socket(ctx, PUB)
    _setint(pub, RATE, 10_000)
    assert _zmq.zmq_bind(pub, f"epgm://{ifname};{group}:{port}".encode()) == 0
    rx = PgmReceiver(port, group, random.Random(1), rate_kbps=10_000)
    naks = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[list[bytes]] = []
    frags: dict[int, dict[int, bytes]] = {}
    seen = dropped = 0

    def take(out: object) -> None:
        for o in out.outgoing:  # type: ignore[attr-defined]
            naks.sendto(o.data, (o.dest, port))
        got.extend(out.messages)  # type: ignore[attr-defined]

    time.sleep(0.5)
    for m in MESSAGES:
        _zsend(pub, m)
    deadline = time.time() + 5
    while time.time() < deadline and len(got) < len(MESSAGES):
        if rx.next_deadline() <= time.monotonic():
            take(rx.on_timer(time.monotonic()))
        try:
            pkt = sniff.recv(65536)
        except TimeoutError:
            continue
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != 17 or socket.inet_ntoa(pkt[16:20]) != group:
            continue
        (iplen, ipid, ff) = struct.unpack(">HHH", pkt[2:8])
        body = pkt[ihl:iplen]
        if ff & 0x3FFF:  # IP fragment: reassemble
            frags.setdefault(ipid, {})[(ff & 0x1FFF) * 8] = body
            if ff & 0x2000:
                continue
            parts = frags.pop(ipid)
            body = b"".join(parts[o] for o in sorted(parts))
        if struct.unpack(">H", body[2:4])[0] != port:
            continue
        data = body[8:]
        if type(decode_packet_untrusted(data)).__name__ == "Odata":
            seen += 1
            if drop_every and seen % drop_every == 0:
                dropped += 1
                continue
        take(rx.on_packet(data, socket.inet_ntoa(pkt[12:16]), time.monotonic()))
    print("libzmq -> triomq:", got == MESSAGES, f"({len(got)}/{len(MESSAGES)}, dropped {dropped})")
    print("  ", rx.stats)


def us_to_libzmq(ifname: str, drop_every: int) -> None:
    group, port = "239.192.1.8", 5558
    iface = _iface_addr(ifname)
    ctx = _zmq.zmq_ctx_new()
    sub = _zmq.zmq_socket(ctx, SUB)
    _setint(sub, RATE, 10_000)
    _setint(sub, RCVTIMEO, 3000)
    assert _zmq.zmq_setsockopt(sub, SUBSCRIBE, b"", 0) == 0
    assert _zmq.zmq_connect(sub, f"epgm://{ifname};{group}:{port}".encode()) == 0
    time.sleep(0.5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    up.bind((iface, port))  # NAKs come unicast to our NLA
    up.settimeout(0.001)
    sender = PgmSender(
        bytes.fromhex("abcdef012345"), 4321, port, group, iface, 1400, 10_000, 10, random.Random(5)
    )
    lock = threading.Lock()
    counts = {"odata": 0, "dropped": 0}
    stop = False

    def emit(datagrams: list[bytes]) -> None:
        for d in datagrams:
            if type(decode_packet_untrusted(d)).__name__ == "Odata":
                counts["odata"] += 1
                if drop_every and counts["odata"] % drop_every == 0:
                    counts["dropped"] += 1
                    continue
            tx.sendto(d, (group, port))

    def pump() -> None:
        while not stop:
            with lock:
                if sender.next_deadline() <= time.monotonic():
                    emit(sender.on_timer(time.monotonic()))
            try:
                data = up.recv(65536)
            except TimeoutError:
                continue
            with lock:
                emit(sender.on_packet(data, time.monotonic()))

    thread = threading.Thread(target=pump)
    thread.start()
    time.sleep(0.3)
    for m in MESSAGES:
        while True:
            with lock:
                delay = sender.send_delay(time.monotonic())
                if delay == 0:
                    emit(sender.send(m, time.monotonic()))
                    break
            time.sleep(delay)
    got = []
    while len(got) < len(MESSAGES):
        r = _zrecv(sub)
        if r is None:
            break
        got.append(r)
    stop = True
    thread.join()
    print("triomq -> libzmq:", got == MESSAGES, f"({len(got)}/{len(MESSAGES)}, {counts})")
    print("  ", sender.stats)


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "eth0"
    every = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    libzmq_to_us(name, every)
    us_to_libzmq(name, every)

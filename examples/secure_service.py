"""An encrypted, authenticated request-reply service (CURVE + key files).

Run it with ``python examples/secure_service.py`` (add a directory to keep the key
files; by default they go into a temporary directory that is removed at the end).
It exits with status 0 when everything went as expected.

What happens:

1. Key generation. ``keygen()`` makes a CURVE key pair per party with
   ``triomq.auth.create_certificates``: ``NAME.key`` holds the public key (safe to
   hand out), ``NAME.key_secret`` both keys (keep it private). The files use
   czmq's and pyzmq's format, so libzmq programs can share them.
2. Authorisation. The server allows the clients whose *public* key file is in its
   ``authorized/`` directory (alice and bob; mallory's is not there), and only from
   127.0.0.1: ``auth.all_of(auth.allow_addresses(...), auth.curve_key_directory(...))``.
   The key file's name becomes the client's user id.
3. The service. A REP socket with ``curve_server=True`` answers every request. All
   traffic is encrypted; a client must know the server's public key to connect.
4. The clients. alice and bob get their answers. mallory's handshake is refused:
   both sides see a ``HandshakeFailed`` event with ``FailureKind.AUTH``, and the
   service carries on serving the others.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import trio

import triomq
from triomq import auth

ADDRESS = "tcp://127.0.0.1:0"


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (private) into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    return auth.create_certificates(directory, name)


def secret_of(secret_file: Path) -> bytes:
    _, secret = auth.load_certificate(secret_file)
    assert secret is not None, f"{secret_file} holds no secret key"
    return secret


def report(event: triomq.MonitorEvent, log: list[str]) -> None:
    if isinstance(event, triomq.HandshakeSucceeded):
        log.append(f"server: {event.user_id} connected from {event.peer_address}")
    elif isinstance(event, triomq.HandshakeFailed):
        log.append(f"server: refused a client ({event.kind.value}): {event.reason}")
    else:
        return
    print(log[-1])


async def watch_server(
    events: trio.MemoryReceiveChannel[triomq.MonitorEvent], log: list[str]
) -> None:
    async for event in events:
        report(event, log)


async def serve(rep: triomq.Socket) -> None:
    while True:
        request = await rep.recv()
        await rep.send(b"hello, " + request)


async def ask(endpoint: str, server_public: bytes, keys: Path, name: str) -> list[bytes]:
    options = {
        "curve_serverkey": server_public,
        "curve_secretkey": secret_of(keys / f"{name}.key_secret"),
        "linger": 0,
    }
    async with triomq.open_socket(triomq.REQ, **options) as req:
        await req.connect(endpoint)
        replies = []
        for question in (b"what time is it?", b"goodbye"):
            await req.send(name.encode() + b": " + question)
            replies.append(await req.recv())
            print(f"{name}: got {replies[-1].decode()!r}")
        return replies


async def refused(
    endpoint: str, server_public: bytes, keys: Path, name: str
) -> triomq.HandshakeFailed:
    options = {
        "curve_serverkey": server_public,
        "curve_secretkey": secret_of(keys / f"{name}.key_secret"),
        "linger": 0,
        "reconnect_ivl": None,  # one attempt is enough for the demonstration
    }
    async with triomq.open_socket(triomq.REQ, **options) as req, req.monitor() as events:
        await req.connect(endpoint)
        async for event in events:
            if isinstance(event, triomq.HandshakeFailed):
                print(f"{name}: refused ({event.kind.value}): {event.reason}")
                return event
    raise AssertionError("the monitor closed without a verdict")


async def main(keys: Path) -> int:
    # 1. key files
    server_public_file, server_secret_file = keygen(keys / "server", "server")
    for name in ("alice", "bob", "mallory"):
        keygen(keys / "clients", name)
    authorized = keys / "authorized"
    authorized.mkdir(exist_ok=True)
    for name in ("alice", "bob"):
        shutil.copy(keys / "clients" / f"{name}.key", authorized)
    print(f"keys written to {keys}")
    server_public, _ = auth.load_certificate(server_public_file)

    # 2. and 3. the service
    policy = auth.all_of(auth.allow_addresses("127.0.0.1"), auth.curve_key_directory(authorized))
    log: list[str] = []
    with trio.fail_after(20):
        async with (
            triomq.open_socket(
                triomq.REP,
                curve_server=True,
                curve_secretkey=secret_of(server_secret_file),
                authenticator=policy,
                handshake_ivl=5,
                linger=0,
            ) as rep,
            rep.monitor() as events,
            trio.open_nursery() as nursery,
        ):
            endpoint = await rep.bind(ADDRESS)
            print(f"service listening on {endpoint}")
            nursery.start_soon(watch_server, events, log)
            nursery.start_soon(serve, rep)

            # 4. the clients
            alice = await ask(endpoint, server_public, keys / "clients", "alice")
            mallory = await refused(endpoint, server_public, keys / "clients", "mallory")
            bob = await ask(endpoint, server_public, keys / "clients", "bob")
            nursery.cancel_scope.cancel()
            # events the watcher had no time to see
            while True:
                try:
                    report(events.receive_nowait(), log)
                except trio.WouldBlock:
                    break

    ok = (
        alice == [b"hello, alice: what time is it?", b"hello, alice: goodbye"]
        and bob[-1] == b"hello, bob: goodbye"
        and mallory.kind is triomq.FailureKind.AUTH
        and any("alice connected" in line for line in log)
        and any("CURVE key not allowed" in line for line in log)
    )
    print("all as expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(trio.run(main, Path(sys.argv[1])))
    with tempfile.TemporaryDirectory(prefix="triomq-keys-") as tmp:
        status = trio.run(main, Path(tmp))
    sys.exit(status)

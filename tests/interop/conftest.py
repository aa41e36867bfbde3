"""Shared fixtures for the pyzmq (libzmq 4.3) interop suite.

pyzmq is used through its blocking API, one call at a time, in a worker thread
(``trio.to_thread.run_sync``). Every pyzmq socket has LINGER 0 and 5 s send and
receive timeouts, so a misbehaving peer makes a test fail instead of hanging.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

import triomq

#: pyzmq send/receive timeout, in milliseconds
ZMQ_TIMEOUT_MS = 5000
#: every test body runs inside ``trio.fail_after(TEST_TIMEOUT)``
TEST_TIMEOUT = 20


@pytest.fixture(scope="module")
def zctx() -> Iterator[zmq.Context[Any]]:
    """One libzmq context per test module, terminated at the end of the module."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.term()


@pytest.fixture(params=["tcp", "ipc"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[True, False], ids=["triomq_binds", "libzmq_binds"])
def triomq_binds(request: pytest.FixtureRequest) -> bool:
    return request.param  # type: ignore[no-any-return]


class Peers:
    """Makes pyzmq sockets and endpoints for one test, and closes them afterwards."""

    def __init__(self, ctx: zmq.Context[Any], transport: str, ipc_dir: Path) -> None:
        self.ctx = ctx
        self.transport = transport
        self.ipc_dir = ipc_dir
        self._sockets: list[zmq.Socket[Any]] = []
        self._names = itertools.count()
        #: the HandshakeSucceeded event of the last link()
        self.handshake: triomq.HandshakeSucceeded | None = None

    # ------------------------------------------------------------ endpoints

    def endpoint(self) -> str:
        """A fresh endpoint to bind (tcp with a wildcard port, or a new ipc path)."""
        if self.transport == "tcp":
            return "tcp://127.0.0.1:*"
        return f"ipc://{self.ipc_dir}/s{next(self._names)}.ipc"

    # ------------------------------------------------------------ pyzmq side

    def zsocket(self, socket_type: int, **options: Any) -> zmq.Socket[Any]:
        """A blocking pyzmq socket with LINGER 0 and 5 s timeouts, closed at teardown.

        *options* are pyzmq option names (``ROUTING_ID=b"x"``) and values.
        """
        sock = self.ctx.socket(socket_type)
        self._sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, ZMQ_TIMEOUT_MS)
        sock.setsockopt(zmq.SNDTIMEO, ZMQ_TIMEOUT_MS)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        return sock

    def zbind(self, sock: zmq.Socket[Any]) -> str:
        sock.bind(self.endpoint())
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    @staticmethod
    async def z(fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking pyzmq call in a worker thread."""
        return await trio.to_thread.run_sync(fn, *args)

    @staticmethod
    def zpoll_recv(sock: zmq.Socket[Any], timeout_ms: int) -> list[bytes] | None:
        """(Blocking) the next message, or None if none comes within *timeout_ms*."""
        if sock.poll(timeout_ms, zmq.POLLIN):
            return sock.recv_multipart(zmq.NOBLOCK)  # type: ignore[no-any-return]
        return None

    # ------------------------------------------------------------ both sides

    @asynccontextmanager
    async def link(
        self,
        tri_type: triomq.SocketType,
        zmq_type: int,
        *,
        triomq_binds: bool,
        tri_options: dict[str, Any] | None = None,
        zmq_options: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[triomq.Socket, zmq.Socket[Any]]]:
        """A triomq socket and a pyzmq socket, one bound and the other connected to it.

        Returns once the triomq side has completed its handshake with the peer,
        so messages sent afterwards are not lost to slow joiners.
        """
        opts: dict[str, Any] = {"linger": 0}
        opts.update(tri_options or {})
        zsock = self.zsocket(zmq_type, **(zmq_options or {}))
        async with triomq.open_socket(tri_type, **opts) as tsock:
            async with tsock.monitor() as events:
                if triomq_binds:
                    endpoint = await tsock.bind(self.endpoint())
                    await self.z(zsock.connect, endpoint)
                else:
                    endpoint = await self.z(self.zbind, zsock)
                    await tsock.connect(endpoint)
                self.handshake = await wait_for_event(events, triomq.HandshakeSucceeded)
            yield tsock, zsock

    def close_all(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()


async def wait_for_event(
    events: trio.MemoryReceiveChannel[triomq.MonitorEvent],
    kind: type[triomq.MonitorEvent],
    predicate: Callable[[Any], bool] = lambda event: True,
) -> Any:
    """The next monitor event of type *kind* satisfying *predicate* (others are skipped)."""
    async for event in events:
        if isinstance(event, kind) and predicate(event):
            return event
    raise AssertionError(f"monitor closed before a {kind.__name__} event")


@pytest.fixture
def peers(zctx: zmq.Context[Any], transport: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    # a short directory: ipc paths are limited to ~107 bytes
    p = Peers(zctx, transport, tmp_path_factory.mktemp("ipc"))
    try:
        yield p
    finally:
        p.close_all()


@pytest.fixture
def wait_event() -> Callable[..., Any]:
    """``await wait_event(events, triomq.HandshakeFailed, predicate)``."""
    return wait_for_event


class Zmtp:
    """Raw ZMTP 3.x bytes and plain streams, for tests that play a peer by hand."""

    SIGNATURE = b"\xff" + bytes(7) + b"\x01\x7f"

    @staticmethod
    def greeting(
        mechanism: bytes = b"NULL", *, major: int = 3, minor: int = 1, signature: bytes = SIGNATURE
    ) -> bytes:
        return signature + bytes((major, minor)) + mechanism.ljust(20, b"\x00") + b"\x00" + bytes(31)

    @staticmethod
    def frame(body: bytes, flags: int = 0) -> bytes:
        if len(body) > 255:
            return bytes((flags | 0x02,)) + struct.pack(">Q", len(body)) + body
        return bytes((flags, len(body))) + body

    @classmethod
    def command(cls, name: bytes, data: bytes = b"") -> bytes:
        return cls.frame(bytes((len(name),)) + name + data, 0x04)

    @classmethod
    def ready(cls, socket_type: bytes) -> bytes:
        prop = b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
        return cls.command(b"READY", prop)

    @staticmethod
    async def open_raw(endpoint: str) -> trio.abc.Stream:
        """A plain stream to a bound endpoint (tcp or ipc)."""
        scheme, _, rest = endpoint.partition("://")
        if scheme == "ipc":
            return await trio.open_unix_socket(rest)
        host, _, port = rest.rpartition(":")
        return await trio.open_tcp_stream(host, int(port))

    @staticmethod
    async def read_until_closed(stream: trio.abc.Stream) -> bytes:
        """Everything the peer sends until it closes the connection."""
        data = bytearray()
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by the peer: closed too
                return bytes(data)
            if not chunk:
                return bytes(data)
            data += chunk

    @staticmethod
    async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = await stream.receive_some(n - len(data))
            assert chunk, f"connection closed after {len(data)} of {n} bytes"
            data += chunk
        return bytes(data)

    @classmethod
    async def read_frame(cls, stream: trio.abc.Stream) -> tuple[int, bytes]:
        """One frame: (flags, body)."""
        flags, size = await cls.read_exactly(stream, 2)
        if flags & 0x02:
            size = struct.unpack(">Q", bytes((size,)) + await cls.read_exactly(stream, 7))[0]
        return flags, await cls.read_exactly(stream, size) if size else b""


@pytest.fixture
def zmtp() -> type[Zmtp]:
    return Zmtp

"""Helpers shared by the socket tests."""

from __future__ import annotations

import socket

import trio

import triomq
from triomq._mechanisms._null import NullMechanism
from triomq._zmtp._connection import ZMTPConnection
from triomq._zmtp._events import NEED_DATA


async def wait_for_event(events: trio.MemoryReceiveChannel[triomq.MonitorEvent], kind: type) -> triomq.MonitorEvent:
    """The next monitor event of type *kind* (others are skipped)."""
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"monitor closed before a {kind.__name__} event")


async def wait_subscribed(pub: triomq.Socket, sub: triomq.Socket, topic: bytes = b"") -> None:
    """Publish probes until *sub* receives one, then drain: the subscription has arrived."""
    probe = topic + b"\xffprobe"
    while True:
        await pub.send(probe)
        with trio.move_on_after(0.01):
            while True:
                msg = await sub.recv_multipart()
                if msg == [probe]:
                    break
            break
    # drain late probes
    while True:
        try:
            sub.recv_multipart_nowait()
        except trio.WouldBlock:
            break


def connection_socket(sock: triomq.Socket) -> socket.socket:
    """The kernel socket of *sock*'s only connection (under TLS too)."""
    (pipe,) = [p for p in sock._pipes if p.connected]
    stream = pipe.link.stream  # type: ignore[union-attr]
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket  # type: ignore[no-any-return]


async def raw_handshake(
    stream: trio.abc.Stream,
    socket_type: triomq.SocketType,
    *,
    minor: int = 1,
    max_bytes: int | None = None,
) -> tuple[ZMTPConnection, list[object]]:
    """Complete a NULL handshake by hand over *stream*, as a ZMTP 3.<minor>
    peer of *socket_type* built from the codec (reading at most *max_bytes* at
    a time). Returns the connection and the events it saw on the way."""
    conn = ZMTPConnection(socket_type, NullMechanism())
    greeting = bytearray(conn.data_to_send())
    greeting[11] = minor
    await stream.send_all(bytes(greeting))
    events: list[object] = []
    while conn.peer_socket_type is None:
        conn.receive_data(await stream.receive_some(max_bytes))
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
        if out := conn.data_to_send():
            await stream.send_all(out)
    return conn, events

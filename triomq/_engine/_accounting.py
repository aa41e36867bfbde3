"""Which written messages the peer is known to have taken.

ZMTP has no acknowledgements: once a message is written to a socket, the
sender cannot tell from the protocol whether the peer ever got it. When a
connection breaks, the messages still in the kernel's buffers are gone, and
ZeroMQ loses them without a word. triomq asks the kernel instead:

* over TCP (Linux), ``tcp_info.tcpi_bytes_acked`` says how many bytes the
  peer's kernel acknowledged, even after a reset. Every write is logged as
  (end offset, messages); at a break, the messages whose bytes were not all
  acknowledged are counted as lost.
* over TLS on TCP, the same, with each write's end offset read off the
  kernel (acknowledged + still queued bytes) once the write is handed over,
  since records add bytes of their own.
* over Unix sockets, the peer's kernel holds our unread bytes in its own
  queue. A peer that closes with bytes unread makes our side see
  ECONNRESET; a clean end of file means it read everything. ``SIOCOUTQ``
  (bytes not yet read by the peer) is sampled as we write, so at an
  ECONNRESET the messages after the last sample are counted as lost (an
  over-count by what the peer read since then).

A write's messages are counted together: a break in the middle of one write
counts all of that write's messages (at most ``WRITE_BATCH``) as lost, so the
figure can exceed the true loss by part of one write, never fall below what
the kernel can tell. Bytes the peer's kernel acknowledged but its
application never read (a peer killed with a full receive buffer) cannot be
seen from here. Elsewhere (inproc has no kernel buffers; off Linux), only
queued and half-done writes are counted.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import sys
from array import array
from bisect import bisect_right

import trio

#: ioctl that returns the bytes in a socket's send queue (Linux: TIOCOUTQ)
_SIOCOUTQ = 0x5411
#: offset of tcpi_bytes_acked (u64) in struct tcp_info (Linux 4.1+)
_BYTES_ACKED = 120
_TCP_INFO_SIZE = _BYTES_ACKED + 8
#: check the kernel's figure every this many logged writes, to keep the log short
_TRIM_EVERY = 64


def _outq(sock: trio.socket.SocketType) -> int:
    buf = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def _bytes_acked(sock: trio.socket.SocketType) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(info) < _TCP_INFO_SIZE:
        raise OSError(errno.ENOPROTOOPT, "tcp_info has no bytes_acked")
    return int(struct.unpack_from("Q", info, _BYTES_ACKED)[0])


class WriteLog:
    """Logs a connection's writes and tells, at its end, how many messages
    the peer cannot have received."""

    def __init__(self, sock: trio.socket.SocketType, *, encrypted: bool = False) -> None:
        self._sock = sock
        #: a TLS stream writes more bytes than it is given: each write's end is
        #: then read off the kernel (acknowledged + still queued), not counted
        self._encrypted = encrypted
        self._written = 0  # bytes written since the log began
        # per write: its end offset and its messages (arrays of machine ints: no
        # object per entry for the garbage collector to walk, on every connection)
        self._ends = array("q")
        self._counts = array("q")
        self._confirmed = 0  # bytes the peer is known to have taken
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        # bytes_acked counts from the connection's start; what was written before
        # the log began (the handshake) is acknowledged or still queued
        self._base = _bytes_acked(sock) + _outq(sock) if self._tcp and not encrypted else 0
        #: TCP's figure outlives the connection, so it is read now and then;
        #: a Unix socket's only while connected, so it is read at every write
        self._every = _TRIM_EVERY if self._tcp else 1

    @classmethod
    def for_stream(cls, stream: trio.abc.Stream) -> WriteLog | None:
        """A log for *stream*, or None where the kernel cannot tell."""
        if not sys.platform.startswith("linux"):
            return None
        encrypted = False
        if isinstance(stream, trio.SSLStream) and type(stream.transport_stream) is trio.SocketStream:
            stream, encrypted = stream.transport_stream, True
        if type(stream) is not trio.SocketStream:
            return None
        try:
            log = cls(stream.socket, encrypted=encrypted)
        except (OSError, AttributeError):
            return None
        return None if encrypted and not log._tcp else log

    def wrote(self, nbytes: int, messages: int) -> None:
        """Record one complete write of *messages* messages in *nbytes* bytes."""
        if self._encrypted:
            try:
                self._written = _bytes_acked(self._sock) + _outq(self._sock)
            except OSError:
                return
        else:
            self._written += nbytes
        if not messages:
            return
        self._ends.append(self._written)
        self._counts.append(messages)
        if len(self._ends) >= self._every:
            self._sample()

    def _sample(self) -> None:
        try:
            if self._tcp:
                confirmed = _bytes_acked(self._sock) - self._base
            else:
                # (the kernel's figure includes buffer overhead: an over-estimate
                # of what is unread, so losses are over- rather than under-counted)
                confirmed = self._written - _outq(self._sock)
        except OSError:
            return
        self._confirmed = max(self._confirmed, confirmed)
        done = bisect_right(self._ends, self._confirmed)
        if done:
            del self._ends[:done]
            del self._counts[:done]

    def unconfirmed(self, error: BaseException | None) -> int:
        """Messages written that the peer's kernel never took, after the
        connection ended with *error* (None for a clean end of file)."""
        if self._tcp:
            self._sample()  # the acknowledged count outlives a reset
        elif error is None:
            return 0  # a clean end of file: the peer read all we sent before it closed
        # else the peer closed with bytes unread (we see ECONNRESET or EPIPE) and
        # they were discarded: what we last saw unread is lost
        return sum(self._counts[bisect_right(self._ends, self._confirmed) :])

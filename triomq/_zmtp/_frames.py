"""ZMTP frames: the flags byte, short and long sizes, an encoder and an incremental decoder."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .._errors import RemoteProtocolError

MORE = 0x01
LONG = 0x02
COMMAND = 0x04
_VALID_FLAGS = MORE | LONG | COMMAND

_LONG_HEADER = struct.Struct(">BQ")
_SHORT_HEADERS = [bytes((0, n)) for n in range(256)]
_SHORT_HEADERS_MORE = [bytes((MORE, n)) for n in range(256)]

Buffer = bytes | bytearray | memoryview


def frame_header(size: int, flags: int = 0) -> bytes:
    """The header of a frame of *size* bytes with *flags* (MORE and/or COMMAND)."""
    if size < 256:
        return bytes((flags, size))
    return _LONG_HEADER.pack(flags | LONG, size)


def encode_frame(body: Buffer, flags: int = 0) -> bytes:
    """One whole frame (header and body)."""
    return frame_header(len(body), flags) + bytes(body)


def encode_message_into(out: list[Buffer], frames: Sequence[Buffer]) -> None:
    """Append the header and body of each frame of a message to *out*.

    Bodies are appended as they are (no copy), so a caller can join them once
    for a whole batch of messages, or hand large bodies to a vectored write.
    """
    last = len(frames) - 1
    for i, body in enumerate(frames):
        n = len(body)
        if n < 256:
            out.append(_SHORT_HEADERS_MORE[n] if i < last else _SHORT_HEADERS[n])
        else:
            out.append(_LONG_HEADER.pack(LONG | MORE if i < last else LONG, n))
        out.append(body)


def encode_message(frames: Sequence[Buffer]) -> bytes:
    """A whole message as bytes."""
    out: list[Buffer] = []
    encode_message_into(out, frames)
    return b"".join(out)


class FrameDecoder:
    """Turns a byte stream into ``(flags, body)`` frames.

    Feed it bytes with :meth:`feed`; :meth:`next_frame` returns a frame or
    ``None`` when more bytes are needed. A frame's announced size is checked
    against *max_frame_size* before any of its body is buffered, so a peer
    cannot make it buffer more than one frame's worth beyond that limit.
    """

    __slots__ = ("_buf", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int | None = None) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame_size = max_frame_size

    def feed(self, data: Buffer) -> None:
        """Add bytes received from the peer."""
        if self._pos and self._pos == len(self._buf):
            self._buf = bytearray(data)
            self._pos = 0
        else:
            self._buf += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet decoded."""
        return len(self._buf) - self._pos

    def take(self, n: int) -> bytes | None:
        """Take exactly *n* raw bytes (used for the greeting), or None if fewer are buffered."""
        if len(self._buf) - self._pos < n:
            return None
        data = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return data

    def peek(self) -> bytes:
        """All buffered, undecoded bytes, without consuming them."""
        return bytes(self._buf[self._pos :])

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole frame, or None if it has not fully arrived.

        Raises:
            RemoteProtocolError: invalid flags, or a frame above the size limit.
        """
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        flags = buf[pos]
        if flags & ~_VALID_FLAGS:
            raise RemoteProtocolError(f"malformed frame: invalid flags 0x{flags:02x}")
        if flags & LONG:
            if avail < 9:
                return None
            size = int.from_bytes(buf[pos + 1 : pos + 9], "big")
            if size >> 63:
                raise RemoteProtocolError("malformed frame: size has its top bit set")
            start = pos + 9
        else:
            size = buf[pos + 1]
            start = pos + 2
        limit = self.max_frame_size
        if limit is not None and size > limit:
            raise RemoteProtocolError(f"frame of {size} bytes exceeds maxmsgsize {limit}")
        end = start + size
        if len(buf) < end:
            return None
        body = bytes(buf[start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end > 65536 and end * 2 > len(buf):
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return flags & (MORE | COMMAND), body

"""ZMTP frames: the flags byte, short and long sizes, an encoder and an incremental decoder."""

from __future__ import annotations

import struct
import threading
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
    encode_messages_into(out, (frames,))


#: a batch of at least this many messages first tries the bulk path
_BULK_ENCODE = 16


def encode_messages_into(out: list[Buffer], messages: Sequence[Sequence[Buffer]]) -> None:
    """:func:`encode_message_into` for each message."""
    if len(messages) >= _BULK_ENCODE:
        try:
            # single-frame messages under 256 bytes, the bulk of most traffic:
            # headers looked up and interleaved with the bodies in bulk; any
            # other message raises here, and the loop below takes the batch
            bodies = [body for (body,) in messages]
            heads = [_SHORT_HEADERS[len(body)] for body in bodies]
        except (ValueError, IndexError):
            pass
        else:
            pairs: list[Buffer] = [b""] * (2 * len(bodies))
            pairs[::2] = heads
            pairs[1::2] = bodies
            out += pairs
            return
    short = _SHORT_HEADERS
    more = _SHORT_HEADERS_MORE
    append = out.append
    for frames in messages:
        if len(frames) == 1:
            body = frames[0]
        else:
            if not frames:
                continue
            for body in frames[:-1]:
                n = len(body)
                append(more[n] if n < 256 else _LONG_HEADER.pack(LONG | MORE, n))
                append(body)
            body = frames[-1]
        n = len(body)
        append(short[n] if n < 256 else _LONG_HEADER.pack(LONG, n))
        append(body)


def encode_message(frames: Sequence[Buffer]) -> bytes:
    """A whole message as bytes."""
    out: list[Buffer] = []
    encode_message_into(out, frames)
    return b"".join(out)


#: a frame body at least this large is gathered in pieces, not by re-copying the buffer
_BIG_FRAME = 64 * 1024
#: a big frame up to this size can be read straight into a buffer that is
#: reused for later frames (see FrameDecoder.gather_buffer)
SCRATCH_MAX = 4 * 1024 * 1024
_SCRATCH_UNIT = 64 * 1024  # (sizes are rounded up to this, so buffers fit later frames)
#: buffers free for the next big frame of any connection, a few per thread
#: (so memory stays bounded, and loops in different threads never share one)
_scratch = threading.local()
_SCRATCH_POOL_SIZE = 4


def _scratch_pool() -> list[bytearray]:
    try:
        pool: list[bytearray] = _scratch.pool
    except AttributeError:
        pool = _scratch.pool = []
    return pool


def _take_scratch(size: int) -> bytearray:
    pool = _scratch_pool()
    for i, buf in enumerate(pool):
        if len(buf) >= size:
            return pool.pop(i)
    return bytearray(-(-size // _SCRATCH_UNIT) * _SCRATCH_UNIT)


def _give_back_scratch(buf: bytearray) -> None:
    pool = _scratch_pool()
    if len(pool) < _SCRATCH_POOL_SIZE:
        pool.append(buf)


class FrameDecoder:
    """Turns a byte stream into ``(flags, body)`` frames.

    Feed it bytes with :meth:`feed`; :meth:`next_frame` returns a frame or
    ``None`` when more bytes are needed; :meth:`take_messages` decodes whole
    data messages in bulk. A frame's announced size is checked against
    *max_frame_size* before any of its body is buffered, so a peer cannot make
    it buffer more than one frame's worth beyond that limit.

    The buffer is an immutable ``bytes`` with a read position: fed chunks are
    used as they are when nothing is left over, frame bodies are sliced out
    with one copy, and a large frame that arrives in pieces is gathered in a
    list and joined once. An I/O layer that can read into memory may instead
    read the rest of a large frame straight into :meth:`gather_buffer` (a
    buffer reused from frame to frame, from a small pool shared by all
    connections: no join, and no fresh memory for the kernel to fill each
    time) and report it with :meth:`gathered`.
    """

    __slots__ = (
        "_buf",
        "_filled",
        "_flags",
        "_need",
        "_pieces",
        "_pieces_size",
        "_pos",
        "_ready",
        "_scratch",
        "limit_name",
        "max_frame_size",
    )

    def __init__(self, max_frame_size: int | None = None) -> None:
        self._buf = b""
        self._pos = 0
        #: pieces of a large incomplete frame, and how many bytes make it whole
        self._pieces: list[bytes] = []
        self._pieces_size = 0
        self._need = 0
        self._flags = 0
        #: a large frame gathered from pieces, waiting to be taken
        self._ready: tuple[int, bytes] | None = None
        #: the pooled buffer a large frame is being read into, and how much of
        #: the frame it holds; -1 when not gathering into it
        self._scratch: bytearray | None = None
        self._filled = -1
        self.max_frame_size = max_frame_size
        #: what *max_frame_size* is, as a refusal names it
        self.limit_name = "maxmsgsize"

    def feed(self, data: Buffer) -> None:
        """Add bytes received from the peer."""
        data = bytes(data) if type(data) is not bytes else data
        if self._filled >= 0:
            view = self.gather_buffer()
            assert view is not None  # (gathering into the buffer already)
            n = min(len(view), len(data))
            view[:n] = data[:n]
            self.gathered(n)
            if n < len(data):
                self.feed(data[n:])
            return
        if self._pieces:
            pieces = self._pieces
            pieces.append(data)
            self._pieces_size += len(data)
            extra = self._pieces_size - self._need
            if extra >= 0:
                # the body is complete: join it once, keep what follows as the buffer
                last = pieces[-1]
                if extra:
                    pieces[-1] = last[: len(last) - extra]
                    self._buf = last[len(last) - extra :]
                else:
                    self._buf = b""
                self._pos = 0
                self._ready = (self._flags, b"".join(pieces))
                self._pieces = []
                self._pieces_size = 0
            return
        pos = self._pos
        buf = self._buf
        if pos == len(buf):
            self._buf = data
        else:
            self._buf = buf[pos:] + data if pos else buf + data
        self._pos = 0

    def _wait_for(self, flags: int, start: int, end: int) -> None:
        """The frame whose body is ``buf[start:end]`` is incomplete: gather big ones
        in pieces (its header is consumed; its body is joined once, when whole)."""
        if end - start >= _BIG_FRAME:
            rest = self._buf[start:]
            self._pieces = [rest]
            self._pieces_size = len(rest)
            self._need = end - start
            self._flags = flags & (MORE | COMMAND)
            self._buf = b""
            self._pos = 0

    @property
    def wanted(self) -> int:
        """Bytes still missing from a large frame being gathered (0 if none)."""
        if self._filled >= 0:
            return self._need - self._filled
        return self._need - self._pieces_size if self._pieces else 0

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet decoded."""
        ready = len(self._ready[1]) if self._ready is not None else 0
        gathered = max(self._filled, 0)
        return len(self._buf) - self._pos + self._pieces_size + gathered + ready

    def gather_buffer(self) -> memoryview | None:
        """Where the rest of a large frame being gathered may be read to, or None.

        The caller reads at most ``len()`` bytes into it (all belong to the
        frame) and reports how many with :meth:`gathered`. Only frames up to
        :data:`SCRATCH_MAX` bytes; larger ones are fed as usual.
        """
        if self._filled < 0:
            if not self._pieces or self._need > SCRATCH_MAX:
                return None
            scratch = self._scratch = _take_scratch(self._need)
            filled = 0
            for piece in self._pieces:
                scratch[filled : filled + len(piece)] = piece
                filled += len(piece)
            self._pieces = []
            self._pieces_size = 0
            self._filled = filled
        assert self._scratch is not None
        return memoryview(self._scratch)[self._filled : self._need]

    def gathered(self, n: int) -> None:
        """*n* more bytes of the large frame were read into :meth:`gather_buffer`."""
        filled = self._filled + n
        if not 0 <= self._filled <= filled <= self._need:
            raise ValueError(f"gathered({n}) does not fit the frame being gathered")
        self._filled = filled
        if filled == self._need:
            scratch = self._scratch
            assert scratch is not None
            self._ready = (self._flags, bytes(memoryview(scratch)[:filled]))
            self._scratch = None
            _give_back_scratch(scratch)
            self._filled = -1
            self._buf = b""
            self._pos = 0

    def drained(self) -> bool:
        """No received byte is left to decode (a large frame being gathered
        counts as drained: the rest of it has not arrived)."""
        return self._ready is None and self._pos == len(self._buf)

    def take(self, n: int) -> bytes | None:
        """Take exactly *n* raw bytes (used for the greeting), or None if fewer are buffered."""
        if len(self._buf) - self._pos < n:
            return None
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def peek(self) -> bytes:
        """All buffered, undecoded bytes, without consuming them."""
        return self._buf[self._pos :]

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole frame, or None if it has not fully arrived.

        Raises:
            RemoteProtocolError: invalid flags, or a frame above the size limit.
        """
        if self._ready is not None:
            frame, self._ready = self._ready, None
            return frame
        if self._pieces or self._filled >= 0:
            return None
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
            raise RemoteProtocolError(f"frame of {size} bytes exceeds {self.limit_name} {limit}")
        end = start + size
        if len(buf) < end:
            self._wait_for(flags, start, end)
            return None
        self._pos = end
        return flags & (MORE | COMMAND), buf[start:end]

    def take_messages(
        self, out: list[list[bytes]], parts: list[bytes], limit: int, max_size: int | None, size: int
    ) -> tuple[list[bytes], int]:
        """Decode whole data messages into *out*, at most *limit* of them.

        *parts* and *size* carry a multipart message (and its byte count) that
        is not complete yet across calls; the updated pair is returned. Stops
        at the first frame it does not handle (a command, anything invalid or
        over *max_size*), leaving it for :meth:`next_frame`.
        """
        ready = self._ready
        if ready is not None and limit > 0:
            body = ready[1]
            if ready[0] & COMMAND or (max_size is not None and size + len(body) > max_size):
                # (a large frame gathered for next_frame, which checked only
                # its own size: the message's size is checked here)
                return parts, size
            self._ready = None
            size += len(body)
            if ready[0] & MORE:
                parts.append(body)
            else:
                parts.append(body)
                out.append(parts)
                parts = []
                size = 0
                limit -= 1
        if self._pieces or self._filled >= 0:
            return parts, size
        buf = self._buf
        pos = self._pos
        end = len(buf)
        count = 0
        append = out.append
        # data frames only (flags 0, MORE, LONG, LONG|MORE): a short header is
        # tested first, being the bulk of most traffic; a command or invalid
        # flags, a short frame not all here, or one over max_size stop the loop
        # and are left to next_frame
        cap = (1 << 62) if max_size is None else max_size
        # (a frame under 256 bytes alone cannot exceed a cap above 255, so the
        # fast loop checks the size of multipart messages only)
        short_ok = cap > 255
        last = end - 1
        while count < limit:
            if short_ok:
                # frames under 256 bytes, the bulk of most traffic, take the
                # fewest steps; the rest of the loop takes whatever else comes
                # (one frame at a time), or stops
                while pos < last:
                    flags = buf[pos]
                    if flags > MORE:
                        break
                    stop = pos + 2 + buf[pos + 1]
                    if stop > end:
                        break
                    if flags or parts:
                        fsize = stop - pos - 2
                        if size + fsize > cap:
                            break
                        parts.append(buf[pos + 2 : stop])
                        pos = stop
                        if flags:
                            size += fsize
                            continue
                        append(parts)
                        parts = []
                        size = 0
                    else:
                        append([buf[pos + 2 : stop]])
                        pos = stop
                    count += 1
                    if count == limit:
                        break
                if count == limit:
                    break
            if end - pos < 2:
                break
            flags = buf[pos]
            if flags <= MORE:
                fsize = buf[pos + 1]
                start = pos + 2
                stop = start + fsize
                if stop > end:
                    break
            else:
                if flags & 0xFC or end - pos < 9:
                    break
                fsize = int.from_bytes(buf[pos + 1 : pos + 9], "big")
                if fsize >> 63:
                    break
                start = pos + 9
                stop = start + fsize
                if stop > end and size + fsize <= cap:
                    # a long frame still arriving: gathered from here on
                    self._pos = pos
                    self._wait_for(flags, start, stop)
                    return parts, size
            if size + fsize > cap:
                break
            body = buf[start:stop]
            pos = stop
            if flags & MORE:
                parts.append(body)
                size += fsize
                continue
            if parts:
                parts.append(body)
                append(parts)
                parts = []
            else:
                append([body])
            size = 0
            count += 1
        self._pos = pos
        return parts, size

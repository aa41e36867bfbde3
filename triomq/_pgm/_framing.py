"""libzmq's framing of ZeroMQ messages inside PGM APDUs.

Each APDU (what ``pgm_send`` is given, usually exactly one TSDU) is::

    offset (2, big-endian) | ZMTP 1.0 encoded frames ...

``offset`` is where, after those two bytes, the first *message* that begins in
this APDU starts, or ``0xFFFF`` when none does (the APDU only continues a
message).  A receiver that joins late, or that lost data, skips APDUs until one
has an offset and starts decoding there.

Frames use libzmq's v1 encoding: a length that counts the flags byte plus the
body -- one byte when it is below 255, else ``0xFF`` and an 8-byte big-endian
length -- then the flags byte (bit 0 MORE), then the body.

This module imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["NO_OFFSET", "MessageDecoder", "MessageEncoder", "encode_frame_header"]

NO_OFFSET = 0xFFFF
FLAG_MORE = 0x01
_MAX_PAYLOAD = 0xFFFF


def encode_frame_header(body_len: int, more: bool) -> bytes:
    """The v1 (ZMTP 1.0) header of one frame."""
    size = body_len + 1
    flags = FLAG_MORE if more else 0
    if size < 0xFF:
        return bytes((size, flags))
    return b"\xff" + size.to_bytes(8, "big") + bytes((flags,))


class MessageEncoder:
    """Packs messages into APDU payloads of at most ``max_payload`` bytes.

    ``max_payload`` includes the 2-byte offset; libzmq uses the transport's
    maximum fragment-free TSDU (``PGM_MSS``).  Each :meth:`encode` call starts a
    new payload: messages passed together share payloads.
    """

    def __init__(self, max_payload: int) -> None:
        if not 3 <= max_payload <= _MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in [3, {_MAX_PAYLOAD}]")
        self.max_payload = max_payload

    def encode(self, messages: Iterable[Sequence[bytes]]) -> list[bytes]:
        parts: list[bytes] = []
        starts: list[int] = []
        pos = 0
        for message in messages:
            frames = list(message)
            if not frames:
                raise ValueError("a message has at least one frame")
            starts.append(pos)
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                body = bytes(frame)
                header = encode_frame_header(len(body), i < last)
                parts.append(header)
                parts.append(body)
                pos += len(header) + len(body)
        if not starts:
            return []
        stream = b"".join(parts)
        cap = self.max_payload - 2
        out: list[bytes] = []
        si = 0
        nstarts = len(starts)
        for a in range(0, len(stream), cap):
            b = a + cap
            while si < nstarts and starts[si] < a:
                si += 1
            offset = starts[si] - a if si < nstarts and starts[si] < b else NO_OFFSET
            out.append(offset.to_bytes(2, "big") + stream[a:b])
        return out


class _FramingError(Exception):
    pass


class MessageDecoder:
    """Reassembles messages from APDU payloads, in order.

    Starts unjoined: payloads are skipped until one has an offset, and decoding
    starts there (late join).  :meth:`reset` (after a loss) drops any partial
    message and unjoins, so the stream resumes at the next whole message.  A
    malformed stream (zero length, a frame over ``max_msg_size``, offsets that
    contradict the frames) counts in ``errors`` and resets likewise; a partial
    message is never delivered.
    """

    def __init__(self, max_msg_size: int | None = None) -> None:
        self.max_msg_size = max_msg_size
        self.joined = False
        self.errors = 0
        self._frames: list[bytes] = []
        self._hdr = bytearray()
        self._remaining = -1  # body bytes still to read; -1 while reading a header
        self._parts: list[bytes] = []
        self._more = False

    @property
    def in_message(self) -> bool:
        """True when a message has been started but not completed."""
        return bool(self._frames or self._hdr or self._remaining >= 0)

    def reset(self) -> None:
        self.joined = False
        self._drop_partial()

    def _drop_partial(self) -> None:
        self._frames = []
        self._hdr = bytearray()
        self._remaining = -1
        self._parts = []
        self._more = False

    def _error(self) -> None:
        self.errors += 1
        self.reset()

    def feed(self, payload: bytes) -> list[list[bytes]]:
        """Decode one APDU payload; returns the messages it completes."""
        out: list[list[bytes]] = []
        if len(payload) < 2:
            self._error()
            return out
        offset = (payload[0] << 8) | payload[1]
        body = memoryview(payload)[2:]
        n = len(body)
        if offset != NO_OFFSET and offset > n:
            self._error()
            return out
        try:
            if not self.joined:
                if offset == NO_OFFSET:
                    return out
                self.joined = True
                self._parse(body, offset, n, out, False)
                return out
            if not self.in_message:
                if offset == NO_OFFSET:
                    if n:  # a message starts at 0, but the sender says none does
                        self._error()
                    return out
                if offset != 0:
                    self.errors += 1  # bytes before the offset belong to nothing
                self._parse(body, offset, n, out, False)
                return out
            limit = n if offset == NO_OFFSET else offset
            pos, completed = self._parse(body, 0, limit, out, True)
            if offset == NO_OFFSET:
                if completed and pos < n:  # another message starts here, unannounced
                    self._error()
                return out
            if not completed or pos != offset:
                # The continuation does not end where the next message starts.
                self.errors += 1
                self._drop_partial()
            self._parse(body, offset, n, out, False)
        except _FramingError:
            self._error()
        return out

    def _parse(
        self,
        body: memoryview,
        pos: int,
        end: int,
        out: list[list[bytes]],
        stop_after_one: bool,
    ) -> tuple[int, bool]:
        """Decode ``body[pos:end]``; with ``stop_after_one``, stop when a message completes."""
        max_size = self.max_msg_size
        while pos < end:
            if self._remaining < 0:
                # Reading a frame header: 2 bytes, or 10 with the 0xFF escape.
                hdr = self._hdr
                if not hdr:
                    first = body[pos]
                    need = 2 if first != 0xFF else 10
                    if end - pos >= need:
                        header = body[pos : pos + need]
                        pos += need
                    else:
                        hdr += body[pos:end]
                        pos = end
                        break
                else:
                    need = 2 if hdr[0] != 0xFF else 10
                    take = min(need - len(hdr), end - pos)
                    hdr += body[pos : pos + take]
                    pos += take
                    if len(hdr) < need:
                        break
                    header = memoryview(bytes(hdr))
                    self._hdr = bytearray()
                if need == 2:
                    size = header[0]
                    flags = header[1]
                else:
                    size = int.from_bytes(header[1:9], "big")
                    flags = header[9]
                if size == 0:
                    raise _FramingError("zero frame length")
                body_len = size - 1
                if max_size is not None and body_len > max_size:
                    raise _FramingError("frame larger than max_msg_size")
                self._more = bool(flags & FLAG_MORE)
                if body_len and end - pos >= body_len:
                    # Fast path: the whole body is here.
                    frame = bytes(body[pos : pos + body_len])
                    pos += body_len
                elif body_len:
                    self._remaining = body_len
                    self._parts = []
                    continue
                else:
                    frame = b""
            else:
                take = min(self._remaining, end - pos)
                self._parts.append(bytes(body[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                frame = b"".join(self._parts)
                self._parts = []
                self._remaining = -1
            self._frames.append(frame)
            if not self._more:
                out.append(self._frames)
                self._frames = []
                if stop_after_one:
                    return pos, True
        return pos, False

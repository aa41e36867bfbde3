"""Encoding and checking spool records (see the package docstring for the layout)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from .._errors import TriomqError

MAGIC = b"\xa5Z"
_HEADER = struct.Struct(">2sII")
RECORD_HEADER = _HEADER.size
_U32 = struct.Struct(">I")
#: no record may claim to be larger than this (a torn length field)
MAX_PAYLOAD = 1 << 31


class CorruptRecord(TriomqError):
    """A spool record failed its checks; the bytes from it on cannot be trusted."""


def encode_record(frames: Sequence[bytes]) -> bytes:
    """One record holding a whole message."""
    parts = [_U32.pack(len(frames))]
    for frame in frames:
        parts.append(_U32.pack(len(frame)))
        parts.append(frame)
    payload = b"".join(parts)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_record(record: bytes) -> list[bytes]:
    """The message of one record made by :func:`encode_record` in this
    process (its checksum is not checked: it never left memory)."""
    return _decode_payload(record[RECORD_HEADER:])


def split_records(data: bytes) -> list[bytes]:
    """The records joined in *data*, made by :func:`encode_record` in this
    process (not checked: they never left memory)."""
    records = []
    pos = 0
    while pos < len(data):
        end = pos + RECORD_HEADER + _HEADER.unpack_from(data, pos)[1]
        records.append(data[pos:end])
        pos = end
    return records


def _decode_payload(payload: bytes) -> list[bytes]:
    (count,) = _U32.unpack_from(payload, 0)
    pos = 4
    frames = []
    for _ in range(count):
        if pos + 4 > len(payload):
            raise CorruptRecord("record payload ends inside a frame length")
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise CorruptRecord("record payload ends inside a frame")
        frames.append(payload[pos : pos + n])
        pos += n
    if pos != len(payload) or not frames:
        raise CorruptRecord("record payload does not hold exactly one message")
    return frames


def decode_records_untrusted(data: bytes, *, final: bool) -> tuple[list[list[bytes]], int]:
    """Decode whole records from the start of *data*.

    Returns the messages and how many bytes they used. An incomplete record at
    the end is left for the next read, unless *final* (the end of the file),
    where it is a torn write.

    Raises:
        CorruptRecord: a record failed its checks (the messages before it are
            in the exception's ``messages`` and ``consumed`` attributes).
    """
    messages: list[list[bytes]] = []
    pos = 0
    end = len(data)
    try:
        while end - pos >= RECORD_HEADER:
            magic, length, crc = _HEADER.unpack_from(data, pos)
            if magic != MAGIC or length > MAX_PAYLOAD or length < 8:
                raise CorruptRecord(f"bad record header at offset {pos}")
            stop = pos + RECORD_HEADER + length
            if stop > end:
                break
            payload = data[pos + RECORD_HEADER : stop]
            if zlib.crc32(payload) != crc:
                raise CorruptRecord(f"checksum mismatch in the record at offset {pos}")
            messages.append(_decode_payload(payload))
            pos = stop
        if final and pos != end:
            raise CorruptRecord(f"torn record at offset {pos}: the file ends inside it")
    except CorruptRecord as exc:
        exc.messages = messages  # type: ignore[attr-defined]
        exc.consumed = pos  # type: ignore[attr-defined]
        raise
    return messages, pos

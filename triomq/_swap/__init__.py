"""The disk swap's record format, with no I/O: length- and checksum-framed messages.

A spool file is a sequence of records::

    magic (2 bytes, b"\\xa5Z") | payload length (4, big-endian) | crc32 of payload (4) | payload

and a payload is a message: frame count (4), then each frame as length (4) and bytes.
A torn or corrupted record is detected (bad magic, impossible length, wrong
checksum) and raises :class:`CorruptRecord`; it is never decoded into a message.
"""

from ._records import (
    RECORD_HEADER,
    CorruptRecord,
    decode_record,
    decode_records_untrusted,
    encode_record,
    split_records,
)

__all__ = ["RECORD_HEADER", "CorruptRecord", "decode_record", "decode_records_untrusted", "encode_record", "split_records"]

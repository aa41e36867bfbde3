"""PGM packets (RFC 3208) as OpenPGM puts them on the wire inside UDP.

Every packet starts with the 16-byte common header::

    source port (2) | destination port (2) | type (1) | options (1) |
    checksum (2) | global source id (6) | TSDU length (2)

followed by a type-specific fixed part, an optional option chain (present when
bit ``0x01`` of the options byte is set; it always starts with OPT_LENGTH and
its last option carries the ``0x80`` end bit) and, for ODATA/RDATA only, the
TSDU (the payload).  Each option is ``type (1) | length (1) | reserved (1) |
body``, the length counting the whole option.

The checksum is the Internet checksum over the whole PGM packet with the
checksum field zeroed; a transmitted value of zero means "no checksum" (a
computed zero is sent as ``0xFFFF``, as OpenPGM's ``pgm_csum_fold`` does).

Only IPv4 network-layer addresses (AFI 1) are supported.  Packets we can parse
but do not implement (POLL, POLR, NNAK, PGMCC ACK, FEC parity, IPv6 NLAs)
raise :class:`UnsupportedPacket`, a subclass of :class:`BadPacket`, so a caller
that drops every ``BadPacket`` drops those as well.

This module imports nothing but the standard library and attrs.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import ClassVar

import attrs

__all__ = [
    "AFI_IP",
    "BadPacket",
    "Fragment",
    "Nak",
    "Ncf",
    "Odata",
    "Packet",
    "PacketType",
    "Rdata",
    "Spm",
    "Spmr",
    "UnsupportedPacket",
    "checksum",
    "decode_packet_untrusted",
    "encode_packet",
]


class BadPacket(ValueError):
    """A datagram is not a well-formed PGM packet (or not one we accept)."""


class UnsupportedPacket(BadPacket):
    """A well-formed PGM packet of a kind this implementation does not handle."""


class PacketType(enum.IntEnum):
    SPM = 0x00
    POLL = 0x01
    POLR = 0x02
    ODATA = 0x04
    RDATA = 0x05
    NAK = 0x08
    NNAK = 0x09
    NCF = 0x0A
    SPMR = 0x0C
    ACK = 0x0D  # PGMCC, not in RFC 3208


# Bits of the header's options byte.
OPT_PRESENT = 0x01
OPT_NETWORK = 0x02
OPT_VAR_PKTLEN = 0x40
OPT_PARITY = 0x80

# Option types (low 7 bits of an option's type byte) and the end-of-chain bit.
OPT_LENGTH = 0x00
OPT_FRAGMENT = 0x01
OPT_NAK_LIST = 0x02
OPT_END = 0x80
OPT_MASK = 0x7F

AFI_IP = 1
AFI_IP6 = 2

HEADER_LEN = 16
DATA_HEADER_LEN = 8  # data sqn + trail
SPM_BODY_LEN = 20  # spm sqn, trail, lead, AFI, reserved, IPv4 NLA
NAK_BODY_LEN = 20  # sqn, source NLA (8), group NLA (8)
OPT_LENGTH_LEN = 4
OPT_FRAGMENT_LEN = 16
#: Bytes OPT_LENGTH + OPT_FRAGMENT add to a data packet.
FRAGMENT_OPTIONS_LEN = OPT_LENGTH_LEN + OPT_FRAGMENT_LEN
#: Most extra sequence numbers an OPT_NAK_LIST carries (the first is in the NAK itself).
MAX_NAK_LIST = 62
MAX_OPTIONS = 16
MAX_TSDU = 0xFFFF

_HDR = struct.Struct(">HHBBH6sH")
_U16 = struct.Struct(">H")
_U32X2 = struct.Struct(">II")
_U32X3 = struct.Struct(">III")
_SPM = struct.Struct(">IIIHH4s")
_NAK = struct.Struct(">IHH4sHH4s")
_OPT_LEN = struct.Struct(">BBH")
_OPT_FRAG = struct.Struct(">BBBBIII")

_U32_MAX = 0xFFFFFFFF


# --------------------------------------------------------------------------- checksum


def _ones_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of ``data`` (big-endian words)."""
    if len(data) & 1:
        data = data + b"\x00"
    n = int.from_bytes(data, "big")
    # 2**16 == 1 (mod 0xFFFF), so the sum of 16-bit words equals n mod 0xFFFF,
    # except that one's complement arithmetic has a "negative zero" 0xFFFF.
    s = n % 0xFFFF
    if s == 0 and n != 0:
        s = 0xFFFF
    return s


def checksum(data: bytes) -> int:
    """The PGM checksum of ``data`` (checksum field already zeroed); never 0."""
    s = _ones_sum(data)
    if s == 0xFFFF or s == 0:
        return 0xFFFF
    return (~s) & 0xFFFF


# --------------------------------------------------------------------------- packets


@attrs.frozen
class Fragment:
    """OPT_FRAGMENT: where this TSDU sits in its APDU."""

    first_sqn: int
    offset: int
    apdu_length: int


@attrs.frozen
class _Common:
    sport: int
    dport: int
    gsi: bytes


@attrs.frozen
class Spm(_Common):
    """Source Path Message: the source's window and its unicast address (NLA)."""

    type: ClassVar[PacketType] = PacketType.SPM
    spm_sqn: int
    trail: int
    lead: int
    nla: str


@attrs.frozen
class _Data(_Common):
    sqn: int
    trail: int
    payload: bytes
    fragment: Fragment | None = None


@attrs.frozen
class Odata(_Data):
    """Original data."""

    type: ClassVar[PacketType] = PacketType.ODATA


@attrs.frozen
class Rdata(_Data):
    """Repair data (a retransmission answering a NAK)."""

    type: ClassVar[PacketType] = PacketType.RDATA


@attrs.frozen
class _NakLike(_Common):
    sqn: int
    source_nla: str
    group_nla: str
    nak_list: tuple[int, ...] = ()

    @property
    def sqns(self) -> tuple[int, ...]:
        """Every sequence number this packet names: ``sqn`` then the OPT_NAK_LIST ones."""
        return (self.sqn, *self.nak_list)


@attrs.frozen
class Nak(_NakLike):
    """Negative acknowledgement, receiver to source (unicast).

    Ports are reversed: ``sport`` is the data destination port and ``dport`` the
    source's port; ``gsi`` is the source's GSI.
    """

    type: ClassVar[PacketType] = PacketType.NAK


@attrs.frozen
class Ncf(_NakLike):
    """NAK confirmation, source to the group."""

    type: ClassVar[PacketType] = PacketType.NCF


@attrs.frozen
class Spmr(_Common):
    """SPM request, receiver to source (ports reversed as for a NAK)."""

    type: ClassVar[PacketType] = PacketType.SPMR


Packet = Spm | Odata | Rdata | Nak | Ncf | Spmr


# --------------------------------------------------------------------------- encoding


_nla_cache: dict[str, bytes] = {}


def _nla_bytes(addr: str) -> bytes:
    b = _nla_cache.get(addr)
    if b is None:
        try:
            b = ipaddress.IPv4Address(addr).packed
        except ValueError as exc:
            raise ValueError(f"not an IPv4 address: {addr!r}") from exc
        if len(_nla_cache) < 4096:
            _nla_cache[addr] = b
    return b


def _nla_str(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} out of range: {value!r}")


def _options(chain: list[bytes]) -> bytes:
    """An option chain: OPT_LENGTH then ``chain`` (each an encoded option)."""
    last = bytearray(chain[-1])
    last[0] |= OPT_END
    chain = [*chain[:-1], bytes(last)]
    total = OPT_LENGTH_LEN + sum(len(o) for o in chain)
    return _OPT_LEN.pack(OPT_LENGTH, OPT_LENGTH_LEN, total) + b"".join(chain)


def _nak_list_option(extra: tuple[int, ...]) -> bytes:
    if len(extra) > MAX_NAK_LIST:
        raise ValueError(f"OPT_NAK_LIST holds at most {MAX_NAK_LIST} sequence numbers")
    for s in extra:
        _check_range("sequence number", s, _U32_MAX)
    length = 4 + 4 * len(extra)
    return bytes((OPT_NAK_LIST, length, 0, 0)) + struct.pack(f">{len(extra)}I", *extra)


def encode_packet(pkt: Packet, *, with_checksum: bool = True) -> bytes:
    """Serialise ``pkt``; ``with_checksum=False`` leaves the checksum field 0."""
    _check_range("sport", pkt.sport, 0xFFFF)
    _check_range("dport", pkt.dport, 0xFFFF)
    if len(pkt.gsi) != 6:
        raise ValueError("a GSI is 6 bytes")
    flags = 0
    tsdu = b""
    if isinstance(pkt, (Odata, Rdata)):
        _check_range("sqn", pkt.sqn, _U32_MAX)
        _check_range("trail", pkt.trail, _U32_MAX)
        body = _U32X2.pack(pkt.sqn, pkt.trail)
        frag = pkt.fragment
        if frag is not None:
            _check_range("first_sqn", frag.first_sqn, _U32_MAX)
            _check_range("fragment offset", frag.offset, _U32_MAX)
            _check_range("APDU length", frag.apdu_length, _U32_MAX)
            body += _OPT_LEN.pack(OPT_LENGTH, OPT_LENGTH_LEN, FRAGMENT_OPTIONS_LEN)
            body += _OPT_FRAG.pack(
                OPT_FRAGMENT | OPT_END,
                OPT_FRAGMENT_LEN,
                0,
                0,
                frag.first_sqn,
                frag.offset,
                frag.apdu_length,
            )
            flags = OPT_PRESENT
        tsdu = pkt.payload
        if len(tsdu) > MAX_TSDU:
            raise ValueError("TSDU longer than 65535 bytes")
    elif isinstance(pkt, Spm):
        for name, v in (("spm_sqn", pkt.spm_sqn), ("trail", pkt.trail), ("lead", pkt.lead)):
            _check_range(name, v, _U32_MAX)
        body = _SPM.pack(pkt.spm_sqn, pkt.trail, pkt.lead, AFI_IP, 0, _nla_bytes(pkt.nla))
    elif isinstance(pkt, (Nak, Ncf)):
        _check_range("sqn", pkt.sqn, _U32_MAX)
        body = _NAK.pack(
            pkt.sqn,
            AFI_IP,
            0,
            _nla_bytes(pkt.source_nla),
            AFI_IP,
            0,
            _nla_bytes(pkt.group_nla),
        )
        if pkt.nak_list:
            body += _options([_nak_list_option(pkt.nak_list)])
            flags = OPT_PRESENT | OPT_NETWORK
    elif isinstance(pkt, Spmr):
        body = b""
    else:  # pragma: no cover - guarded by typing
        raise TypeError(f"not a PGM packet: {pkt!r}")
    header = _HDR.pack(pkt.sport, pkt.dport, pkt.type, flags, 0, pkt.gsi, len(tsdu))
    data = b"".join((header, body, tsdu))
    if not with_checksum:
        return data
    csum = checksum(data)
    return b"".join((data[:6], _U16.pack(csum), data[8:]))


# --------------------------------------------------------------------------- decoding


@attrs.define
class _Options:
    end: int
    fragment: Fragment | None = None
    nak_list: tuple[int, ...] = ()


def _parse_options(data: bytes, pos: int, ptype: int) -> _Options:
    n = len(data)
    if pos + OPT_LENGTH_LEN > n:
        raise BadPacket("truncated option chain")
    otype, olen, total = _OPT_LEN.unpack_from(data, pos)
    if otype & OPT_MASK != OPT_LENGTH or olen != OPT_LENGTH_LEN:
        raise BadPacket("option chain does not start with OPT_LENGTH")
    end = pos + total
    if total < OPT_LENGTH_LEN or end > n:
        raise BadPacket("OPT_LENGTH total length does not fit the packet")
    result = _Options(end=end)
    if otype & OPT_END:
        if total != OPT_LENGTH_LEN:
            raise BadPacket("option chain ends before its stated length")
        return result
    p = pos + OPT_LENGTH_LEN
    count = 0
    while True:
        if p + 3 > end:
            raise BadPacket("option chain overruns OPT_LENGTH")
        otype = data[p]
        olen = data[p + 1]
        if olen < 3 or p + olen > end:
            raise BadPacket("bad option length")
        count += 1
        if count > MAX_OPTIONS:
            raise BadPacket("too many options")
        kind = otype & OPT_MASK
        if kind == OPT_LENGTH:
            raise BadPacket("OPT_LENGTH repeated")
        if kind == OPT_FRAGMENT and ptype in (PacketType.ODATA, PacketType.RDATA):
            if olen != OPT_FRAGMENT_LEN:
                raise BadPacket("bad OPT_FRAGMENT length")
            if result.fragment is not None:
                raise BadPacket("OPT_FRAGMENT repeated")
            first, off, apdu_len = _U32X3.unpack_from(data, p + 4)
            result.fragment = Fragment(first, off, apdu_len)
        elif kind == OPT_NAK_LIST and ptype in (PacketType.NAK, PacketType.NCF):
            if olen < 8 or (olen - 4) % 4:
                raise BadPacket("bad OPT_NAK_LIST length")
            if result.nak_list:
                raise BadPacket("OPT_NAK_LIST repeated")
            k = (olen - 4) // 4
            if k > MAX_NAK_LIST:
                raise BadPacket("OPT_NAK_LIST too long")
            result.nak_list = struct.unpack_from(f">{k}I", data, p + 4)
        # Other options (OPT_SYN, OPT_FIN, OPT_JOIN, ...) are skipped.
        p += olen
        if otype & OPT_END:
            break
    if p != end:
        raise BadPacket("option chain length does not match OPT_LENGTH")
    return result


def _read_nla(data: bytes, pos: int) -> tuple[str, int]:
    """An ``AFI (2) | reserved (2) | address`` block at ``pos``; returns (addr, next pos)."""
    if pos + 4 > len(data):
        raise BadPacket("truncated NLA")
    (afi,) = _U16.unpack_from(data, pos)
    if afi == AFI_IP6:
        raise UnsupportedPacket("IPv6 NLAs are not supported")
    if afi != AFI_IP:
        raise BadPacket(f"unknown NLA AFI {afi}")
    if pos + 8 > len(data):
        raise BadPacket("truncated NLA")
    return _nla_str(data[pos + 4 : pos + 8]), pos + 8


def decode_packet_untrusted(data: bytes | bytearray | memoryview) -> Packet:
    """Parse one UDP payload as a PGM packet, validating everything.

    Raises :class:`BadPacket` (and nothing else) for anything malformed: too
    short, unknown type, wrong checksum, a broken option chain, lengths that do
    not add up.
    """
    data = bytes(data)
    n = len(data)
    if n < HEADER_LEN:
        raise BadPacket("shorter than the PGM header")
    sport, dport, ptype, flags, csum, gsi, tsdu_len = _HDR.unpack_from(data)
    if csum and checksum(b"".join((data[:6], b"\x00\x00", data[8:]))) != csum:
        raise BadPacket("bad checksum")
    if ptype not in _KNOWN_TYPES:
        raise BadPacket(f"unknown packet type {ptype:#04x}")
    if ptype in _UNSUPPORTED_TYPES:
        raise UnsupportedPacket(f"unsupported packet type {ptype:#04x}")
    if flags & OPT_PARITY:
        raise UnsupportedPacket("FEC parity packets are not supported")
    pos = HEADER_LEN
    if ptype == PacketType.ODATA or ptype == PacketType.RDATA:
        if n < pos + DATA_HEADER_LEN:
            raise BadPacket("truncated data header")
        sqn, trail = _U32X2.unpack_from(data, pos)
        pos += DATA_HEADER_LEN
        opts = _parse_options(data, pos, ptype) if flags & OPT_PRESENT else None
        if opts is not None:
            pos = opts.end
        if n - pos != tsdu_len:
            raise BadPacket("TSDU length does not match the packet")
        frag = opts.fragment if opts is not None else None
        if frag is not None:
            if tsdu_len == 0 or frag.apdu_length == 0:
                raise BadPacket("empty fragment")
            if frag.offset + tsdu_len > frag.apdu_length:
                raise BadPacket("fragment overruns its APDU")
            # Each fragment carries at least one byte, so a fragment k sequence
            # numbers after the first starts at least k bytes in.
            index = (sqn - frag.first_sqn) & _U32_MAX
            if index > frag.offset:
                raise BadPacket("fragment sequence numbers do not match its offset")
        cls = Odata if ptype == PacketType.ODATA else Rdata
        return cls(sport, dport, gsi, sqn, trail, data[pos:], frag)
    if tsdu_len != 0:
        raise BadPacket("non-data packet with a TSDU length")
    if ptype == PacketType.SPM:
        if n < pos + 12:
            raise BadPacket("truncated SPM")
        spm_sqn, trail, lead = _U32X3.unpack_from(data, pos)
        nla, pos = _read_nla(data, pos + 12)
        pos = _skip_options(data, pos, ptype, flags)
        return Spm(sport, dport, gsi, spm_sqn, trail, lead, nla)
    if ptype == PacketType.NAK or ptype == PacketType.NCF:
        if n < pos + 4:
            raise BadPacket("truncated NAK")
        (sqn,) = struct.unpack_from(">I", data, pos)
        src, pos = _read_nla(data, pos + 4)
        grp, pos = _read_nla(data, pos)
        nak_list: tuple[int, ...] = ()
        if flags & OPT_PRESENT:
            opts = _parse_options(data, pos, ptype)
            pos = opts.end
            nak_list = opts.nak_list
        if pos != n:
            raise BadPacket("trailing bytes after the packet")
        cls2 = Nak if ptype == PacketType.NAK else Ncf
        return cls2(sport, dport, gsi, sqn, src, grp, nak_list)
    # SPMR
    _skip_options(data, pos, ptype, flags)
    return Spmr(sport, dport, gsi)


def _skip_options(data: bytes, pos: int, ptype: int, flags: int) -> int:
    """Validate (and ignore) the option chain of a packet without a TSDU."""
    if flags & OPT_PRESENT:
        pos = _parse_options(data, pos, ptype).end
    if pos != len(data):
        raise BadPacket("trailing bytes after the packet")
    return pos


_KNOWN_TYPES = frozenset(int(t) for t in PacketType)
_UNSUPPORTED_TYPES = frozenset((PacketType.POLL, PacketType.POLR, PacketType.NNAK, PacketType.ACK))

"""The sans-I/O PGM source (what libzmq's ``pgm_sender`` drives through OpenPGM).

Everything :class:`PgmSender` returns is a list of datagrams for the
multicast group (``group:port``): ODATA, RDATA, NCF and SPM are all
"downstream" packets.  What it is given (:meth:`PgmSender.on_packet`) are
upstream packets -- NAKs and SPMRs, which receivers unicast to the source's
NLA (``source_addr:port``); anything else is ignored.

The source rate-limits ODATA and RDATA with a token bucket: packets that do not
fit are queued (repairs first), released by later calls; :meth:`next_deadline`
says when to call :meth:`on_timer` next and :meth:`send_delay` how long to hold
off before handing over more messages.

Time is the caller's ``now`` (seconds, any monotonic origin) and randomness an
injected :class:`random.Random`.  No I/O, no trio.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from collections.abc import Iterable, Sequence

import attrs

from ._framing import MessageEncoder
from ._packets import (
    DATA_HEADER_LEN,
    FRAGMENT_OPTIONS_LEN,
    HEADER_LEN,
    MAX_NAK_LIST,
    BadPacket,
    Fragment,
    Nak,
    Ncf,
    Odata,
    Rdata,
    Spm,
    Spmr,
    _nla_bytes,
    decode_packet_untrusted,
    encode_packet,
)
from ._rate import TokenBucket
from ._window import SQN_MASK, TransmitWindow, window_sqns

__all__ = [
    "DEFAULT_AMBIENT_SPM_IVL",
    "DEFAULT_HEARTBEAT_SPM_IVLS",
    "IP_UDP_OVERHEAD",
    "PgmSender",
    "SenderStats",
    "max_tsdu",
]

#: IPv4 + UDP headers, which OpenPGM subtracts from the TPDU with UDP encapsulation.
IP_UDP_OVERHEAD = 28
#: libzmq's heartbeat SPM schedule after data (seconds), then ambient SPMs.
DEFAULT_HEARTBEAT_SPM_IVLS: tuple[float, ...] = (
    0.004, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
)  # fmt: skip
DEFAULT_AMBIENT_SPM_IVL = 8.192


def max_tsdu(max_tpdu: int, *, fragment: bool = False, ip_overhead: int = IP_UDP_OVERHEAD) -> int:
    """The largest TSDU in a ``max_tpdu``-byte IP packet (OpenPGM's PGM_MSSS / PGM_MSS).

    ``fragment=True`` leaves room for OPT_LENGTH + OPT_FRAGMENT; libzmq sizes
    its APDUs to that value, so they never need fragmenting.
    """
    size = max_tpdu - ip_overhead - HEADER_LEN - DATA_HEADER_LEN
    if fragment:
        size -= FRAGMENT_OPTIONS_LEN
    return size


@attrs.define
class SenderStats:
    messages: int = 0
    odata_packets: int = 0
    odata_bytes: int = 0
    rdata_packets: int = 0
    ncf_packets: int = 0
    spm_packets: int = 0
    naks_received: int = 0
    naks_ignored: int = 0
    nak_sqns_unavailable: int = 0
    bad_packets: int = 0


@attrs.define(eq=False)
class _Apdu:
    data: bytes
    sent: int = 0
    first_ext: int = -1


class PgmSender:
    """One PGM source (one TSI: ``gsi`` + ``sport``) sending to ``group``.

    ``max_tpdu`` is the IP packet size (libzmq: 1500), ``rate_kbps`` ZMQ_RATE
    and ``recovery_ivl`` ZMQ_RECOVERY_IVL in seconds; they size the token
    bucket and the transmit window as OpenPGM does.  ``source_addr`` is the
    IPv4 address receivers send NAKs to (advertised in SPMs).

    By default APDUs are ``max_tsdu(max_tpdu, fragment=True)`` bytes, as with
    libzmq, and never fragmented; a larger ``max_apdu`` (up to 65535) makes
    APDUs span several packets, each carrying OPT_FRAGMENT.
    """

    def __init__(
        self,
        gsi: bytes,
        sport: int,
        dport: int,
        group: str,
        source_addr: str,
        max_tpdu: int,
        rate_kbps: float,
        recovery_ivl: float,
        rng: random.Random,
        *,
        max_apdu: int | None = None,
        txw_sqns: int | None = None,
        initial_sqn: int | None = None,
        ambient_spm_ivl: float = DEFAULT_AMBIENT_SPM_IVL,
        heartbeat_spm_ivls: Sequence[float] = DEFAULT_HEARTBEAT_SPM_IVLS,
        rdata_dedupe_ivl: float = 0.05,
        burst_bytes: int | None = None,
        ip_overhead: int = IP_UDP_OVERHEAD,
        with_checksum: bool = True,
    ) -> None:
        if len(gsi) != 6:
            raise ValueError("a GSI is 6 bytes")
        for name, port in (("sport", sport), ("dport", dport)):
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"{name} out of range")
        _nla_bytes(group)
        _nla_bytes(source_addr)
        self.gsi = bytes(gsi)
        self.sport = sport
        self.dport = dport
        self.group = group
        self.source_addr = source_addr
        self.max_tpdu = max_tpdu
        self.max_tsdu = max_tsdu(max_tpdu, ip_overhead=ip_overhead)
        self.max_tsdu_fragment = max_tsdu(max_tpdu, fragment=True, ip_overhead=ip_overhead)
        if self.max_tsdu_fragment < 3:
            raise ValueError("max_tpdu too small")
        if max_apdu is None:
            max_apdu = self.max_tsdu_fragment
        if not 3 <= max_apdu <= 0xFFFF:
            raise ValueError("max_apdu must be in [3, 65535]")
        self.max_apdu = max_apdu
        self._encoder = MessageEncoder(max_apdu)
        self._rng = rng
        rate = rate_kbps * 1000.0 / 8.0
        self.rate_bytes = rate
        if txw_sqns is None:
            sqns = window_sqns(rate_kbps, recovery_ivl, max_tpdu)
            max_bytes = max(int(rate * recovery_ivl), max_tpdu)
        else:
            sqns = txw_sqns
            max_bytes = sys.maxsize
        if initial_sqn is None:
            initial_sqn = rng.getrandbits(32)
        self.window = TransmitWindow(sqns, max_bytes, initial_sqn)
        if burst_bytes is None:
            burst_bytes = int(max(2 * max_tpdu, rate * 0.01))
        self._bucket = TokenBucket(rate, burst_bytes)
        self._overhead = ip_overhead
        self._checksum = with_checksum
        self._ambient_ivl = ambient_spm_ivl
        self._heartbeats = tuple(heartbeat_spm_ivls)
        # Announce the session at once, then follow the heartbeat schedule, as
        # after data, so that receivers learn of us before the first ODATA.
        self._hb_index = 0  # the heartbeat interval to use next
        self._next_heartbeat = -math.inf
        self._next_ambient = math.inf  # set by every SPM
        self._spm_sqn = 0
        self._dedupe_ivl = rdata_dedupe_ivl
        self._odata_q: deque[_Apdu] = deque()
        self._odata_bytes = 0
        self._rdata_q: deque[int] = deque()
        self._rdata_set: set[int] = set()
        self.stats = SenderStats()

    # ------------------------------------------------------------------ public API

    @property
    def lead(self) -> int:
        """The last sequence number sent (``trail - 1`` before any)."""
        return self.window.lead

    @property
    def trail(self) -> int:
        return self.window.trail

    @property
    def queued_bytes(self) -> int:
        """ODATA payload bytes accepted by :meth:`send` but held by the rate limit."""
        return self._odata_bytes

    def send(self, message: Sequence[bytes], now: float) -> list[bytes]:
        """Queue one message (a list of frames); returns the ODATA that may go now."""
        return self.send_many((message,), now)

    def send_many(self, messages: Iterable[Sequence[bytes]], now: float) -> list[bytes]:
        """Queue several messages packed together; returns the ODATA that may go now."""
        count = 0

        def counted() -> Iterable[Sequence[bytes]]:
            nonlocal count
            for m in messages:
                count += 1
                yield m

        for payload in self._encoder.encode(counted()):
            self._odata_q.append(_Apdu(payload))
            self._odata_bytes += len(payload)
        self.stats.messages += count
        out: list[bytes] = []
        self._release(now, out)
        return out

    def send_delay(self, now: float) -> float:
        """Seconds until the queued ODATA will have drained at the configured rate.

        An engine that waits this long before each :meth:`send` keeps at most
        one message's worth of data queued.
        """
        return max(0.0, self.next_send_time(now) - now)

    def next_send_time(self, now: float) -> float:
        """Absolute time at which the ODATA backlog will be gone."""
        if not self._odata_q:
            return now
        backlog = 0
        for apdu in self._odata_q:
            remaining = len(apdu.data) - apdu.sent
            if len(apdu.data) <= self.max_tsdu:
                packets = 1
                backlog += remaining + HEADER_LEN + DATA_HEADER_LEN
            else:
                packets = -(-remaining // self.max_tsdu_fragment)
                backlog += remaining
                backlog += packets * (HEADER_LEN + DATA_HEADER_LEN + FRAGMENT_OPTIONS_LEN)
            backlog += packets * self._overhead
        tokens = self._bucket.available(now)
        return now + max(0.0, backlog - tokens) / self.rate_bytes

    def on_packet(self, data: bytes, now: float) -> list[bytes]:
        """Handle one datagram from a receiver (NAK, SPMR); returns what to multicast."""
        out: list[bytes] = []
        try:
            pkt = decode_packet_untrusted(data)
        except BadPacket:
            self.stats.bad_packets += 1
            return out
        if isinstance(pkt, Nak):
            self._on_nak(pkt, now, out)
        elif isinstance(pkt, Spmr) and pkt.gsi == self.gsi and pkt.dport == self.sport:
            out.append(self._spm(now))
        self._release(now, out)
        return out

    def next_deadline(self) -> float:
        """When :meth:`on_timer` must run next (``-inf``: right away)."""
        deadline = min(self._next_ambient, self._next_heartbeat)
        size = self._next_packet_size()
        if size is not None:
            deadline = min(deadline, self._bucket.ready_at(size))
        return deadline

    def on_timer(self, now: float) -> list[bytes]:
        """Release rate-limited packets and send due SPMs; returns what to multicast."""
        out: list[bytes] = []
        self._release(now, out)
        if now >= self._next_heartbeat:
            out.append(self._spm(now))
            if self._hb_index < len(self._heartbeats):
                self._next_heartbeat = now + self._heartbeats[self._hb_index]
                self._hb_index += 1
            else:
                self._next_heartbeat = math.inf
        elif now >= self._next_ambient:
            out.append(self._spm(now))
        return out

    # ------------------------------------------------------------------ internals

    def _encode(self, pkt: Odata | Rdata | Spm | Ncf) -> bytes:
        return encode_packet(pkt, with_checksum=self._checksum)

    def _spm(self, now: float) -> bytes:
        w = self.window
        pkt = Spm(
            self.sport, self.dport, self.gsi, self._spm_sqn, w.trail, w.lead, self.source_addr
        )
        self._spm_sqn = (self._spm_sqn + 1) & SQN_MASK
        self._next_ambient = now + self._ambient_ivl
        self.stats.spm_packets += 1
        return self._encode(pkt)

    def _on_nak(self, nak: Nak, now: float, out: list[bytes]) -> None:
        if nak.gsi != self.gsi or nak.dport != self.sport or nak.sport != self.dport:
            self.stats.naks_ignored += 1
            return
        if nak.group_nla != self.group:
            self.stats.naks_ignored += 1
            return
        src = nak.source_nla
        if src != self.source_addr and "0.0.0.0" not in (src, self.source_addr):
            self.stats.naks_ignored += 1
            return
        self.stats.naks_received += 1
        window = self.window
        confirmed: list[int] = []
        for sqn in nak.sqns:
            ext = window.unwrap(sqn)
            entry = window.get_ext(ext)
            if entry is None:
                self.stats.nak_sqns_unavailable += 1
                continue
            confirmed.append(sqn)
            if ext in self._rdata_set or now - entry.last_repair < self._dedupe_ivl:
                continue
            self._rdata_q.append(ext)
            self._rdata_set.add(ext)
        for i in range(0, len(confirmed), MAX_NAK_LIST + 1):
            chunk = confirmed[i : i + MAX_NAK_LIST + 1]
            ncf = Ncf(
                self.sport,
                self.dport,
                self.gsi,
                chunk[0],
                nak.source_nla,
                nak.group_nla,
                tuple(chunk[1:]),
            )
            out.append(self._encode(ncf))
            self.stats.ncf_packets += 1

    def _data_size(self, tsdu_len: int, fragmented: bool) -> int:
        size = HEADER_LEN + DATA_HEADER_LEN + tsdu_len + self._overhead
        return size + FRAGMENT_OPTIONS_LEN if fragmented else size

    def _next_packet_size(self) -> int | None:
        while self._rdata_q:
            entry = self.window.get_ext(self._rdata_q[0])
            if entry is None:
                self._rdata_set.discard(self._rdata_q.popleft())
                continue
            return self._data_size(len(entry.payload), entry.fragment is not None)
        if self._odata_q:
            apdu = self._odata_q[0]
            if len(apdu.data) <= self.max_tsdu:
                return self._data_size(len(apdu.data), False)
            chunk = min(self.max_tsdu_fragment, len(apdu.data) - apdu.sent)
            return self._data_size(chunk, True)
        return None

    def _release(self, now: float, out: list[bytes]) -> None:
        window = self.window
        bucket = self._bucket
        stats = self.stats
        while self._rdata_q:
            ext = self._rdata_q[0]
            entry = window.get_ext(ext)
            if entry is None:  # evicted meanwhile
                self._rdata_set.discard(self._rdata_q.popleft())
                continue
            size = self._data_size(len(entry.payload), entry.fragment is not None)
            if not bucket.try_consume(size, now):
                return
            self._rdata_set.discard(self._rdata_q.popleft())
            entry.last_repair = now
            pkt = Rdata(
                self.sport,
                self.dport,
                self.gsi,
                ext & SQN_MASK,
                window.trail,
                entry.payload,
                entry.fragment,
            )
            out.append(self._encode(pkt))
            stats.rdata_packets += 1
        sent_odata = False
        while self._odata_q:
            apdu = self._odata_q[0]
            data = apdu.data
            if len(data) <= self.max_tsdu:
                chunk = data
                fragmented = False
            else:
                chunk = data[apdu.sent : apdu.sent + self.max_tsdu_fragment]
                fragmented = True
            if not bucket.try_consume(self._data_size(len(chunk), fragmented), now):
                break
            frag: Fragment | None = None
            if fragmented:
                if apdu.sent == 0:
                    apdu.first_ext = window.lead_ext + 1
                frag = Fragment(apdu.first_ext & SQN_MASK, apdu.sent, len(data))
            ext = window.push(chunk, frag)
            pkt2 = Odata(
                self.sport, self.dport, self.gsi, ext & SQN_MASK, window.trail, chunk, frag
            )
            out.append(self._encode(pkt2))
            stats.odata_packets += 1
            stats.odata_bytes += len(chunk)
            apdu.sent += len(chunk)
            if apdu.sent >= len(data):
                self._odata_q.popleft()
                self._odata_bytes -= len(data)
            sent_odata = True
        if sent_odata and self._heartbeats:
            self._next_heartbeat = now + self._heartbeats[0]
            self._hb_index = 1

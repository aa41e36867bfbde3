"""The sans-I/O PGM receiver (what libzmq's ``pgm_receiver`` gets from OpenPGM).

:class:`PgmReceiver` is fed every datagram that arrives on the group's port
(ODATA, RDATA, SPM, NCF, and NAKs of other receivers if they are seen) and
returns a :class:`ReceiverOutput`: whole messages, in order and exactly once
per source; NAKs to unicast to the source; and :class:`Loss` records.

Per source (TSI = GSI + source port) it keeps a :class:`ReceiveWindow`.  A gap
puts the missing sequence numbers in BACK_OFF with a random back-off in
``[0, nak_bo_ivl)``; when it expires a NAK goes out (several sequence numbers
per NAK with OPT_NAK_LIST) and the slot waits ``nak_rpt_ivl`` for an NCF, then
``nak_rdata_ivl`` for the RDATA.  An NCF, or another receiver's NAK, seen
before our back-off expires suppresses our NAK.  After ``nak_ncf_retries``
unanswered NAKs, or ``nak_data_retries`` NCFs without data, the packet is
declared lost; so is anything that falls behind the source's advertised trail
or out of the window.  A loss resets the message decoder, which resumes at the
next whole message: a partial message is never delivered.

Time is the caller's ``now``; randomness an injected :class:`random.Random`.
No I/O, no trio.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random

import attrs

from ._framing import MessageDecoder
from ._packets import (
    MAX_NAK_LIST,
    BadPacket,
    Nak,
    Ncf,
    Odata,
    Rdata,
    Spm,
    _nla_bytes,
    decode_packet_untrusted,
    encode_packet,
)
from ._window import (
    SQN_MASK,
    Delivered,
    ReceiveWindow,
    RxSlot,
    SlotState,
    sqn_diff,
    window_sqns,
)

__all__ = ["Loss", "Outgoing", "PgmReceiver", "ReceiverOutput", "ReceiverStats", "Tsi"]

_TIMED = (SlotState.BACK_OFF, SlotState.WAIT_NCF, SlotState.WAIT_DATA)
#: sources one receiver follows at a time: a new one past this is ignored (each
#: costs a window of state and timers, and anyone on the group can claim one)
MAX_PEERS = 64


def _unicast(address: str | None) -> bool:
    """An address NAKs may be sent to: unicast IPv4, not 0.x, multicast or broadcast."""
    if address is None:
        return False
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return not (ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip in _THIS_NETWORK)


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


@attrs.frozen
class Tsi:
    """Transport session identifier: a source's GSI and source port."""

    gsi: bytes
    sport: int

    def __str__(self) -> str:
        return f"{self.gsi.hex()}.{self.sport}"


@attrs.frozen
class Loss:
    """``count`` packets from ``first_sqn`` on (wire numbers) are gone for good."""

    tsi: Tsi
    first_sqn: int
    count: int


@attrs.frozen
class Outgoing:
    """A datagram to send to ``dest`` (an IPv4 address) on the transport's port."""

    data: bytes
    dest: str


@attrs.define
class ReceiverOutput:
    messages: list[list[bytes]] = attrs.Factory(list)
    outgoing: list[Outgoing] = attrs.Factory(list)
    losses: list[Loss] = attrs.Factory(list)

    def __bool__(self) -> bool:
        return bool(self.messages or self.outgoing or self.losses)


@attrs.define
class ReceiverStats:
    packets: int = 0
    bad_packets: int = 0
    ignored_packets: int = 0
    odata_packets: int = 0
    rdata_packets: int = 0
    duplicates: int = 0
    spm_packets: int = 0
    ncf_packets: int = 0
    naks_sent: int = 0
    nak_sqns_sent: int = 0
    naks_suppressed: int = 0
    lost_sqns: int = 0
    loss_events: int = 0
    framing_errors: int = 0
    messages: int = 0
    peers_expired: int = 0


class _Apdus:
    """Reassembles APDUs from in-order TSDUs (OPT_FRAGMENT)."""

    def __init__(self, max_apdu: int) -> None:
        self.max_apdu = max_apdu
        self.errors = 0
        self._synced = False
        self._first = -1
        self._length = 0
        self._have = 0
        self._parts: list[bytes] = []

    def reset(self) -> None:
        self._synced = False
        self._parts = []
        self._have = 0

    def feed(self, pkt: Odata | Rdata) -> tuple[bool, bytes | None]:
        """Returns (discontinuity before this TSDU, the APDU if now complete)."""
        frag = pkt.fragment
        broken = False
        if frag is None or frag.offset == 0:
            if self._parts:  # an unfinished APDU is abandoned
                broken = True
                self.errors += 1
            self._parts = []
            self._have = 0
            if frag is None:
                self._synced = True
                return broken, pkt.payload
            if frag.first_sqn != pkt.sqn or frag.apdu_length > self.max_apdu:
                self.errors += 1
                self._synced = False
                return True, None
            self._synced = True
            self._first = frag.first_sqn
            self._length = frag.apdu_length
        elif not self._parts:
            # The middle of an APDU whose start we do not have (late join, or
            # after a loss or an error): skip it.
            if self._synced:
                self.errors += 1
                self._synced = False
            return True, None
        elif (
            frag.first_sqn != self._first
            or frag.apdu_length != self._length
            or frag.offset != self._have
        ):
            self.errors += 1
            self.reset()
            return True, None
        self._parts.append(pkt.payload)
        self._have += len(pkt.payload)
        if self._have < self._length:
            return broken, None
        apdu = b"".join(self._parts)
        self._parts = []
        self._have = 0
        return broken, apdu


class _Peer:
    def __init__(self, tsi: Tsi, rxw_sqns: int, max_apdu: int, max_msg_size: int | None) -> None:
        self.tsi = tsi
        self.window = ReceiveWindow(rxw_sqns)
        self.apdus = _Apdus(max_apdu)
        self.decoder = MessageDecoder(max_msg_size)
        self.nla: str | None = None  # from SPMs
        self.last_src: str | None = None  # source address of its datagrams
        self.spm_sqn: int | None = None
        self.last_heard = -math.inf
        self.timers: list[tuple[float, int, int]] = []  # (deadline, timer id, ext)

    @property
    def nak_dest(self) -> str | None:
        """Where NAKs go: the NLA its SPMs name (RFC 3208: the upstream hop),
        if it is a unicast address, else where its datagrams come from. (An
        SPM is not authenticated: a broadcast or multicast NLA, which the
        kernel refuses or which would reach every host, is never used.)"""
        if _unicast(self.nla):
            return self.nla
        return self.last_src


class PgmReceiver:
    """Receives from every source sending to ``group:dport``.

    ``rate_kbps``, ``recovery_ivl`` and ``max_tpdu`` size the receive window as
    OpenPGM does (or pass ``rxw_sqns``); the NAK parameters default to the
    values libzmq sets.
    """

    def __init__(
        self,
        dport: int,
        group: str,
        rng: random.Random,
        *,
        rate_kbps: float = 100,
        recovery_ivl: float = 10.0,
        max_tpdu: int = 1500,
        rxw_sqns: int | None = None,
        nak_bo_ivl: float = 0.050,
        nak_rpt_ivl: float = 0.200,
        nak_rdata_ivl: float = 0.200,
        nak_ncf_retries: int = 2,
        nak_data_retries: int = 5,
        peer_expiry: float = 5 * 8.192,
        max_apdu: int = 0xFFFF,
        max_msg_size: int | None = None,
        with_checksum: bool = True,
    ) -> None:
        if not 0 <= dport <= 0xFFFF:
            raise ValueError("dport out of range")
        _nla_bytes(group)
        self.dport = dport
        self.group = group
        self._rng = rng
        self.rxw_sqns = (
            rxw_sqns if rxw_sqns is not None else window_sqns(rate_kbps, recovery_ivl, max_tpdu)
        )
        self.nak_bo_ivl = nak_bo_ivl
        self.nak_rpt_ivl = nak_rpt_ivl
        self.nak_rdata_ivl = nak_rdata_ivl
        self.nak_ncf_retries = nak_ncf_retries
        self.nak_data_retries = nak_data_retries
        self.peer_expiry = peer_expiry
        self.max_apdu = max_apdu
        self.max_msg_size = max_msg_size
        self._checksum = with_checksum
        self._peers: dict[Tsi, _Peer] = {}
        self._timer_ids = 0
        self.stats = ReceiverStats()

    # ------------------------------------------------------------------ public API

    @property
    def peers(self) -> list[Tsi]:
        return list(self._peers)

    def on_packet(self, data: bytes, src_addr: str | tuple[str, int], now: float) -> ReceiverOutput:
        """Handle one datagram received from ``src_addr`` (an IP, or (IP, port))."""
        out = ReceiverOutput()
        stats = self.stats
        stats.packets += 1
        try:
            pkt = decode_packet_untrusted(data)
        except BadPacket:
            stats.bad_packets += 1
            return out
        src = src_addr if isinstance(src_addr, str) else src_addr[0]
        if isinstance(pkt, (Odata, Rdata)):
            if pkt.dport != self.dport:
                stats.ignored_packets += 1
                return out
            tsi = Tsi(pkt.gsi, pkt.sport)
            peer = self._peers.get(tsi)
            if peer is None or not peer.window.defined:
                if isinstance(pkt, Rdata):
                    # Repairs for other receivers do not start a session.
                    stats.ignored_packets += 1
                    return out
                if peer is None:
                    peer = self._new_peer(tsi)
                    if peer is None:
                        stats.ignored_packets += 1
                        return out
                peer.window.define(pkt.sqn)
            peer.last_heard = now
            peer.last_src = src
            self._on_data(peer, pkt, now)
        elif isinstance(pkt, Spm):
            if pkt.dport != self.dport:
                stats.ignored_packets += 1
                return out
            tsi = Tsi(pkt.gsi, pkt.sport)
            peer = self._peers.get(tsi) or self._new_peer(tsi)
            if peer is None:
                stats.ignored_packets += 1
                return out
            peer.last_heard = now
            peer.last_src = src
            self._on_spm(peer, pkt, now)
        elif isinstance(pkt, Ncf):
            if pkt.dport != self.dport:
                stats.ignored_packets += 1
                return out
            peer = self._peers.get(Tsi(pkt.gsi, pkt.sport))
            if peer is None or not peer.window.defined:
                stats.ignored_packets += 1
                return out
            peer.last_heard = now
            self._on_ncf(peer, pkt, now)
        elif isinstance(pkt, Nak):
            # Another receiver's NAK (ports reversed).
            if pkt.sport != self.dport:
                stats.ignored_packets += 1
                return out
            peer = self._peers.get(Tsi(pkt.gsi, pkt.dport))
            if peer is None or not peer.window.defined:
                stats.ignored_packets += 1
                return out
            self._on_foreign_nak(peer, pkt, now)
        else:
            stats.ignored_packets += 1
            return out
        self._deliver(peer, out)
        return out

    def next_deadline(self) -> float:
        """When :meth:`on_timer` must run next (``inf`` when nothing is pending)."""
        deadline = math.inf
        for peer in self._peers.values():
            deadline = min(deadline, peer.last_heard + self.peer_expiry, self._timer_top(peer))
        return deadline

    def on_timer(self, now: float) -> ReceiverOutput:
        """Run due NAK timers and peer expiry; returns NAKs, losses, messages."""
        out = ReceiverOutput()
        for tsi, peer in list(self._peers.items()):
            if now >= peer.last_heard + self.peer_expiry:
                del self._peers[tsi]
                self.stats.peers_expired += 1
                continue
            self._run_timers(peer, now, out)
            self._deliver(peer, out)
        return out

    # ------------------------------------------------------------------ internals

    def _new_peer(self, tsi: Tsi) -> _Peer | None:
        """Follow a new source, unless MAX_PEERS are followed already."""
        if len(self._peers) >= MAX_PEERS:
            return None
        peer = _Peer(tsi, self.rxw_sqns, self.max_apdu, self.max_msg_size)
        self._peers[tsi] = peer
        return peer

    def _schedule(self, peer: _Peer, slot: RxSlot, ext: int, deadline: float) -> None:
        self._timer_ids += 1
        slot.deadline = deadline
        slot.timer_id = self._timer_ids
        heapq.heappush(peer.timers, (deadline, self._timer_ids, ext))

    def _back_off_deadline(self, now: float) -> float:
        return now + self._rng.random() * self.nak_bo_ivl

    def _back_off(self, peer: _Peer, slot: RxSlot, ext: int, deadline: float) -> None:
        slot.state = SlotState.BACK_OFF
        self._schedule(peer, slot, ext, deadline)

    def _timer_top(self, peer: _Peer) -> float:
        timers = peer.timers
        slots = peer.window.slots
        while timers:
            deadline, timer_id, ext = timers[0]
            slot = slots.get(ext)
            if slot is not None and slot.timer_id == timer_id and slot.state in _TIMED:
                return deadline
            heapq.heappop(timers)
        return math.inf

    def _missing(self, peer: _Peer, exts: list[int], now: float) -> None:
        # One back-off for the whole gap, so that its NAKs go out together.
        if not exts:
            return
        slots = peer.window.slots
        deadline = self._back_off_deadline(now)
        for ext in exts:
            self._back_off(peer, slots[ext], ext, deadline)

    def _on_data(self, peer: _Peer, pkt: Odata | Rdata, now: float) -> None:
        stats = self.stats
        if isinstance(pkt, Odata):
            stats.odata_packets += 1
        else:
            stats.rdata_packets += 1
        window = peer.window
        ext = window.unwrap(pkt.sqn)
        if ext < window.next_ext:
            stats.duplicates += 1
        else:
            if ext > window.lead_ext:
                created = window.extend(ext)
                self._missing(peer, created[:-1], now)
            slot = window.slots[ext]
            if slot.state is SlotState.HAVE_DATA:
                stats.duplicates += 1
            else:
                slot.state = SlotState.HAVE_DATA
                slot.packet = pkt
                slot.timer_id = 0
        # The source can no longer repair anything before its trail.
        if sqn_diff(pkt.sqn, pkt.trail) >= 0:
            window.advance_floor(window.unwrap(pkt.trail))

    def _on_spm(self, peer: _Peer, spm: Spm, now: float) -> None:
        self.stats.spm_packets += 1
        if peer.spm_sqn is not None and sqn_diff(spm.spm_sqn, peer.spm_sqn) <= 0:
            return  # old or duplicate SPM
        peer.spm_sqn = spm.spm_sqn
        peer.nla = spm.nla
        window = peer.window
        if not window.defined:
            # Late join: start after the source's lead.
            window.define(spm.lead + 1)
            return
        lead = window.unwrap(spm.lead)
        if lead > window.lead_ext:
            # Tail loss: the source sent more than we saw.
            self._missing(peer, window.extend(lead), now)
        if sqn_diff(spm.lead + 1, spm.trail) >= 0:
            window.advance_floor(window.unwrap(spm.trail))

    def _on_ncf(self, peer: _Peer, ncf: Ncf, now: float) -> None:
        self.stats.ncf_packets += 1
        window = peer.window
        for sqn in ncf.sqns:
            ext = window.unwrap(sqn)
            if ext < window.next_ext:
                continue
            if ext > window.lead_ext:
                created = window.extend(ext)
                self._missing(peer, created[:-1], now)
                if ext < window.next_ext:  # pragma: no cover - extend keeps ext
                    continue
            slot = window.slots[ext]
            if slot.state in (SlotState.BACK_OFF, SlotState.WAIT_NCF):
                if slot.state is SlotState.BACK_OFF:
                    self.stats.naks_suppressed += 1
                slot.state = SlotState.WAIT_DATA
                self._schedule(peer, slot, ext, now + self.nak_rdata_ivl)

    def _on_foreign_nak(self, peer: _Peer, nak: Nak, now: float) -> None:
        window = peer.window
        for sqn in nak.sqns:
            slot = window.slots.get(window.unwrap(sqn))
            if slot is not None and slot.state is SlotState.BACK_OFF:
                self.stats.naks_suppressed += 1
                slot.state = SlotState.WAIT_NCF
                self._schedule(peer, slot, window.unwrap(sqn), now + self.nak_rpt_ivl)

    def _run_timers(self, peer: _Peer, now: float, out: ReceiverOutput) -> None:
        timers = peer.timers
        slots = peer.window.slots
        to_nak: list[int] = []
        retry_at = -math.inf  # one back-off for every retry due now
        while timers and timers[0][0] <= now:
            _deadline, timer_id, ext = heapq.heappop(timers)
            slot = slots.get(ext)
            if slot is None or slot.timer_id != timer_id:
                continue
            state = slot.state
            if state is SlotState.BACK_OFF:
                to_nak.append(ext)
                slot.state = SlotState.WAIT_NCF
                self._schedule(peer, slot, ext, now + self.nak_rpt_ivl)
            elif state is SlotState.WAIT_NCF:
                slot.ncf_retries += 1
                if slot.ncf_retries > self.nak_ncf_retries:
                    slot.state = SlotState.LOST
                    slot.timer_id = 0
                else:
                    if retry_at == -math.inf:
                        retry_at = self._back_off_deadline(now)
                    self._back_off(peer, slot, ext, retry_at)
            elif state is SlotState.WAIT_DATA:
                slot.data_retries += 1
                if slot.data_retries > self.nak_data_retries:
                    slot.state = SlotState.LOST
                    slot.timer_id = 0
                else:
                    if retry_at == -math.inf:
                        retry_at = self._back_off_deadline(now)
                    self._back_off(peer, slot, ext, retry_at)
        if to_nak:
            self._send_naks(peer, sorted(to_nak), out)

    def _send_naks(self, peer: _Peer, exts: list[int], out: ReceiverOutput) -> None:
        dest = peer.nak_dest
        if dest is None:  # pragma: no cover - a peer always has a source address
            return
        source_nla = peer.nla if peer.nla not in (None, "0.0.0.0") else dest
        assert source_nla is not None
        for i in range(0, len(exts), MAX_NAK_LIST + 1):
            chunk = [e & SQN_MASK for e in exts[i : i + MAX_NAK_LIST + 1]]
            nak = Nak(
                self.dport,
                peer.tsi.sport,
                peer.tsi.gsi,
                chunk[0],
                source_nla,
                self.group,
                tuple(chunk[1:]),
            )
            out.outgoing.append(Outgoing(encode_packet(nak, with_checksum=self._checksum), dest))
            self.stats.naks_sent += 1
            self.stats.nak_sqns_sent += len(chunk)

    def _deliver(self, peer: _Peer, out: ReceiverOutput) -> None:
        events = peer.window.drain()
        if not events:
            return
        stats = self.stats
        apdus = peer.apdus
        decoder = peer.decoder
        errors_before = decoder.errors + apdus.errors
        for event in events:
            if isinstance(event, Delivered):
                pkt = event.packet
                assert isinstance(pkt, (Odata, Rdata))
                broken, apdu = apdus.feed(pkt)
                if broken:
                    decoder.reset()
                if apdu is not None:
                    msgs = decoder.feed(apdu)
                    if msgs:
                        out.messages.extend(msgs)
                        stats.messages += len(msgs)
            else:
                apdus.reset()
                decoder.reset()
                stats.lost_sqns += event.count
                stats.loss_events += 1
                out.losses.append(Loss(peer.tsi, event.first_ext & SQN_MASK, event.count))
        stats.framing_errors += decoder.errors + apdus.errors - errors_before

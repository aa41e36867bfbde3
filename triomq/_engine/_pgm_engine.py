"""The ``epgm://`` engine: PGM over UDP multicast, as libzmq's pgm_sender / pgm_receiver.

A PUB or XPUB on an epgm endpoint gets one pipe, subscribed to everything
(receivers filter), drained by a *source*: messages go from the pipe's
outgoing queue into a :class:`~triomq._pgm.PgmSender`, whose datagrams are
multicast to the group; the source's token bucket (``rate``) decides when the
next messages are taken, and its timers (SPMs, rate-limited packets) when to
wake up. NAKs and SPMRs arrive on the same socket and are answered with NCFs
and repairs (RDATA) from the transmit window (``recovery_ivl``).

A SUB or XSUB gets one pipe fed by a *sink*: every datagram of the group goes
into a :class:`~triomq._pgm.PgmReceiver`; whole messages, in order, go into
the pipe's incoming queue; NAKs go out unicast. The UDP reader never waits for
the application: when the incoming queue is at ``rcvhwm``, messages are
dropped and counted (``statistics().lost``, a ``MessagesDropped`` event).
Data that cannot be repaired is reported with a :class:`MulticastLoss` event
(and counts one in ``statistics().lost``: at least one message is gone), and
the stream resumes at the next whole message.

Both tasks live in the socket's nursery: closing the socket ends them, and
``unbind``/``disconnect`` cancel their scope.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import weakref
from collections import defaultdict
from typing import Any

import attrs
import trio

from .._endpoint import Endpoint
from .._errors import EndpointError
from .._options import SocketOptions
from .._patterns._pubsub import Pub
from .._pgm import Loss, PgmReceiver, PgmSender, ReceiverStats, SenderStats
from .._socket_type import SocketType
from .._transports._udp import (
    DatagramSocket,
    open_multicast_receiver,
    open_multicast_sender,
    open_unicast,
    resolve_interface,
    validate_group,
)
from .._zmtp._events import HandshakeComplete
from ._core import SocketCore
from ._groups import first_leaf
from ._monitor import Disconnected, MessagesDropped, MulticastLoss
from ._pipe import Pipe

__all__ = ["MulticastStatistics", "multicast_role", "multicast_statistics", "run_multicast"]

logger = logging.getLogger("triomq")

SENDERS = (SocketType.PUB, SocketType.XPUB)
RECEIVERS = (SocketType.SUB, SocketType.XSUB)

#: a source takes at most this many messages / bytes from its queue at once
SEND_BATCH = 256
SEND_BATCH_BYTES = 64 * 1024
#: a sink reads at most this many datagrams per wake-up
RECEIVE_BATCH = 64
#: libzmq's retry limits when ``multicast_nak_retries`` is None
NAK_NCF_RETRIES = 2
NAK_DATA_RETRIES = 5

#: IP packet sizes: room for the headers and a useful payload; what UDP can carry
MIN_TPDU = 128
MAX_TPDU = 65_535

_UDP_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def _noop() -> None:
    pass


def multicast_role(socket_type: SocketType) -> str:
    """``"send"`` for PUB/XPUB, ``"receive"`` for SUB/XSUB.

    Raises:
        EndpointError: other socket types cannot use epgm://.
    """
    if socket_type in SENDERS:
        return "send"
    if socket_type in RECEIVERS:
        return "receive"
    raise EndpointError(f"epgm:// is for PUB, XPUB, SUB and XSUB sockets, not {socket_type.name}")


@attrs.define
class MulticastStatistics:
    """Counters of one epgm endpoint of a socket (see :func:`multicast_statistics`)."""

    endpoint: str
    role: str
    #: messages handed to the PGM source / delivered to the socket
    messages: int = 0
    #: received messages dropped because the incoming queue was at rcvhwm
    dropped: int = 0
    #: MulticastLoss events (unrepairable data)
    loss_events: int = 0
    lost_packets: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    #: the PGM state machine's own counters (ODATA, RDATA, NAKs, ...)
    pgm: SenderStats | ReceiverStats | None = None


_engines: weakref.WeakKeyDictionary[Any, list[_Engine]] = weakref.WeakKeyDictionary()


def multicast_statistics(core: object) -> list[MulticastStatistics]:
    """Counters of every running epgm endpoint of socket *core* (a snapshot)."""
    return [engine.snapshot() for engine in _engines.get(core, ())]


def _check_options(options: SocketOptions) -> None:
    # libzmq refuses these with EINVAL when the endpoint is opened.
    if options.rate <= 0:
        raise EndpointError("epgm:// needs rate > 0 (kbit/s)")
    if not options.recovery_ivl:
        raise EndpointError("epgm:// needs recovery_ivl > 0 (seconds)")
    if not MIN_TPDU <= options.multicast_maxtpdu <= MAX_TPDU:
        raise EndpointError(f"multicast_maxtpdu must be in [{MIN_TPDU}, {MAX_TPDU}]")


def _random_gsi() -> bytes:
    return os.urandom(6)


async def run_multicast(
    core: SocketCore,
    ep: Endpoint,
    pipe: Pipe,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the source or sink of epgm endpoint *ep* for *core*, on *pipe*.

    Started with ``nursery.start``: opening the sockets and attaching the pipe
    happen before it returns (errors are raised from ``start``); it hands back
    a cancel scope that ends the endpoint. Never raises once started, except
    on bugs.
    """
    role = multicast_role(core.socket_type)
    options = core.options
    name = str(ep)
    interface = resolve_interface(ep.host)
    group = validate_group(ep.group, ep.port)
    _check_options(options)
    engine: _Engine
    if role == "send":
        udp = DatagramSocket(
            open_multicast_sender(
                interface, ep.port, hops=options.multicast_hops, loop=options.multicast_loop
            ),
            faults_out=options.multicast_faults,
            faults_in=options.multicast_faults_in,
        )
        rng = random.Random()
        sender = PgmSender(
            _random_gsi(),
            rng.randrange(1, 0x10000),
            ep.port,
            group,
            interface,
            options.multicast_maxtpdu,
            options.rate,
            options.recovery_ivl,
            rng,
        )
        engine = _Source(core, name, pipe, udp, sender, (group, ep.port))
    else:
        rx = DatagramSocket(
            open_multicast_receiver(interface, group, ep.port),
            faults_in=options.multicast_faults_in,
        )
        try:
            naks = DatagramSocket(open_unicast(interface), faults_out=options.multicast_faults)
        except BaseException:
            rx.close()
            raise
        retries = options.multicast_nak_retries
        receiver = PgmReceiver(
            ep.port,
            group,
            random.Random(),
            rate_kbps=options.rate,
            recovery_ivl=options.recovery_ivl,
            max_tpdu=options.multicast_maxtpdu,
            nak_ncf_retries=NAK_NCF_RETRIES if retries is None else retries,
            nak_data_retries=NAK_DATA_RETRIES if retries is None else retries,
            max_msg_size=options.maxmsgsize,
        )
        engine = _Sink(core, name, pipe, rx, naks, receiver, ep.port)
    try:
        with trio.CancelScope() as scope:
            if role == "send":
                # A source has its peers from the start (it cannot know them).
                refusal = core.pipe_connected(pipe, _handshake(SocketType.SUB))
                if refusal is not None:
                    raise EndpointError(f"cannot use {name}: {refusal}")
                pattern = getattr(core, "pattern", None)
                if isinstance(pattern, Pub) and not core.options.invert_matching:
                    # libzmq's subscribe_to_all: receivers filter. Not reported to an XPUB.
                    # (Inverted, a pipe subscribed to nothing is the one that gets
                    # everything; libzmq's inverted PUB sends nothing to multicast.)
                    Pub.subscription(pattern, pipe, b"", True)
            # (a sink's pipe is connected when it first hears a source: see _Sink)
            _engines.setdefault(core, []).append(engine)
            task_status.started(scope)
            try:
                await engine.run()
            except* _UDP_ERRORS as group:
                # (from the engine's nursery: inside an exception group)
                exc = first_leaf(group)
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                logger.warning("%s: multicast endpoint failed: %s", name, reason)
                core.emit(Disconnected(name, "", reason))
    finally:
        engine.close()
        engines = _engines.get(core)
        if engines is not None and engine in engines:
            engines.remove(engine)
        if not pipe.terminating:
            core.pipe_disconnected(pipe)


def _handshake(peer_type: SocketType) -> HandshakeComplete:
    return HandshakeComplete(peer_type, 0, b"", {})


class _Engine(abc.ABC):
    """A multicast source or receiver, as the socket's task runs it."""

    stats: MulticastStatistics

    @abc.abstractmethod
    def snapshot(self) -> MulticastStatistics:
        """The counters now."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Move datagrams until cancelled."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the UDP sockets."""


class _Source(_Engine):
    """Sends what the pipe's outgoing queue holds, at the configured rate, and repairs."""

    def __init__(
        self,
        core: SocketCore,
        endpoint: str,
        pipe: Pipe,
        udp: DatagramSocket,
        sender: PgmSender,
        group: tuple[str, int],
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.pipe = pipe
        self.udp = udp
        self.sender = sender
        self.group = group
        self._wake = trio.lowlevel.ParkingLot()
        self.stats = MulticastStatistics(endpoint, "send", pgm=sender.stats)

    def snapshot(self) -> MulticastStatistics:
        s = attrs.evolve(self.stats, pgm=attrs.evolve(self.sender.stats))
        udp = self.udp
        s.datagrams_sent, s.bytes_sent = udp.datagrams_sent, udp.bytes_sent
        s.datagrams_received, s.bytes_received = udp.datagrams_received, udp.bytes_received
        return s

    def close(self) -> None:
        self.udp.close()

    async def run(self) -> None:
        pipe = self.pipe
        pipe.outq.on_readable = self._kick
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upstream_loop)
                if self.udp.faults_out is not None:
                    nursery.start_soon(self.udp.run_delayed)
                await self._send_loop()
        finally:
            pipe.outq.on_readable = _noop
            pipe.writing = False

    def _kick(self) -> None:
        self._wake.unpark_all()

    def _take(self) -> list[list[bytes]]:
        outq = self.pipe.outq
        batch: list[list[bytes]] = []
        size = 0
        while outq and len(batch) < SEND_BATCH and size < SEND_BATCH_BYTES:
            item = outq.get()
            if type(item) is list:  # anything else is control traffic, meaningless here
                batch.append(item)
                for frame in item:
                    size += len(frame)
        return batch

    async def _send_loop(self) -> None:
        sender = self.sender
        pipe = self.pipe
        outq = pipe.outq
        udp = self.udp
        group = self.group
        core = self.core
        stats = self.stats
        while True:
            now = trio.current_time()
            out: list[bytes] = []
            if sender.next_deadline() <= now:
                out.extend(sender.on_timer(now))
            if outq and sender.next_send_time(now) <= now:
                batch = self._take()
                if batch:
                    stats.messages += len(batch)
                    out.extend(sender.send_many(batch, now))
            if out:
                await udp.send(out, group)
            busy = sender.queued_bytes > 0
            pipe.writing = busy
            if not busy and not outq:
                core.pipe_flushed(pipe)
            now = trio.current_time()
            deadline = sender.next_deadline()
            if outq:
                deadline = min(deadline, sender.next_send_time(now))
            if deadline <= now:
                await trio.lowlevel.checkpoint()
            else:
                with trio.move_on_at(deadline):
                    await self._wake.park()

    async def _upstream_loop(self) -> None:
        """NAKs and SPMRs, unicast to us by the receivers."""
        sender = self.sender
        udp = self.udp
        group = self.group
        while True:
            await udp.wait_readable()
            items = udp.receive_nowait(RECEIVE_BATCH)
            if not items:
                continue
            now = trio.current_time()
            out: list[bytes] = []
            for data, _src in items:
                out.extend(sender.on_packet(data, now))
            if out:
                await udp.send(out, group)
            # repairs may wait for the rate limit: the send loop's deadline moved
            self._kick()


class _Sink(_Engine):
    """Feeds the group's datagrams to a PgmReceiver and its messages to the pipe."""

    def __init__(
        self,
        core: SocketCore,
        endpoint: str,
        pipe: Pipe,
        udp: DatagramSocket,
        naks: DatagramSocket,
        receiver: PgmReceiver,
        port: int,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.pipe = pipe
        self.udp = udp
        self.naks = naks
        self.receiver = receiver
        self.port = port
        self.stats = MulticastStatistics(endpoint, "receive", pgm=receiver.stats)
        #: a source has been heard, and the pipe is connected
        self.joined = False

    def snapshot(self) -> MulticastStatistics:
        s = attrs.evolve(self.stats, pgm=attrs.evolve(self.receiver.stats))
        s.datagrams_sent, s.bytes_sent = self.naks.datagrams_sent, self.naks.bytes_sent
        s.datagrams_received, s.bytes_received = (
            self.udp.datagrams_received,
            self.udp.bytes_received,
        )
        return s

    def close(self) -> None:
        self.udp.close()
        self.naks.close()

    async def run(self) -> None:
        pipe = self.pipe
        outq = pipe.outq
        # an XSUB's upstream messages have nowhere to go over multicast
        outq.clear()

        def discard() -> None:
            outq.clear()

        outq.on_readable = discard
        try:
            async with trio.open_nursery() as nursery:
                if self.naks.faults_out is not None:
                    nursery.start_soon(self.naks.run_delayed)
                await self._receive_loop()
        finally:
            outq.on_readable = _noop

    async def _receive_loop(self) -> None:
        receiver = self.receiver
        udp = self.udp
        messages: list[list[bytes]] = []
        naks: list[tuple[bytes, str]] = []
        losses: list[Loss] = []
        while True:
            items = udp.receive_nowait(RECEIVE_BATCH)
            now = trio.current_time()
            for data, src in items:
                out = receiver.on_packet(data, src, now)
                if out:
                    if out.messages:
                        messages.extend(out.messages)
                    if out.outgoing:
                        naks.extend((o.data, o.dest) for o in out.outgoing)
                    if out.losses:
                        losses.extend(out.losses)
            if receiver.next_deadline() <= now:
                out = receiver.on_timer(now)
                messages.extend(out.messages)
                naks.extend((o.data, o.dest) for o in out.outgoing)
                losses.extend(out.losses)
            if not self.joined and receiver.peers and not self._join():
                return  # the socket is closing
            if losses:
                self._report_losses(losses)
                losses = []
            if messages:
                self._deliver(messages)
                messages = []
            if naks:
                await self._send_naks(naks)
                naks = []
            if len(items) >= RECEIVE_BATCH:
                await trio.lowlevel.checkpoint()
            else:
                await udp.wait_readable(receiver.next_deadline())

    def _join(self) -> bool:
        """The first source is heard: the pipe is connected (``wait_peers`` returns).

        Data a receiver can recover starts there, so this is the moment a
        publisher may start and be sure this subscriber sees everything.
        """
        self.joined = True
        return self.core.pipe_connected(self.pipe, _handshake(SocketType.PUB)) is None

    def _deliver(self, messages: list[list[bytes]]) -> None:
        pipe = self.pipe
        stats = self.stats
        room = pipe.inq.room()
        if len(messages) > room:
            dropped = len(messages) - room
            messages = messages[:room]
            stats.dropped += dropped
            pipe.lost += dropped
            self.core.emit(MessagesDropped(self.endpoint, dropped))
        if messages:
            stats.messages += len(messages)
            pipe.deliver_many(messages)

    def _report_losses(self, losses: list[Loss]) -> None:
        stats = self.stats
        for loss in losses:
            stats.loss_events += 1
            stats.lost_packets += loss.count
            self.pipe.lost += 1
            logger.info(
                "%s: lost %d packets from %s at %d",
                self.endpoint,
                loss.count,
                loss.tsi,
                loss.first_sqn,
            )
            self.core.emit(MulticastLoss(self.endpoint, str(loss.tsi), loss.first_sqn, loss.count))

    async def _send_naks(self, naks: list[tuple[bytes, str]]) -> None:
        by_dest: dict[str, list[bytes]] = defaultdict(list)
        for data, dest in naks:
            by_dest[dest].append(data)
        for dest, datagrams in by_dest.items():
            try:
                await self.naks.send(datagrams, (dest, self.port))
            except OSError as exc:
                # one source's NAKs not sent (an address the kernel refuses):
                # its repairs fail in time, as if they were lost; the rest go on
                logger.debug("%s: NAKs to %s not sent: %s", self.endpoint, dest, exc)

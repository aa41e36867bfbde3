"""Socket: the public object, joining a pattern, its pipes, and the engine tasks.

A socket lives inside ``async with open_socket(...)``, which owns a nursery:
every dialer, acceptor and connection engine of the socket is a child task of
it, and leaving the block closes them all (after ``linger``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import attrs
import trio

from ._auth import AuthRequest, Deny
from ._endpoint import Endpoint, parse_endpoint
from ._engine._dialer import run_acceptor, run_dialer
from ._engine._groups import raise_plain
from ._engine._inproc import (
    InprocLink,
    bind_inproc,
    cancel_pending,
    close_inproc_pipe,
    connect_inproc,
    unbind_inproc,
)
from ._engine._monitor import (
    BindFailed,
    Closed,
    Disconnected,
    Listening,
    MessagesDropped,
    MonitorEvent,
    SwapCorrupted,
    SwapFailed,
)
from ._engine._pgm_engine import multicast_role, run_multicast
from ._engine._pipe import ConflatingQueue, Lender, MessageQueue, Pipe
from ._engine._swap import Spool, SwapBudget
from ._errors import EndpointError, StateError, TriomqError
from ._mechanisms._select import check_security_options
from ._options import SocketOptions, check_options_for_type
from ._patterns import make_pattern
from ._patterns._base import Msg
from ._patterns._pubsub import Sub, XPub
from ._patterns._reqrep import Router
from ._socket_type import SocketType
from ._transports._stream import SocketSetup, check_ssl_context, listen
from ._zmtp._connection import ZMTPConnection
from ._zmtp._events import HandshakeComplete
from ._zmtp._mechanism import Credentials, Mechanism

logger = logging.getLogger("triomq")

_Frame = bytes | bytearray | memoryview
_T = TypeVar("_T")


@attrs.frozen
class SocketStatistics:
    """A snapshot of a socket's counters (see :meth:`Socket.statistics`)."""

    socket_type: SocketType
    #: peers connected now
    peers: int
    #: pipes (connected, connecting, or draining)
    pipes: int
    #: messages waiting in outgoing queues
    queued_out: int
    #: messages waiting in incoming queues
    queued_in: int
    #: messages accepted by send() / handed out by recv()
    sent: int
    received: int
    #: messages the pattern dropped (HWM on PUB/ROUTER, unroutable)
    dropped: int
    #: messages lost when connections broke (or with a corrupted swap file)
    lost: int
    #: messages spilled to the disk swap and not yet sent
    spooled: int = 0
    #: messages a newer one replaced in a queue, either way (the ``conflate``
    #: option; not counted in ``dropped``, and no MessagesDropped events)
    conflated: int = 0


@attrs.frozen
class PeerInfo:
    """Who sent a message: what the peer's handshake established."""

    #: the endpoint the connection belongs to (bound or connected)
    endpoint: str
    #: the peer's address ("" for ipc and inproc)
    address: str
    #: the peer's socket type name ("PUSH", ...)
    socket_type: str
    routing_id: bytes
    #: what the authenticator answered for this peer ("" if none)
    user_id: str
    #: the peer's metadata properties (Socket-Type, Identity, X-...)
    metadata: dict[str, bytes] = attrs.field(eq=False)


@attrs.frozen
class PeerStatistics:
    """One pipe's counters: a peer that is connected, connecting, or draining."""

    endpoint: str
    #: who the peer is, once its handshake completed (None while connecting)
    peer: PeerInfo | None
    connected: bool
    #: messages queued for this peer / taken from it
    sent: int
    received: int
    #: waiting in the outgoing queue (and its disk swap) / the incoming queue
    queued_out: int
    queued_in: int
    #: messages the pattern dropped for this peer at its HWM (PUB)
    dropped: int
    #: messages lost when its connection broke, or at close
    lost: int
    #: messages a newer one replaced in its queues, either way (``conflate``)
    conflated: int = 0


@attrs.define(eq=False, slots=True)
class _LastRead:
    pipe: Pipe | None = None


@attrs.define(eq=False)
class _Bind:
    endpoint: str
    scope: trio.CancelScope | None
    closed: trio.Event = attrs.field(factory=trio.Event)
    #: earlier binds of the same ipc path on this socket, which unbind closes too
    replaced: list[_Bind] = attrs.field(factory=list)


@attrs.define(eq=False)
class _Connect:
    endpoint: str
    pipe: Pipe
    scope: trio.CancelScope | None


@final
class Socket(trio.abc.AsyncResource):
    """A ZeroMQ socket. Create one with :func:`open_socket`.

    Message calls keep pyzmq's names (``send``, ``send_multipart``, ``recv``,
    ``recv_multipart``); ``*_nowait`` variants raise ``trio.WouldBlock``
    instead of waiting (ZeroMQ's DONTWAIT). There are no timeout arguments:
    put the call in a cancel scope.

    Guarantees: a ``send`` that is cancelled queued nothing (a message is
    queued whole or not at all); a ``recv`` that is cancelled consumed nothing.
    """

    def __init__(self, socket_type: SocketType, options: SocketOptions, nursery: trio.Nursery) -> None:
        check_security_options(options)  # bad keys fail here, not in a connection task
        check_options_for_type(socket_type, options)
        self.socket_type = socket_type
        self.options = options
        self._nursery = nursery
        self.pattern = make_pattern(socket_type, options)
        self.receives = self.pattern.receives
        self._send_lot = trio.lowlevel.ParkingLot()
        self._recv_lot = trio.lowlevel.ParkingLot()
        self._drain_lot = trio.lowlevel.ParkingLot()
        self._peers_lot = trio.lowlevel.ParkingLot()
        self.pattern.wake_receivers = self.wake_receivers
        self.pattern.wake_senders = self.wake_senders
        self.pattern.close_pipe = self._close_pipe  # type: ignore[assignment]
        self._pipes: set[Pipe] = set()
        #: the engine whose connection a receiving task last read itself
        self._lender: Lender | None = None
        self._binds: dict[str, _Bind] = {}
        self._connects: dict[str, _Connect] = {}
        self._monitors: list[trio.MemorySendChannel[MonitorEvent]] = []
        self._rng = random.Random()
        self._closing = False
        self._closed = False
        self._sent = 0
        self._received = 0
        self._lost_detached = 0
        self._conflated_detached = 0
        #: the conflate option, on a socket type it acts on (as libzmq's)
        self.conflate = options.conflate and socket_type in _CONFLATING
        #: disconnect() calls waiting for a pipe to be written out
        self._flushing = 0
        #: set once the socket is closed (a proxy watches its sockets with it)
        self._closed_event = trio.Event()
        self._swap_budget: SwapBudget | None = None
        self._last_read = _LastRead()
        #: the message last put back (see _unreceive), and the pipe it came from
        self._put_back_from: tuple[Msg, Pipe | None] | None = None
        self._drops_reported = 0
        self._next_drop_report = -math.inf
        #: a task will report the drops of the current window at its end
        self._drop_report_due = False

    def __repr__(self) -> str:
        return f"<triomq.Socket {self.socket_type.name} pipes={len(self._pipes)}>"

    # ------------------------------------------------------------------ endpoints

    async def bind(self, endpoint: str) -> str:
        """Listen on *endpoint*; returns the resolved endpoint (with the real port).

        The socket is listening when this returns. A checkpoint.

        Raises:
            EndpointError: malformed endpoint, or the address cannot be bound.
            trio.ClosedResourceError: the socket is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        ep = parse_endpoint(endpoint)
        if ep.scheme == "inproc":
            bind_inproc(self, ep.path)
            resolved = str(ep)
            self._binds[resolved] = _Bind(resolved, None)
            self.emit(Listening(resolved))
            await trio.lowlevel.cancel_shielded_checkpoint()
            return resolved
        if ep.scheme == "epgm":
            return await self._bind_multicast(ep)
        try:
            bound = await listen(
                ep, backlog=self.options.backlog, ipv6=self.options.ipv6,
                ssl_context=self.options.ssl_context, setup=SocketSetup.of(self.options),
            )
        except EndpointError as exc:
            self.emit(BindFailed(endpoint, str(exc)))
            raise
        resolved = str(bound.endpoint)
        closed = trio.Event()
        try:
            scope = await self._nursery.start(run_acceptor, self, bound, closed)
        except BaseExceptionGroup as group:  # (cancelled inside the acceptor's nursery)
            raise_plain(group)
        new = _Bind(resolved, scope, closed)
        old = self._binds.get(resolved)
        if old is not None:
            # An ipc path bound again (binding unlinked the first socket file and
            # made a new one): libzmq keeps both listeners under the endpoint's
            # name, and unbind closes both; so does this socket.
            new.replaced = [old, *old.replaced]
            for key in [k for k, v in self._binds.items() if v is old]:
                self._binds[key] = new
        self._binds[resolved] = new
        if endpoint != resolved:
            self._binds.setdefault(endpoint, new)
        self.emit(Listening(resolved))
        return resolved

    async def unbind(self, endpoint: str) -> None:
        """Stop listening on *endpoint* (as given to or returned by :meth:`bind`), and
        close the connections accepted through it. A checkpoint; when it returns,
        the address can be bound again.

        For ``inproc://`` this differs from libzmq, which only forgets the name
        and leaves the pairs already connected working (see "Coming from pyzmq").

        Raises:
            EndpointError: the socket is not bound to *endpoint*.
        """
        await trio.lowlevel.checkpoint()
        self._check_open()
        bind = self._binds.get(endpoint)
        if bind is None:
            raise EndpointError(f"not bound to {endpoint}")
        for key in [k for k, v in self._binds.items() if v is bind]:
            del self._binds[key]
        if bind.scope is None:
            unbind_inproc(self, parse_endpoint(bind.endpoint).path)
            for pipe in [p for p in self._pipes if p.endpoint == bind.endpoint]:
                close_inproc_pipe(pipe)
                self.pipe_disconnected(pipe)
        else:
            for each in [bind, *bind.replaced]:
                assert each.scope is not None
                each.scope.cancel()
            for each in [bind, *bind.replaced]:
                await each.closed.wait()  # the address is free when unbind returns

    async def connect(self, endpoint: str, *, routing_id: bytes | None = None) -> None:
        """Connect to *endpoint* in the background, and reconnect whenever the connection drops.

        Returns at once: messages sent before the peer is there are queued (up to
        sndhwm). A checkpoint.

        Args:
            routing_id: ROUTER only: the routing id this socket gives the peer
                of this connect (libzmq's ``ZMQ_CONNECT_ROUTING_ID``), in
                place of the one the peer announces or one made up. Messages
                to it may be sent at once: they queue until the connection is
                made (unless ``immediate``), and across reconnects, whoever
                answers at *endpoint*. The peer does not see it.

        Raises:
            EndpointError: malformed endpoint.
            StateError: a PAIR socket that already has its peer, or a
                *routing_id* that a peer of this ROUTER already has.
            ValueError: *routing_id* on a socket that is not a ROUTER, or empty.
            TypeError: *routing_id* is not bytes.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if routing_id is not None:
            self._check_connect_routing_id(routing_id)
        ep = parse_endpoint(endpoint)
        if ep.scheme == "epgm":
            await self._connect_multicast(ep)
            return
        name = str(ep)
        if name in self._connects:
            raise EndpointError(f"already connected to {name}")
        if ep.scheme == "tls":
            check_ssl_context(self.options.ssl_context, server_side=False)
        if ep.scheme in ("tcp", "tls") and ep.host == "*":
            raise EndpointError(f"cannot connect to a wildcard address: {endpoint}")
        pipe = self.new_pipe(name, persistent=True)
        if routing_id:
            pipe.connect_routing_id = routing_id
        if not self._attach(pipe):
            raise StateError(f"a {self.socket_type.name} socket takes one peer only")
        if ep.scheme == "inproc":
            self._connects[name] = _Connect(name, pipe, None)
            connect_inproc(self, ep.path, pipe)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            scope = await self._nursery.start(run_dialer, self, ep, pipe, self._rng)
        except BaseException:
            # cancelled before the dialer started: it did nothing, so no pipe
            # stays behind (nothing would write it, and close would wait for it)
            self.drop_pipe(pipe)
            raise
        self._connects[name] = _Connect(name, pipe, scope)

    def _check_connect_routing_id(self, routing_id: bytes) -> None:
        if not isinstance(routing_id, bytes):
            raise TypeError(f"routing_id must be bytes, not {type(routing_id).__name__}")
        pattern = self.pattern
        if not isinstance(pattern, Router):
            raise ValueError(f"connect(routing_id=...) is for ROUTER sockets, not {self.socket_type.name}")
        if not routing_id:
            raise ValueError("routing_id must not be empty")
        if pattern.routing_id_in_use(routing_id):
            # (libzmq asserts, and aborts the process)
            raise StateError(f"routing id {routing_id!r} is already in use on this ROUTER")

    async def disconnect(self, endpoint: str) -> None:
        """Stop connecting to *endpoint*. A checkpoint.

        As libzmq's ``zmq_disconnect``: no new messages are queued for that
        peer, and those already queued are still written, in the background
        (a task of the socket), for up to ``linger``; then the connection ends,
        what is left is dropped and counted as lost, and a
        :class:`Disconnected` event says so. With ``linger=0``, or no
        connection, they are dropped at once. Closing the socket ends the
        background writing too (after its own linger).

        Raises:
            EndpointError: the socket is not connected to *endpoint*.
        """
        await trio.lowlevel.checkpoint()
        self._check_open()
        name = str(parse_endpoint(endpoint))
        conn = self._connects.pop(name, None)
        if conn is None:
            raise EndpointError(f"not connected to {endpoint}")
        pipe = conn.pipe
        if conn.scope is None:
            cancel_pending(self, pipe)
            if not isinstance(pipe.link, InprocLink):
                pipe.lost += pipe.outq.clear()  # never joined: no binder reads these
            close_inproc_pipe(pipe)
            self.drop_pipe(pipe)
            return
        linger = self.options.linger
        if linger != 0 and pipe.connected and not pipe.idle() and not self._closing:
            # no new messages for this peer; what it sent stays readable
            pipe.terminating = True
            pipe.on_drained = _stay  # dropped by the flush, once written
            self.pattern.disconnected(pipe)
            self._flushing += 1
            self._nursery.start_soon(self._flush_and_drop, name, conn.scope, pipe, linger)
            return
        conn.scope.cancel()
        self.drop_pipe(pipe)

    async def _flush_and_drop(self, name: str, scope: trio.CancelScope, pipe: Pipe, linger: float | None) -> None:
        """disconnect()'s background part: the session writes what is queued,
        for up to *linger*; then it ends, and the pipe is dropped."""
        try:
            with trio.move_on_after(math.inf if linger is None else linger) as waited:
                while pipe.connected and not pipe.idle():
                    await self._drain_lot.park()
        finally:
            self._flushing -= 1
            scope.cancel()
            self.drop_pipe(pipe)
        reason = "disconnect(): linger expired" if waited.cancelled_caught else "disconnect(): all written"
        self.emit(Disconnected(name, "", reason, pipe.lost + len(pipe.outq)))

    async def _bind_multicast(self, ep: Endpoint) -> str:
        # PUB/XPUB: a multicast sender; SUB/XSUB: a receiver (as with connect).
        name = str(ep)
        try:
            multicast_role(self.socket_type)
            if name in self._binds:
                raise EndpointError(f"already bound to {name}")
            pipe = self.new_pipe(name, persistent=False)
            closed = trio.Event()
            scope = await self._nursery.start(_set_when_done, closed, run_multicast, self, ep, pipe)
        except EndpointError as exc:
            self.emit(BindFailed(name, str(exc)))
            raise
        self._binds[name] = _Bind(name, scope, closed)
        self.emit(Listening(name))
        return name

    async def _connect_multicast(self, ep: Endpoint) -> None:
        name = str(ep)
        multicast_role(self.socket_type)
        if name in self._connects:
            raise EndpointError(f"already connected to {name}")
        pipe = self.new_pipe(name, persistent=True)
        if not self._attach(pipe):  # pragma: no cover - PUB/SUB patterns take any pipe
            raise StateError(f"a {self.socket_type.name} socket refused {name}")
        try:
            scope = await self._nursery.start(run_multicast, self, ep, pipe)
        except BaseException:
            self.drop_pipe(pipe)
            raise
        self._connects[name] = _Connect(name, pipe, scope)

    # ------------------------------------------------------------------ sending

    def _report_drops(self) -> None:
        """Publish HWM drops as MessagesDropped events, at most ten a second.

        Drops within a tenth of a second of the last event are reported at its
        end, by a timer task (one at a time), or when the socket closes: the
        events add up to ``statistics().dropped``.
        """
        if self.pattern.dropped == self._drops_reported:
            return
        now = trio.current_time()
        if now >= self._next_drop_report:
            self._emit_drops()
            self._next_drop_report = now + _DROP_REPORT_IVL
        elif not self._drop_report_due:
            self._drop_report_due = True
            self._nursery.start_soon(self._report_drops_later)

    def _emit_drops(self) -> None:
        dropped = self.pattern.dropped
        if dropped != self._drops_reported:
            self.emit(MessagesDropped("", dropped - self._drops_reported))
            self._drops_reported = dropped

    async def _report_drops_later(self) -> None:
        """The drops of the current window, at its end (closing reports them if sooner)."""
        try:
            await trio.sleep_until(self._next_drop_report)
        finally:
            self._drop_report_due = False
        if self.pattern.dropped != self._drops_reported:
            self._emit_drops()
            self._next_drop_report = trio.current_time() + _DROP_REPORT_IVL

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the socket is closed")

    def send_multipart_nowait(self, frames: Iterable[_Frame]) -> None:
        """Queue a message now, or raise ``trio.WouldBlock`` (nothing queued).

        Raises:
            trio.WouldBlock: no pipe has room (the message was not queued).
            StateError: this socket type cannot send (or not now, e.g. REP before a request).
            trio.ClosedResourceError: the socket is closed.
        """
        msg = _to_message(frames)
        self._check_open()
        if self._waits_for_disk() or not self.pattern.send(msg):
            raise trio.WouldBlock
        self._sent += 1
        if self.pattern.dropped != self._drops_reported:
            self._report_drops()

    def _waits_for_disk(self) -> bool:
        """With a disk swap whose worker thread is behind, senders wait (see
        ``SwapBudget.lagging``): even a PUB, which would otherwise drop."""
        return self._swap_budget is not None and self._swap_budget.lagging()

    def send_nowait(self, data: _Frame) -> None:
        """``send_multipart_nowait([data])``."""
        self.send_multipart_nowait((data,))

    async def send_multipart(self, frames: Iterable[_Frame]) -> None:
        """Queue a multipart message, waiting while the pattern's pipes are full.

        A checkpoint. If cancelled, nothing was queued. Messages are copied when
        given as bytearray or memoryview, so the caller may reuse the buffer.

        Raises:
            StateError: this socket type cannot send now.
            trio.ClosedResourceError: the socket is (or gets) closed.
        """
        await self._send(_to_message(frames))

    def _withdraw(self, msg: Msg) -> bool:
        """Take back *msg*, the very object a send queued, if it still waits
        unwritten in a pipe's queue (the RPC client's retries). Not counted as
        lost: the sender asked for it back."""
        return any(pipe.unwrite(msg) for pipe in self._pipes)

    async def _send(self, msg: Msg) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        pattern = self.pattern
        if (self._swap_budget is None or not self._swap_budget.lagging()) and pattern.send(msg):
            self._sent += 1
            if pattern.dropped != self._drops_reported:
                self._report_drops()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        while True:
            await self._send_lot.park()
            self._check_open()
            if not self._waits_for_disk() and pattern.send(msg):
                self._sent += 1
                if pattern.dropped != self._drops_reported:
                    self._report_drops()
                return

    async def send(self, data: _Frame) -> None:
        """Send a single-frame message. See :meth:`send_multipart`."""
        await self._send([data] if type(data) is bytes else _to_message((data,)))

    def send_many_nowait(self, messages: Sequence[Iterable[_Frame]]) -> int:
        """Queue as many of *messages* (each a list of frames) as fit now, in order.

        Returns how many were queued (each one whole). A message the socket
        refuses (e.g. a ROUTER's unknown routing id with ``router_mandatory``,
        a REP's second reply) ends the batch: the ones before it are queued and
        counted, and only when it is the first does this raise. So the rest of
        a batch, sent again, starts with it and raises then.

        Raises:
            trio.WouldBlock: not even the first one fits (nothing queued).
            StateError, HostUnreachable: the first message is refused (nothing queued).
            TypeError, ValueError: a message is not a list of frames (nothing queued).
        """
        self._check_open()
        if self._waits_for_disk():
            raise trio.WouldBlock
        msgs = [_to_message(frames) for frames in messages]
        if self._swap_budget is None:
            count = self.pattern.send_batch(msgs)
        else:
            count = self._send_batch_to_swap(msgs, self._swap_budget)
        self._sent += count
        if self.pattern.dropped != self._drops_reported:
            self._report_drops()
        if not count and messages:
            raise trio.WouldBlock
        return count

    def _send_batch_to_swap(self, msgs: list[Msg], budget: SwapBudget) -> int:
        """``send_batch`` in slices of about a megabyte, ending the batch once
        the disk is behind: in one piece, a batch could put far more than
        PENDING_LIMIT in memory (the next call then waits, or drops nothing)."""
        count = 0
        while count < len(msgs) and not budget.lagging():
            end, size = count, 0
            while end < len(msgs) and size < _SWAP_SLICE:
                size += sum(map(len, msgs[end]))
                end += 1
            try:
                sent = self.pattern.send_batch(msgs[count:end])
            except TriomqError:
                if not count:
                    raise
                break  # (a refused message ends the batch: the next call raises)
            count += sent
            if count < end:
                break
        return count

    async def send_many(self, messages: Sequence[Iterable[_Frame]]) -> int:
        """Queue a batch: wait until the first message fits, then queue as many as fit.

        Returns how many were queued, at least one (if *messages* is not empty);
        send the rest with another call. One checkpoint for the whole batch. If
        cancelled, nothing was queued by this call. A refused message ends the
        batch, and raises only if it is the first: see :meth:`send_many_nowait`.
        """
        if not messages:
            await trio.lowlevel.checkpoint()
            self._check_open()
            return 0
        return await self._wait_for(self._send_lot.park, lambda: self.send_many_nowait(messages))

    async def _wait_for(self, wait: Callable[[], Awaitable[object]], attempt: Callable[[], _T]) -> _T:
        """``attempt()`` now, or after each ``wait()`` until it stops raising
        WouldBlock. A checkpoint; if cancelled, ``attempt`` never succeeded.

        (send_multipart and recv_multipart inline the same steps: they are the
        per-message hot path.)
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            result = attempt()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        while True:
            await wait()
            try:
                return attempt()
            except trio.WouldBlock:
                pass

    # ------------------------------------------------------------------ receiving

    def recv_multipart_nowait(self) -> list[bytes]:
        """The next message now, or raise ``trio.WouldBlock``.

        Raises:
            trio.WouldBlock: nothing to receive.
            StateError: this socket type cannot receive (or not now).
            trio.ClosedResourceError: the socket is closed.
        """
        self._check_open()
        msg = self.pattern.recv()
        if msg is None:
            if self._lender is None:
                raise trio.WouldBlock
            self._lender.read_nowait()
            msg = self.pattern.recv()
            if msg is None:
                raise trio.WouldBlock
        self._received += 1
        return msg

    async def recv_multipart_with_peer(self) -> tuple[list[bytes], PeerInfo | None]:
        """The next message and who sent it (its peer's handshake: address, user id
        from the authenticator, metadata); ``None`` for a message no peer
        sent. On an XPUB, a subscription report names the subscriber it came
        from, also once that subscriber has left (as its messages do). A
        checkpoint; if cancelled, nothing was consumed.
        """
        return await self._wait_for(self._wait_to_receive, self._recv_with_peer_nowait)

    def _recv_with_peer_nowait(self) -> tuple[list[bytes], PeerInfo | None]:
        # the pattern reads from a pipe synchronously: the pipe it used is known
        # before any other task can receive
        self._last_read.pipe = None
        msg = self.recv_multipart_nowait()
        pipe = self._last_read.pipe
        put_back = self._put_back_from
        if put_back is not None and put_back[0] is msg:
            pipe = put_back[1]  # (it was put back, and came out of no pipe now)
            self._put_back_from = None
        return msg, (pipe.peer if pipe is not None else None)

    def peer_statistics(self) -> list[PeerStatistics]:
        """Counters per pipe (per peer), readable at any time."""
        dropped_by_pipe: dict[Any, int] = getattr(self.pattern, "dropped_by_pipe", {})
        return [
            PeerStatistics(
                endpoint=p.endpoint,
                peer=p.peer,
                connected=p.connected,
                sent=p.messages_out,
                received=p.messages_in,
                queued_out=len(p.outq) + (len(p.spool) if p.spool is not None else 0),
                queued_in=len(p.inq),
                dropped=dropped_by_pipe.get(p, 0),
                lost=p.lost + (p.spool.lost if p.spool is not None else 0),
                conflated=p.outq.replaced + p.inq.replaced,
            )
            for p in self._pipes
        ]

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        return [p.peer for p in self._pipes if p.connected and p.peer is not None]

    def recv_many_nowait(self, max_messages: int = 1024) -> list[list[bytes]]:
        """Up to *max_messages* messages that are here now, in order.

        Raises:
            trio.WouldBlock: there are none (nothing consumed).
        """
        self._check_open()
        out = self.pattern.recv_batch(max_messages)
        if not out and self._lender is not None:
            self._lender.read_nowait()
            out = self.pattern.recv_batch(max_messages)
        if not out:
            raise trio.WouldBlock
        self._received += len(out)
        return out

    async def recv_many(self, max_messages: int = 1024) -> list[list[bytes]]:
        """Wait for at least one message, then take up to *max_messages* that are here.

        One checkpoint for the whole batch. If cancelled, nothing was consumed.
        """
        return await self._wait_for(self._wait_to_receive, lambda: self.recv_many_nowait(max_messages))

    def recv_nowait(self) -> bytes:
        """The next single-frame message now; see :meth:`recv`."""
        return self._single(self.recv_multipart_nowait())

    async def recv_multipart(self) -> list[bytes]:
        """The next message, as a list of frames, waiting for one if needed.

        A checkpoint. If cancelled, no message was consumed.

        Raises:
            StateError: this socket type cannot receive now.
            trio.ClosedResourceError: the socket is (or gets) closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        pattern = self.pattern
        msg = pattern.recv()
        if msg is not None:
            self._received += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return msg
        while True:
            await self._wait_to_receive()
            self._check_open()
            msg = pattern.recv()
            if msg is not None:
                self._received += 1
                return msg

    async def _wait_to_receive(self) -> None:
        """Wait until a message may be there. With one connection, whose engine
        lends it, this task reads it (no hand-off between tasks: see
        ``_Session.read_for_receiver``); else it parks until an engine queues
        a message."""
        pipes = self._pipes
        if len(pipes) == 1:
            for pipe in pipes:
                lender = pipe.lender
                if lender is None:
                    pipe.lease_wanted = True
                else:
                    self._lender = lender
                    if await lender.read_for_receiver():
                        return
        elif self._lender is not None:
            self._lender.give_back()
            self._lender = None
        await self._recv_lot.park()

    async def recv(self) -> bytes:
        """The next message, which must have one frame.

        A checkpoint. If cancelled, nothing was consumed.

        Raises:
            StateError: the message has several frames; it is put back, unconsumed:
                use :meth:`recv_multipart`.
        """
        return self._single(await self.recv_multipart())

    def _single(self, msg: Msg) -> bytes:
        if len(msg) != 1:
            self._unreceive(msg)
            raise StateError(f"recv() got a message of {len(msg)} frames; use recv_multipart()")
        return msg[0]

    def _unreceive(self, msg: Msg) -> None:
        """Undo the receive of *msg*: it is the next message received, as if never taken."""
        # who sent it, for recv_multipart_with_peer (the last message put back)
        self._put_back_from = (msg, self._last_read.pipe)
        self.pattern.unrecv(msg)
        self._received -= 1
        self.wake_receivers()

    def __aiter__(self) -> AsyncIterator[list[bytes]]:
        return self

    async def __anext__(self) -> list[bytes]:
        try:
            return await self.recv_multipart()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, topic: bytes | str = b"") -> None:
        """SUB/XSUB: receive messages whose first frame starts with *topic* (b"" = all).

        Counted, as in libzmq: each subscribe needs its own unsubscribe, and
        goes upstream (an ``xpub_verbose`` XPUB reports each), while only the
        last unsubscribe does. On an
        XPUB with ``xpub_manual=True``, subscribes the peer whose subscription
        was received last (nothing, if that peer has left: the ``\x00topic``
        reports of a peer leaving have none). A checkpoint.

        Raises:
            StateError: a socket that does not subscribe, or an ``xpub_manual``
                XPUB that has received no subscription yet.
        """
        await trio.lowlevel.checkpoint()
        self._subscription(topic, True)

    async def unsubscribe(self, topic: bytes | str = b"") -> None:
        """Undo one :meth:`subscribe` of *topic*. A checkpoint."""
        await trio.lowlevel.checkpoint()
        self._subscription(topic, False)

    def _subscription(self, topic: bytes | str, subscribe: bool) -> None:
        self._check_open()
        raw = topic.encode() if isinstance(topic, str) else bytes(topic)
        pattern = self.pattern
        if isinstance(pattern, Sub):
            if subscribe:
                pattern.subscribe(raw)
            else:
                pattern.unsubscribe(raw)
        elif isinstance(pattern, XPub) and self.options.xpub_manual:
            pattern.manual_subscription(raw, subscribe)
        else:
            raise StateError(f"{self.socket_type.name} sockets do not subscribe")

    # ------------------------------------------------------------------ monitoring

    @asynccontextmanager
    async def monitor(self, buffer: int = 1000) -> AsyncIterator[trio.MemoryReceiveChannel[MonitorEvent]]:
        """Connection events as an async iterator, for the duration of the block::

            async with sock.monitor() as events:
                async for event in events:
                    ...

        Events are dropped (not queued without bound) if the reader falls more
        than *buffer* events behind.
        """
        send, receive = trio.open_memory_channel[MonitorEvent](buffer)
        if self._closed:
            send.close()  # (nothing more will happen: the iteration ends at once)
        else:
            self._monitors.append(send)
        try:
            yield receive
        finally:
            # a task still iterating over the events sees their end, not an error
            if send in self._monitors:
                self._monitors.remove(send)
            send.close()

    def emit(self, event: MonitorEvent) -> None:
        for channel in self._monitors:
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def wait_peers(self, count: int = 1) -> None:
        """Wait until at least *count* peers are connected (their handshakes done).

        A checkpoint. Not a cure for PUB/SUB's slow joiner: a subscriber's
        subscriptions arrive just after its handshake (see the pub/sub guide).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._peer_count() < count:
            self._check_open()
            await self._peers_lot.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _peer_count(self) -> int:
        return sum(1 for p in self._pipes if p.connected)

    def statistics(self) -> SocketStatistics:
        """Counters for the socket as a whole (per-peer figures: :meth:`peer_statistics`)."""
        pipes = self._pipes
        return SocketStatistics(
            socket_type=self.socket_type,
            peers=self._peer_count(),
            pipes=len(pipes),
            queued_out=sum(len(p.outq) + (len(p.spool) if p.spool is not None else 0) for p in pipes),
            queued_in=sum(len(p.inq) for p in pipes),
            sent=self._sent,
            received=self._received,
            dropped=self.pattern.dropped,
            lost=self._lost_detached
            + sum(p.lost + (p.spool.lost if p.spool is not None else 0) for p in pipes),
            spooled=sum(len(p.spool) for p in pipes if p.spool is not None),
            conflated=self._conflated_detached + sum(p.outq.replaced + p.inq.replaced for p in pipes),
        )

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Close the socket: wait up to ``linger`` for queued messages to be sent,
        then stop every connection. Idempotent; always closes, even if cancelled.
        """
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        try:
            linger = self.options.linger
            if linger != 0:
                with trio.move_on_after(math.inf if linger is None else linger):
                    while not self._drained():
                        await self._drain_lot.park()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._closed = True
            self._closed_event.set()
            for pipe in self._pipes:
                if pipe.spool is not None:
                    pipe.lost += pipe.spool.discard()
                if not isinstance(pipe.link, InprocLink):
                    pipe.lost += pipe.outq.clear()
            for name in [b.endpoint for b in self._binds.values() if b.scope is None]:
                unbind_inproc(self, parse_endpoint(name).path)
            for pipe in list(self._pipes):
                cancel_pending(self, pipe)
                close_inproc_pipe(pipe)
            self._send_lot.unpark_all()
            self.wake_receivers()
            self._peers_lot.unpark_all()
            self._emit_drops()  # (what a timer task was to report)
            # the acceptors report Closed once cancelled, when the monitors are
            # closed: report it for them, as libzmq's close does and unbind does
            listening = {id(b): b for b in self._binds.values() if b.scope is not None}
            for bind in listening.values():
                if not bind.endpoint.startswith("epgm://"):  # (no acceptor)
                    for each in [bind, *bind.replaced]:
                        self.emit(Closed(each.endpoint))
            for channel in self._monitors:
                channel.close()
            self._nursery.cancel_scope.cancel()

    def _drained(self) -> bool:
        # an inproc pipe's queue is its peer's, read after we close; what its
        # disk swap holds is not, and is waited for (the spool wakes us)
        return all(
            not pipe.spool if isinstance(pipe.link, InprocLink) else pipe.idle() for pipe in self._pipes
        )

    # ------------------------------------------------------------------ SocketCore (engine side)

    def make_connection(self, *, accepted: bool) -> ZMTPConnection:
        options = self.options
        return ZMTPConnection(
            self.socket_type,
            self._make_mechanism(accepted=accepted),
            routing_id=options.routing_id,
            metadata=options.metadata,
            maxmsgsize=options.maxmsgsize,
        )

    def _make_mechanism(self, *, accepted: bool) -> Mechanism:
        """A fresh security mechanism for one connection, from the options.

        Raises:
            ValueError, TypeError: the security options are inconsistent or a key
                is malformed (see ``triomq._mechanisms._select``).
        """
        from ._mechanisms._select import make_mechanism

        return make_mechanism(self.options, accepted=accepted)

    async def authenticate(
        self, credentials: Credentials, *, address: str, routing_id: bytes
    ) -> tuple[bool, bytes, str]:
        """Ask the ``authenticator`` option about one handshake: (allowed, user id, reason).

        The authenticator gets an :class:`AuthRequest` and answers: anything falsy
        denies (``triomq.auth.Deny(reason)`` says why), ``True`` allows, and a
        ``str`` (or bytes) allows and becomes the peer's user id. It may be async
        or not. If it raises, the peer is denied and the error logged. Without an
        authenticator a server denies every client, as libzmq 4.3 does for PLAIN
        (a CURVE server without one does not ask).
        """
        import inspect

        authenticator = self.options.authenticator
        if authenticator is None:
            mechanism = credentials.mechanism
            return False, b"", f"no authenticator: this {mechanism} server refuses every client"
        request = AuthRequest(
            mechanism=credentials.mechanism,
            address=address,
            routing_id=routing_id,
            domain=self.options.zap_domain,
            username=credentials.username,
            password=credentials.password,
            public_key=credentials.public_key,
        )
        try:
            answer: Any = authenticator(request)
            if inspect.isawaitable(answer):
                answer = await answer
            # reading the answer is the authenticator's code too (a str that cannot
            # be UTF-8, a __bool__ that raises): it must deny, not end the socket
            return _read_answer(answer)
        except Exception as exc:  # a broken authenticator denies, and says why
            logger.exception("authenticator raised; denying %s", address or "peer")
            return False, b"", f"authenticator error: {type(exc).__name__}: {exc}"

    def new_pipe(self, endpoint: str, *, persistent: bool) -> Pipe:
        options = self.options
        if self.conflate:
            pipe = Pipe(ConflatingQueue(), self.conflating_inq(), endpoint, persistent=persistent)
        else:
            pipe = Pipe(
                MessageQueue(options.sndhwm), MessageQueue(options.rcvhwm), endpoint, persistent=persistent
            )
        pipe.on_drained = self._pipe_drained
        pipe.last_read = self._last_read
        if options.swap:
            if self._swap_budget is None:
                self._swap_budget = SwapBudget.create(options.swap, options.swap_dir)
            spool = Spool(pipe, self._swap_budget, self._spool_moved)
            spool.on_corruption = lambda reason, lost: self.emit(
                SwapCorrupted(pipe.endpoint, reason, lost)
            )
            spool.on_failure = lambda reason, lost: self.emit(SwapFailed(pipe.endpoint, reason, lost))
            pipe.spool = spool
            self._nursery.start_soon(spool.run)
        self.adopt_queues(pipe)
        return pipe

    def conflating_inq(self) -> ConflatingQueue:
        """An incoming queue that keeps the latest message. A SUB's keeps the
        latest that matches its subscriptions: one that does not (over epgm,
        where the publisher cannot filter) must not push out one that does."""
        pattern = self.pattern
        if self.socket_type is SocketType.SUB and isinstance(pattern, Sub):  # (an XSUB does not filter)
            return ConflatingQueue(pattern.wants)
        return ConflatingQueue()

    def adopt_queues(self, pipe: Pipe) -> None:
        """Wire *pipe*'s queues (possibly shared with an inproc peer) to this socket's wake-ups."""
        spool = pipe.spool
        if spool is None:
            pipe.outq.on_writable = self.wake_senders
        else:

            def outq_writable() -> None:
                spool.wake()
                self.wake_senders()

            pipe.outq.on_writable = outq_writable
        if self.receives:
            pipe.inq.on_readable = self.wake_receivers
        else:
            # a send-only socket discards what comes in, as libzmq's PUB reads
            # and drops an XSUB's messages upstream (a connection's session
            # does not queue them; an inproc peer writes to the queue itself)
            inq = pipe.inq
            inq.on_readable = inq.clear
            inq.clear()

    def _attach(self, pipe: Pipe) -> bool:
        if not self.pattern.attach(pipe):
            return False
        self._pipes.add(pipe)
        # a sender waiting for room may have it now: libzmq queues on a pipe
        # still connecting (unless immediate)
        self.wake_senders()
        return True

    def pipe_connected(self, pipe: Pipe, handshake: HandshakeComplete) -> str | None:
        if self._closed:
            return "socket closed"
        if not pipe.persistent and pipe not in self._pipes and not self._attach(pipe):
            return f"{self.socket_type.name} socket already has a peer"
        # (a ROUTER's connect(routing_id=...) names the peer itself, whoever it is)
        pipe.routing_id = pipe.connect_routing_id or handshake.peer_routing_id
        pipe.peer_metadata = handshake.peer_metadata
        refusal = self.pattern.connected(pipe)
        if refusal is not None:
            if not pipe.persistent:
                self.drop_pipe(pipe)
            return refusal
        pipe.connected = True
        pipe.peer = PeerInfo(
            endpoint=pipe.endpoint,
            address=pipe.peer_address,
            socket_type=handshake.peer_socket_type.name,
            routing_id=pipe.routing_id,
            user_id=handshake.user_id.decode("utf-8", "replace"),
            metadata=dict(handshake.peer_metadata),
        )
        self._peers_lot.unpark_all()
        self.wake_senders()
        if pipe.inq:
            self.wake_receivers()
        return None

    def pipe_disconnected(self, pipe: Pipe) -> None:
        was_connected = pipe.connected
        pipe.connected = False
        if self._flushing:
            self._drain_lot.unpark_all()  # a disconnect() waiting for this pipe stops
        # control items (subscriptions, pings) belong to the connection that ended
        pipe.outq.remove_if(lambda item: type(item) is not list)
        if pipe.persistent and not self._closed:
            if was_connected:
                self.pattern.disconnected(pipe)
            return
        pipe.terminating = True
        pipe.lost += pipe.outq.clear()
        if pipe.spool is not None:  # (its budget and disk are others' now)
            pipe.lost += pipe.spool.discard()
        self.pattern.disconnected(pipe)
        if not pipe.inq or pipe not in self._pipes:
            # (a pipe already dropped, by disconnect() say, is never read again)
            self.drop_pipe(pipe)
        else:
            # the application may still read what this peer sent, before anything
            # it sends over a new connection
            self.pattern.draining(pipe)
            self.wake_receivers()

    def _close_pipe(self, pipe: Pipe, reason: str) -> None:
        """End *pipe*'s connection from this side (the pattern asked: a ROUTER's
        handover); what the peer sent before stays readable, as after any end."""
        if pipe.link is not None:
            pipe.link.close(pipe, reason)

    def connect_ended(self, pipe: Pipe) -> None:
        conn = self._connects.get(pipe.endpoint)
        if conn is not None and conn.pipe is pipe:
            del self._connects[pipe.endpoint]
        if pipe in self._pipes and not pipe.terminating:
            # the handshake failed, so the session never let the pipe go
            pipe.persistent = False
            self.pipe_disconnected(pipe)

    def _pipe_drained(self, pipe: Pipe) -> None:
        self.drop_pipe(pipe)

    def drop_pipe(self, pipe: Pipe) -> None:
        """Detach *pipe* for good."""
        if pipe.spool is not None:
            pipe.lost += pipe.spool.discard()
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            self.pattern.detach(pipe)
            # an inproc pipe's outgoing queue is its peer's incoming one, which the
            # peer still reads (whoever drops one that never joined clears it first)
            queued = 0 if pipe.hands_over else len(pipe.outq)
            # (and what its swap lost to failed reads or corrupted files)
            spool_lost = pipe.spool.lost if pipe.spool is not None else 0
            self._lost_detached += pipe.lost + queued + spool_lost
            self._conflated_detached += pipe.outq.replaced + pipe.inq.replaced
        pipe.terminating = True
        self._drain_lot.unpark_all()

    def pipe_subscription(self, pipe: Pipe, topic: bytes, subscribe: bool) -> None:
        if pipe.terminating:
            # a peer being disconnected (its queue still written out) gets no
            # new messages: what it subscribes to now is not applied, nor
            # reported, as in libzmq, whose pipe has left the socket by then
            return
        self.pattern.subscription(pipe, topic, subscribe)

    def pipe_flushed(self, pipe: Pipe) -> None:
        if self._closing or self._flushing:
            self._drain_lot.unpark_all()

    def initial_subscriptions(self) -> list[bytes]:
        return self.pattern.initial_subscriptions()

    def wake_receivers(self) -> None:
        if self._recv_lot:  # (an empty lot's unpark_all still costs a microsecond)
            self._recv_lot.unpark_all()
        if self._lender is not None:
            self._lender.wake_borrower()

    def _spool_moved(self) -> None:
        """A disk swap gave back room (or messages went to its pipe)."""
        self.wake_senders()
        if self._closing:
            self._drain_lot.unpark_all()  # (aclose waits for inproc swaps: see _drained)

    def wake_senders(self) -> None:
        if self._send_lot:
            self._send_lot.unpark_all()


def _read_answer(answer: Any) -> tuple[bool, bytes, str]:
    """An authenticator's answer as (allowed, user id, reason); see Socket.authenticate.

    Raises whatever the answer raises (a ``str`` that is not UTF-8, a ``__bool__``
    that fails): the caller treats that as the authenticator failing, and denies.
    """
    if isinstance(answer, Deny):
        return False, b"", answer.reason or "denied"
    if not answer:
        return False, b"", "denied"
    if isinstance(answer, str):
        return True, answer.encode("utf-8"), ""
    if isinstance(answer, (bytes, bytearray)):
        return True, bytes(answer), ""
    return True, b"", ""


def _to_message(frames: Iterable[_Frame]) -> Msg:
    """A message the socket owns: a new list of bytes (the caller may reuse its own)."""
    if type(frames) is list or type(frames) is tuple:
        msg = list(frames)
        for frame in msg:
            if type(frame) is not bytes:
                break
        else:
            if msg:
                return msg
    if isinstance(frames, (bytes, bytearray, memoryview, str)):
        raise TypeError("send_multipart takes a list of frames; use send() for one frame")
    msg = []
    for frame in frames:
        if type(frame) is bytes:
            msg.append(frame)
        elif isinstance(frame, (bytearray, memoryview)):
            msg.append(bytes(frame))
        else:
            raise TypeError(f"a frame must be bytes-like, not {type(frame).__name__}")
    if not msg:
        raise ValueError("a message has at least one frame")
    return msg


#: with a disk swap, send_many queues batches in slices of about this many bytes
_SWAP_SLICE = 1 << 20

#: MessagesDropped events come at most this often (seconds)
_DROP_REPORT_IVL = 0.1

#: socket types the conflate option acts on, as libzmq 4.3's (options.hpp,
#: get_effective_conflate_option); the others accept it and ignore it
_CONFLATING = frozenset(
    (SocketType.PUSH, SocketType.PULL, SocketType.DEALER, SocketType.PUB, SocketType.SUB)
)

#: socket types whose linger defaults to 0, as libzmq's (xsub.cpp)
_NO_LINGER = (SocketType.SUB, SocketType.XSUB)


def _stay(pipe: Pipe) -> None:
    """A disconnecting pipe's ``on_drained``: disconnect() drops it itself."""


async def _set_when_done(
    done: trio.Event, fn: Any, *args: Any, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``fn(*args, task_status=...)`` and set *done* when it has ended, however it ends."""
    try:
        await fn(*args, task_status=task_status)
    finally:
        done.set()


async def _host_tasks(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as tasks:
        task_status.started(tasks)
        await trio.sleep_forever()


@asynccontextmanager
async def open_socket(socket_type: SocketType, **options: Any) -> AsyncIterator[Socket]:
    """Open a socket for the duration of an ``async with`` block.

    Args:
        socket_type: ``triomq.PUSH``, ``triomq.SUB``, ...
        **options: socket options with ZeroMQ's names (``sndhwm``, ``linger``, ...);
            see :class:`SocketOptions`.

    The socket's connections run as tasks of a nursery the block owns. Leaving
    the block closes the socket, waiting up to ``linger`` seconds for queued
    messages to be sent (``None``, the default as in libzmq, waits until they
    are; ``0`` drops them; SUB and XSUB default to ``0``, as in libzmq). An exception raised in the block comes out as itself,
    not inside an ExceptionGroup.
    """
    if not isinstance(socket_type, SocketType):
        raise TypeError(f"socket_type must be a triomq.SocketType, not {socket_type!r}")
    if socket_type in _NO_LINGER and "linger" not in options:
        # libzmq's xsub_t sets linger 0: what a subscriber sends is
        # subscriptions, which a closing socket need not deliver
        options["linger"] = 0
    opts = SocketOptions(**options)
    sock: Socket | None = None
    try:
        async with trio.open_nursery() as nursery:
            # the socket's tasks live in a nursery of their own, so closing the
            # socket cancels them and never the code in the block
            tasks: trio.Nursery = await nursery.start(_host_tasks)
            sock = Socket(socket_type, opts, tasks)
            try:
                yield sock
            finally:
                await sock.aclose()
    except BaseExceptionGroup as group:
        # the socket's own tasks never raise (but when cancelled), so a group
        # holds the block's exception
        raise_plain(group)
    finally:
        # the socket's tasks are gone, and with them the spool files
        if sock is not None and sock._swap_budget is not None:
            sock._swap_budget.remove()


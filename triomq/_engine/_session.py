"""One connection's engine: handshake, then a reader and a writer task.

``run_stream_session`` never raises ordinary errors: whatever ends a
connection (EOF, a protocol error, a broken stream, a failed handshake) is
logged and reported as a monitor event, and the function returns.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from .._errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    TriomqError,
)
from .._transports._stream import set_buffers, tls_failure, tune_tcp
from .._zmtp._connection import ZMTPConnection
from .._zmtp._events import (
    NEED_DATA,
    AuthenticationRequested,
    ConnectionClosed,
    HandshakeComplete,
    Message,
    PeerError,
    Ping,
    Pong,
    Subscription,
)
from .._zmtp._frames import Buffer
from ._accounting import WriteLog
from ._core import SocketCore
from ._monitor import Disconnected, FailureKind, HandshakeFailed, HandshakeSucceeded
from ._pipe import Pipe, SubscriptionCommand

logger = logging.getLogger("triomq")

#: a read asks for this much: under glibc's mmap threshold (128 KiB), so the
#: buffer os.read allocates comes from the heap; at 256 KiB every read was an
#: mmap, page faults and a munmap (12 us for a 68-byte read, 6x the time of
#: a 200 KB stream)
RECEIVE_SIZE = 120 * 1024
MAX_RECEIVE_SIZE = 4 * 1024 * 1024
#: a writer sends at most this many bytes per write call (more when one message is larger)
WRITE_BUDGET = 256 * 1024
#: and at most this many messages
WRITE_BATCH = 1024

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
#: batches at least this large go out with sendmsg() straight from the frames
ZERO_COPY_SIZE = 64 * 1024
#: and when their buffers average at least this much (else a join is cheaper)
VECTOR_MIN_AVERAGE = 8 * 1024
_IOV_MAX = 1024
#: a reader that finds data at every read still yields after this many
_READS_PER_YIELD = 8
#: and after any read at least this large
_BULK_READ = 64 * 1024
#: a message sent this long after the previous write is written at once by the
#: sender's task when the writer is idle (request/reply); closer ones coalesce
DIRECT_GAP = 50e-6
#: a connection lent to a receiving task (see _Session.read_for_receiver) goes
#: back to the reader task after this long without a receiver
LEASE_GRACE = 0.002
#: closing a tls:// connection waits at most this long to send its close_notify
TLS_CLOSE_WAIT = 0.1


def _worth_vectoring(out: list[Buffer]) -> bool:
    """Large buffers go out as they are; small ones are cheaper joined."""
    total = sum(map(len, out))
    return total >= ZERO_COPY_SIZE and total >= len(out) * VECTOR_MIN_AVERAGE


async def _write_all(sock: trio.socket.SocketType, buffers: list[Buffer]) -> None:
    """Write every buffer (vectored, however the kernel splits them).

    Straight to the non-blocking descriptor: a write that the kernel takes at
    once costs no schedule point (trio's socket methods yield after each
    call). It waits only when the kernel's buffer is full.
    """
    fd = sock.fileno()
    if len(buffers) == 1:
        data = buffers[0]
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        views = [memoryview(data)[sent:]]
    else:
        views = [memoryview(b) for b in buffers if len(b)]  # (empty frames have empty bodies)
    i = 0
    while i < len(views):
        try:
            sent = os.writev(fd, views[i : i + _IOV_MAX])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        while sent:
            n = views[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0


@attrs.frozen
class _Unwritten:
    """The rest of a message that was written in part (see _Session._write_now)."""

    rest: Buffer


@attrs.frozen
class PingCommand:
    ttl: float
    context: bytes = b""


@attrs.define
class PongCommand:
    #: the latest PING's context while the PONG waits (see _Session._on_command)
    context: bytes


@attrs.frozen
class _Probe:
    """The empty message a ``probe_router`` socket sends first on each
    connection. A control item, not a message: if the connection ends before
    it is written it goes with it (the next connection sends its own), and it
    counts neither against sndhwm nor as a message sent."""


_PROBE = _Probe()


class _PeerClosed(HandshakeError):
    """The peer hung up during the handshake (a FailureKind.CLOSED failure): a kind
    carried by the exception, not read from its text, which may be the peer's."""


#: ZAP status codes, which a peer sends in ERROR when its authenticator refuses us
_ZAP_REFUSALS = ("300", "400", "500")


class _SessionEnded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: what ends a connection when a borrowing receiver meets it: handed to the reader task
_ENDINGS = (_SessionEnded, ProtocolError, TriomqError, OSError)


async def _handshake(
    core: SocketCore, stream: trio.abc.Stream, conn: ZMTPConnection, peer_address: str
) -> HandshakeComplete:
    mech = conn.mechanism
    # a client of PLAIN or CURVE: the server judges us
    judged = not mech.as_server and mech.name in (b"PLAIN", b"CURVE")
    # NULL has no roles: a peer with an authenticator may judge either side. A
    # PLAIN or CURVE server is judged by no one: a status code from its client
    # is no refusal of us
    may_be_judged = judged or mech.name == b"NULL"
    received = 0
    try:
        if isinstance(stream, trio.SSLStream):
            await stream.do_handshake()
        await stream.send_all(conn.data_to_send())
        while True:
            data = await stream.receive_some(65536)
            received += len(data)
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, HandshakeComplete):
                    out = conn.data_to_send()
                    if out:
                        await stream.send_all(out)
                    return event
                if isinstance(event, AuthenticationRequested):
                    allowed, user_id, reason = await core.authenticate(
                        event.credentials,
                        address=peer_address,
                        routing_id=conn.announced_routing_id(),
                    )
                    # the peer learns only the ZAP status code, as from libzmq
                    conn.authentication_result(
                        allowed, user_id=user_id, reason="" if allowed else "400"
                    )
                    out = conn.data_to_send()
                    if out:
                        await stream.send_all(out)
                    if not allowed:
                        reason = reason or "denied"
                        raise AuthenticationError(f"authenticator refused the peer: {reason}")
                elif isinstance(event, PeerError):
                    if judged or (may_be_judged and event.reason in _ZAP_REFUSALS):
                        raise AuthenticationError(f"the peer refused us: ERROR {event.reason}")
                    raise HandshakeError(f"peer refused the handshake: {event.reason}")
                elif isinstance(event, ConnectionClosed):
                    if judged and received >= 64:
                        # libzmq hangs up without a word when it cannot open our CURVE
                        # HELLO, or (PLAIN) has no ZAP handler to ask
                        likely = "wrong curve_serverkey?"
                        if mech.name == b"PLAIN":
                            likely = "refused, or no ZAP handler?"
                        raise AuthenticationError(
                            f"the server closed the connection during the {mech.name.decode()} "
                            f"handshake ({likely})"
                        )
                    raise _PeerClosed("peer closed the connection during the handshake")
            out = conn.data_to_send()
            if out:
                await stream.send_all(out)
    except trio.BrokenResourceError as exc:
        tls = tls_failure(exc)
        if tls is None:
            raise
        reason, refused = tls
        if not refused:
            reason += " during the handshake (did it refuse our certificate?)"
            raise _PeerClosed(reason) from exc
        raise AuthenticationError(f"TLS handshake failed: {reason}") from exc


async def run_stream_session(
    core: SocketCore,
    stream: trio.abc.Stream,
    *,
    endpoint: str,
    peer_address: str,
    pipe: Pipe | None = None,
) -> bool:
    """Run one connection to its end. Returns True if its handshake succeeded.

    A connecting socket passes its persistent *pipe*; an accepting one passes
    None and a pipe is made once the handshake succeeds.
    """
    try:
        options = core.options
        set_buffers(stream, sndbuf=options.sndbuf, rcvbuf=options.rcvbuf)
        tune_tcp(
            stream,
            keepalive=options.tcp_keepalive,
            idle=options.tcp_keepalive_idle,
            cnt=options.tcp_keepalive_cnt,
            intvl=options.tcp_keepalive_intvl,
            tos=options.tos,
            maxrt=options.tcp_maxrt,
        )
        try:
            conn = core.make_connection(accepted=pipe is None)
            timeout = core.options.handshake_ivl
            with trio.fail_after(timeout if timeout else math.inf):
                handshake = await _handshake(core, stream, conn, peer_address)
        except trio.TooSlowError:
            _handshake_failed(core, endpoint, peer_address, FailureKind.TIMEOUT, "handshake timed out")
            return False
        except AuthenticationError as exc:
            await _send_error_quietly(stream, conn, str(exc))
            _handshake_failed(core, endpoint, peer_address, FailureKind.AUTH, str(exc))
            return False
        except (ProtocolError, HandshakeError) as exc:
            await _send_error_quietly(stream, conn, str(exc))
            kind = FailureKind.CLOSED if isinstance(exc, _PeerClosed) else FailureKind.PROTOCOL
            _handshake_failed(core, endpoint, peer_address, kind, str(exc))
            return False
        except _STREAM_ERRORS as exc:
            _handshake_failed(core, endpoint, peer_address, FailureKind.CLOSED, _describe(exc))
            return False
        except Exception as exc:
            # a bug, ours or in code the handshake calls (the authenticator, an
            # option), costs this connection only: raised further, it would end
            # the socket and every other peer on it
            logger.exception("%s: unexpected error in a handshake", endpoint)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            _handshake_failed(core, endpoint, peer_address, FailureKind.PROTOCOL, reason)
            return False

        if pipe is None:
            pipe = core.new_pipe(endpoint, persistent=False)
        pipe.peer_address = peer_address
        refusal = core.pipe_connected(pipe, handshake)
        if refusal is not None:
            await _send_error_quietly(stream, conn, refusal, force=True)
            _handshake_failed(core, endpoint, peer_address, FailureKind.PROTOCOL, refusal)
            if not pipe.persistent:
                core.pipe_disconnected(pipe)
            return False
        core.emit(
            HandshakeSucceeded(
                endpoint,
                peer_address,
                handshake.peer_socket_type.name,
                handshake.peer_routing_id,
                handshake.user_id.decode("utf-8", "replace"),
            )
        )
        session = _Session(core, stream, conn, pipe)
        lost = pipe.lost
        try:
            reason = await session.run()
            # the connection broke (we did not close it): what the peer's kernel
            # never took is lost with it
            pipe.lost += session.unconfirmed()
        finally:
            core.pipe_disconnected(pipe)
        # (reasons are logged with repr: they may quote a peer's ERROR text, which
        # could hold newlines that forge log lines)
        logger.debug("%s: disconnected from %s: %r", endpoint, peer_address or "peer", reason)
        core.emit(Disconnected(endpoint, peer_address, reason, pipe.lost - lost))
        return True
    finally:
        if isinstance(stream, trio.SSLStream) and _tls_established(stream):
            await _close_tls(stream)
        else:
            await trio.aclose_forcefully(stream)


def _tls_established(stream: trio.SSLStream[trio.abc.Stream]) -> bool:
    try:
        return stream.version() is not None
    except trio.NeedHandshakeError:
        return False


async def _close_tls(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """End a TLS connection with a close_notify (one small write, never a wait
    for the peer's): without it the peer sees the connection cut short, a
    TLS error, where it should see a close. Also when the socket is closing
    (cancelled); bounded in time, in case the kernel's buffer is full."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + TLS_CLOSE_WAIT):
        try:
            await stream.aclose()  # (a broken stream: the transport is closed, no alert)
        except _STREAM_ERRORS:
            pass
    await trio.aclose_forcefully(stream)


def _handshake_failed(
    core: SocketCore, endpoint: str, peer_address: str, kind: FailureKind, reason: str
) -> None:
    logger.info("%s: handshake with %s failed (%s): %r", endpoint, peer_address or "peer", kind.value, reason)
    core.emit(HandshakeFailed(endpoint, peer_address, kind, reason))


async def _send_error_quietly(
    stream: trio.abc.Stream, conn: ZMTPConnection, reason: str, *, force: bool = False
) -> None:
    data = conn.data_to_send()
    if force:
        data += conn.encode_error(reason)
    if not data:
        return
    with trio.move_on_after(1):
        try:
            await stream.send_all(data)
        except _STREAM_ERRORS:
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Session:
    """The reader, writer and heartbeat tasks of one established connection."""

    def __init__(self, core: SocketCore, stream: trio.abc.Stream, conn: ZMTPConnection, pipe: Pipe) -> None:
        self.core = core
        self.stream = stream
        self.conn = conn
        self.pipe = pipe
        self._reader_lot = trio.lowlevel.ParkingLot()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self.reason = "closed"
        #: the run's clock, read directly (trio.current_time() is three calls deep)
        self._now = trio.lowlevel.current_clock().current_time
        self._receives = core.receives
        #: a borrowing receiver tries reads this long before it sleeps (busy_poll)
        self._busy_poll = core.options.busy_poll
        self._last_received = self._now()
        #: how long the peer may stay silent (heartbeat timeout, or the TTL it asked for)
        self._peer_timeout: float | None = None
        self._heartbeating = False
        #: a PING of ours waits in the queue (the writer is stuck): no second one
        self._ping_queued = False
        self._nursery: trio.Nursery | None = None
        #: the stream error that ended the connection, if one did
        self._error: BaseException | None = None
        #: the PONG waiting in the queue, if one is
        self._pong: PongCommand | None = None
        self._writes = WriteLog.for_stream(stream)
        self._fd = stream.socket.fileno() if type(stream) is trio.SocketStream else -1
        self._last_write = -math.inf
        # The read lease (see read_for_receiver): while the reader task has lent
        # the connection, a receiving task reads it, waiting on a duplicate of
        # the descriptor (which can be closed to wake it, leaving the writer be)
        self._lent = False
        self._borrowed_fd = -1
        self._borrower_waiting = False
        #: how many times a receiver used the lease (the reader checks it moves)
        self._lease_uses = 0
        self._lease_lot = trio.lowlevel.ParkingLot()
        self._lease_scope: trio.CancelScope | None = None
        #: the reader's lease scope has a deadline (else it waits for a borrower to set one)
        self._lease_deadline_set = False
        #: the decoder may hold events not yet taken (a borrower takes them before waiting)
        self._events_pending = False
        #: what ended the connection in a borrower's hands, for the reader to raise
        self._handed_back: BaseException | None = None
        #: the borrower's last read filled its buffer: read again before waiting
        self._full_read = False

    def unconfirmed(self) -> int:
        """Messages written whose bytes the peer never took (see _accounting)."""
        return self._writes.unconfirmed(self._error) if self._writes is not None else 0

    # the pipe's link: subscriptions travel in the outgoing queue, in order
    def send_subscription(self, pipe: Pipe, topic: bytes, subscribe: bool) -> None:
        pipe.outq.put(SubscriptionCommand(topic, subscribe))

    def close(self, pipe: Pipe, reason: str) -> None:
        """End the connection from this side (its pattern asked), for *reason*;
        the session's end then goes through pipe_disconnected, as any other."""
        self.reason = reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def run(self) -> str:
        pipe = self.pipe
        pipe.outq.on_readable = self._writer_lot.unpark_all
        pipe.inq.on_writable = self._reader_lot.unpark_all
        pipe.peer_minor = self.conn.peer_minor
        # subscriptions go first, then anything queued while disconnected
        for topic in reversed(self.core.initial_subscriptions()):
            pipe.outq.unget(SubscriptionCommand(topic, True))
        if self.core.options.probe_router:
            # before all else, on every connection (libzmq's goes with the pipe,
            # once per connect(): a peer that restarts never hears it again)
            pipe.outq.unget(_PROBE)
        pipe.link = self
        if self._fd >= 0 and self._receives:
            pipe.lender = self
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._guard, self._read_loop, nursery)
                nursery.start_soon(self._guard, self._write_loop, nursery)
                if self.core.options.heartbeat_ivl:
                    self._heartbeating = True
                    nursery.start_soon(self._guard, self._heartbeat_loop, nursery)
        finally:
            pipe.link = None
            pipe.lender = None
            self._lent = False
            self._close_borrowed_fd()
            pipe.direct = None
            pipe.writing = False
            pipe.outq.on_readable = _noop
            pipe.inq.on_writable = _noop
        return self.reason

    async def _guard(self, fn: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
        try:
            try:
                await fn()
            except _ENDINGS:
                # what ended the connection in a borrower's hands is the reason,
                # not what the writer met after it (a closed connection), which
                # may come first, the reader not having run yet
                handed = self._handed_back
                if handed is None:
                    raise
                raise handed from None
        except _SessionEnded as exc:
            self._ending(exc.reason, nursery)
        except ProtocolError as exc:
            self._ending(f"protocol error: {exc.reason}", nursery)
            logger.info("%s: dropping peer: %s", self.pipe.endpoint, exc.reason)
            await _send_error_quietly(self.stream, self.conn, exc.reason)
        except TriomqError as exc:
            self._ending(str(exc), nursery)
        except _STREAM_ERRORS as exc:
            self._ending(_describe(exc), nursery)
            self._error = exc
        nursery.cancel_scope.cancel()

    def _ending(self, reason: str, nursery: trio.Nursery) -> None:
        """The first end of the session is its reason (close(), or the first task
        to fail): a task that fails after it meets only its consequences, such
        as the writer woken by a PONG to send on a connection the reader closed."""
        if not nursery.cancel_scope.cancel_called:
            self.reason = reason
            nursery.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        stream = self.stream
        conn = self.conn
        pipe = self.pipe
        inq = pipe.inq
        take_events = self._take_events
        current_time = self._now
        wanted = conn.bytes_wanted
        gather_buffer = conn.gather_buffer
        fd = self._fd  # (-1 unless a plain socket: then reads go straight to it)
        wait_readable = trio.lowlevel.wait_readable
        unyielded = 0
        drained = False
        while True:
            # events first: frames that came in with the handshake are already buffered
            while not take_events():
                while not inq.writable():  # (the queue is full: wait for the application)
                    await self._reader_lot.park()
            # a large frame being gathered is read in one go where the kernel allows
            size = max(RECEIVE_SIZE, min(wanted(), MAX_RECEIVE_SIZE))
            if fd < 0:
                data = await stream.receive_some(size)
            else:
                # straight from the non-blocking descriptor: data that is there
                # costs no schedule point (trio's recv yields after each call).
                # A flood still yields every few reads, and a bulk read at once
                # (the application drains its queue meanwhile: measured faster).
                # After a short read the kernel had nothing more: wait first,
                # rather than try a read that fails (a request/reply's reader
                # then hands over to the receiver sooner)
                if drained:
                    drained = False
                    if pipe.lease_wanted:
                        # a receiver waits on this connection alone: let it read
                        await self._lend()
                        unyielded = 0
                        continue
                    await wait_readable(fd)
                    unyielded = 0
                view = gather_buffer()
                try:
                    if view is not None:
                        # the rest of a large frame, straight into its buffer
                        n = os.readv(fd, (view,))
                        del view  # (the buffer goes back to a pool once the frame is whole)
                        if n:
                            conn.gathered(n)
                            self._last_received = current_time()
                            await trio.lowlevel.cancel_shielded_checkpoint()
                            unyielded = 0
                            continue
                        data = b""
                    else:
                        data = os.read(fd, size)
                except BlockingIOError:
                    drained = True
                    continue
                drained = len(data) < size
                unyielded += 1
                if unyielded >= _READS_PER_YIELD or len(data) >= _BULK_READ:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    unyielded = 0
            self._last_received = current_time()
            conn.receive_data(data)

    def _on_command(self, event: object) -> None:
        """Act on an event other than a message (for the reader, or a borrower)."""
        if isinstance(event, Subscription):
            self.core.pipe_subscription(self.pipe, event.topic, event.subscribe)
        elif isinstance(event, Ping):
            # one PONG waits at a time, for the latest PING, as in libzmq: a peer
            # that sends PINGs and reads nothing cannot pile PONGs up in memory
            pong = self._pong
            if pong is None:
                self._pong = PongCommand(event.context)
                self.pipe.outq.put(self._pong)
            else:
                pong.context = event.context
            if event.ttl and not self._peer_timeout:
                self._peer_timeout = event.ttl
                if not self._heartbeating:
                    self._heartbeating = True
                    assert self._nursery is not None
                    self._nursery.start_soon(self._guard, self._heartbeat_loop, self._nursery)
        elif isinstance(event, Pong):
            pass
        elif isinstance(event, PeerError):
            raise _SessionEnded(f"peer sent ERROR: {event.reason}")
        elif isinstance(event, ConnectionClosed):
            raise _SessionEnded("peer closed the connection")

    # ------------------------------------------------------------ the read lease
    #
    # Handing a message from the reader task to the receiving task costs a pass
    # of Trio's loop on every request/reply. So while a task waits in recv on a
    # socket that has this one connection, the reader steps aside (``_lend``)
    # and the receiving task reads the connection itself: it waits until the
    # descriptor is readable, reads, decodes and queues, as the reader would,
    # and finds its message. It keeps the lease as long as it goes on
    # receiving; LEASE_GRACE after the last receive, the reader takes it back,
    # so heartbeats, commands and the end of the connection are still read
    # while the application does other things. Whatever ends the connection in
    # a borrower's hands is handed to the reader, which ends the session as it
    # would have.

    async def _lend(self) -> None:
        """Step aside until no receiver has used the lease for LEASE_GRACE, a
        receiver gives it back, or one hands back what ended the connection."""
        self.pipe.lease_wanted = False
        self._lent = True
        self._events_pending = False  # (the reader lends only once it took them all)
        self.core.wake_receivers()  # the receiver that asked takes it now
        uses = self._lease_uses
        try:
            deadline = self._now() + LEASE_GRACE
            while True:
                with trio.CancelScope(deadline=deadline) as scope:
                    self._lease_scope = scope
                    self._lease_deadline_set = deadline != math.inf
                    await self._lease_lot.park()
                self._lease_scope = None
                if self._handed_back is not None:
                    raise self._handed_back
                if not self._lent:
                    return
                if self._borrower_waiting:
                    deadline = math.inf  # the borrower sets one when it stops waiting
                elif self._lease_uses != uses:  # used since: look again a grace later
                    uses = self._lease_uses
                    deadline = self._now() + LEASE_GRACE
                else:
                    return
        finally:
            self._lent = False
            self._lease_scope = None
            self._close_borrowed_fd()

    async def read_for_receiver(self) -> bool:
        """Read the connection in the calling (receiving) task, once the reader
        has lent it; True when something may have arrived, after a checkpoint.

        False, at once and with no checkpoint, when the reader holds it or
        another task is reading it: the caller parks as usual, and the reader
        lends the connection at its next wait. Cancelled while waiting, it
        consumed nothing (what it read is queued, never dropped).
        """
        if not self._borrowable():
            self.pipe.lease_wanted = True
            return False
        self._lease_uses += 1
        try:
            if self._events_pending and self._take_pending():
                await trio.lowlevel.cancel_shielded_checkpoint()
                return True
            waited = not self._full_read
            if waited:
                fd = self._borrowed_fd
                if fd < 0:
                    try:
                        fd = self._borrowed_fd = os.dup(self._fd)
                    except OSError:  # out of descriptors: let the reader do it
                        self.give_back()
                        self.pipe.lease_wanted = False
                        return False
                self._borrower_waiting = True
                try:
                    if self._busy_poll and await self._busy_poll_read():
                        return True
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    return True  # woken (wake_borrower): something else changed
                finally:
                    self._borrower_waiting = False
                    if not self._lease_deadline_set and self._lease_scope is not None:
                        self._lease_scope.deadline = self._now() + LEASE_GRACE
                        self._lease_deadline_set = True
                if not self._lent:
                    return True  # taken back meanwhile (the session may be closing its socket)
            self._read_once()
            self._take_events()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return True
        except _ENDINGS as exc:
            self._hand_back(exc)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return True

    async def _busy_poll_read(self) -> bool:
        """Try to read, a pass of the loop apart, for up to busy_poll seconds;
        True if something came (or the borrower was woken), False if the time
        ran out with nothing read.

        Real time, not Trio's clock: it bounds the CPU spent spinning (and a
        frozen clock in a test would never end it). Cancellable at each pass,
        with nothing consumed: what was read is queued.
        """
        until = time.perf_counter() + self._busy_poll
        passes = 0
        while True:
            self._read_once()
            if self._events_pending:
                self._take_events()
                if not passes:  # (the call's schedule point)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return True
            if time.perf_counter() >= until:
                return False
            await trio.lowlevel.checkpoint()
            passes += 1
            if self._borrowed_fd < 0 or not self._lent:
                return True  # woken (wake_borrower), or the lease was taken back

    def _borrowable(self) -> bool:
        """The connection is lent, and no other task is reading it or has
        handed back what ended it."""
        return self._lent and not self._borrower_waiting and self._handed_back is None

    def read_nowait(self) -> None:
        if not self._borrowable():
            return
        try:
            if self._events_pending and self._take_pending():
                return
            self._read_once()
            self._take_events()
        except _ENDINGS as exc:
            self._hand_back(exc)

    def wake_borrower(self) -> None:
        if self._borrower_waiting:
            self._close_borrowed_fd()

    def give_back(self) -> None:
        if self._lent:
            self._lent = False
            self._close_borrowed_fd()
            self._lease_lot.unpark_all()

    def _hand_back(self, exc: BaseException) -> None:
        self._handed_back = exc
        self._lease_lot.unpark_all()

    def _close_borrowed_fd(self) -> None:
        fd = self._borrowed_fd
        if fd >= 0:
            self._borrowed_fd = -1
            trio.lowlevel.notify_closing(fd)  # (wakes a borrower waiting on it)
            os.close(fd)

    def _read_once(self) -> None:
        """One non-blocking read into the decoder (nothing if the kernel has nothing)."""
        conn = self.conn
        fd = self._fd
        view = conn.gather_buffer()
        try:
            if view is not None:
                n = os.readv(fd, (view,))
                self._full_read = n == len(view)
                del view
                if n:
                    conn.gathered(n)
                    self._events_pending = True
                    self._last_received = self._now()
                    return
                data = b""
            else:
                data = os.read(fd, RECEIVE_SIZE)
                self._full_read = len(data) == RECEIVE_SIZE
        except BlockingIOError:
            self._full_read = False
            return
        self._last_received = self._now()
        self._events_pending = True
        conn.receive_data(data)

    def _take_pending(self) -> bool:
        """Take what the decoder still holds (the queue was full when it came
        in); True if that queued a message."""
        queued = self.pipe.messages_in
        self._take_events()
        return self.pipe.messages_in != queued

    def _take_events(self) -> bool:
        """Queue the messages the decoder holds, as far as the incoming queue
        has room, and act on commands (the reader's work, and a borrower's).

        True once the decoder is drained; False when the queue is full first.
        A socket that does not receive discards messages (never full).
        """
        conn = self.conn
        pipe = self.pipe
        inq = pipe.inq
        receives = self._receives
        while True:
            room = inq.room() if receives else 1 << 30
            if room <= 0:
                return False
            # fast path: whole data messages in bulk, as many as the queue takes
            batch: list[list[bytes]] = []
            drained = conn.read_messages(batch, room)
            if batch and receives:
                pipe.deliver_many(batch)
            if not drained:
                if receives and inq.room() <= 0:
                    return False
                event = conn.next_event()
                if type(event) is Message:
                    if receives:  # (room for it was checked above)
                        pipe.deliver(event.frames)
                    continue
                if event is not NEED_DATA:
                    self._on_command(event)
                    continue
            self._events_pending = False
            return True

    async def _write_loop(self) -> None:
        stream = self.stream
        conn = self.conn
        pipe = self.pipe
        outq = pipe.outq
        core = self.core
        encode_into = conn.encode_messages_into
        streaming = False
        # plain sockets get vectored writes for large messages (no join, no copy)
        sock = stream.socket if type(stream) is trio.SocketStream else None
        fd = self._fd
        writes = self._writes
        while True:
            if not outq:
                core.pipe_flushed(pipe)
                if fd >= 0:
                    pipe.direct = self._write_now
                try:
                    while not outq:
                        await self._writer_lot.park()
                finally:
                    pipe.direct = None
            # Coalesce while messages stream in: yield and let senders add more, so
            # one write carries them all. Trio runs a round's tasks in random order,
            # so the queue must stay still for two rounds before we stop waiting.
            # Only after a write of several messages: a lone request (request/reply)
            # is written at once, with no extra yield and never a timer.
            if streaming:
                queued = len(outq)
                still = 0
                # never let coalescing fill the queue: at its HWM a PUB drops, others block
                most = min(WRITE_BATCH, outq.capacity // 2 or WRITE_BATCH)
                while still < 2 and queued < most:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if len(outq) == queued:
                        still += 1
                    else:
                        queued = len(outq)
                        still = 0
            pipe.writing = True
            # take about a budget's worth, judging by the first message's size
            first = outq.peek()
            size = sum(map(len, first)) + 16 if type(first) is list else 64
            items = outq.get_batch(max(1, min(WRITE_BATCH, WRITE_BUDGET // size)))
            count = len(items)
            out: list[Buffer] = []
            messages = 0
            batch: list[list[bytes]] = []
            for item in items:
                if type(item) is list:
                    batch.append(item)
                    continue
                if batch:
                    messages += len(batch)
                    encode_into(out, batch)
                    batch = []
                if type(item) is _Unwritten:
                    messages += 1
                    out.append(item.rest)
                else:
                    out.append(self._encode_control(item))
            if batch:
                messages += len(batch)
                encode_into(out, batch)
            streaming = count > 1
            try:
                if sock is not None:
                    if len(out) > 2 and _worth_vectoring(out):
                        nbytes = sum(map(len, out))
                    else:
                        out = [b"".join(out) if len(out) > 1 else out[0]]
                        nbytes = len(out[0])
                    await _write_all(sock, out)
                else:
                    data = b"".join(out) if len(out) > 1 else out[0]
                    nbytes = len(data)
                    await stream.send_all(data)
            except BaseException:
                # whatever was taken off the queue and not fully written is lost
                pipe.lost += messages
                raise
            pipe.writing = False
            if writes is not None:
                writes.wrote(nbytes, messages)

    def _write_now(self, msg: list[bytes]) -> bool:
        """A message sent while the writer is idle and nothing is queued: write
        it at once, saving a task switch on the way out (request/reply).

        Only when the previous write is some time past: messages streaming in
        are left to the writer, which coalesces them.
        """
        now = self._now()
        if now - self._last_write < DIRECT_GAP:
            self._last_write = now
            return False
        self._last_write = now
        out: list[Buffer] = []
        try:
            self.conn.encode_messages_into(out, [msg])
        except LocalProtocolError:  # the connection is closing: the writer finds out
            return False
        data = b"".join(out) if len(out) > 1 else out[0]
        try:
            sent = os.write(self._fd, data)
        except OSError:  # full, or broken: the writer finds out
            sent = 0
        if self._writes is not None:
            self._writes.wrote(sent, 1 if sent == len(data) else 0)
        if sent < len(data):
            # the rest goes first, and counts as the message it belongs to
            self.pipe.outq.put(_Unwritten(memoryview(data)[sent:]))
        return True

    def _encode_control(self, item: object) -> bytes:
        conn = self.conn
        if isinstance(item, SubscriptionCommand):
            return conn.encode_subscription(item.topic, item.subscribe)
        if isinstance(item, PongCommand):
            if item is self._pong:
                self._pong = None
            return conn.encode_pong(item.context)
        if isinstance(item, PingCommand):
            self._ping_queued = False
            return conn.encode_ping(item.ttl, item.context)
        if item is _PROBE:
            return conn.encode_message((b"",))
        raise AssertionError(f"unknown control item {item!r}")

    async def _heartbeat_loop(self) -> None:
        """PING every heartbeat_ivl; drop the peer if nothing arrives within
        heartbeat_timeout of a PING, or within the TTL the peer asked for."""
        options = self.core.options
        ivl = options.heartbeat_ivl
        # None: the interval (libzmq's -1); 0: no timeout, as in libzmq
        timeout = ivl if options.heartbeat_timeout is None else options.heartbeat_timeout
        ttl = options.heartbeat_ttl or 0.0
        outq = self.pipe.outq
        now = trio.current_time()
        next_ping = now + ivl if ivl else math.inf
        pending: float | None = None
        while True:
            wake = next_ping
            if pending is not None and timeout:
                wake = min(wake, pending + timeout)
            if self._peer_timeout:
                wake = min(wake, self._last_received + self._peer_timeout)
            await trio.sleep_until(wake)
            now = trio.current_time()
            last = self._last_received
            if pending is not None:
                if last >= pending:
                    pending = None
                elif timeout and now >= pending + timeout:
                    raise _SessionEnded(f"heartbeat timeout: no answer to PING in {timeout}s")
            if self._peer_timeout and now - last >= self._peer_timeout:
                raise _SessionEnded(f"heartbeat TTL of {self._peer_timeout}s expired")
            if now >= next_ping:
                if not self._ping_queued:  # (else the last one has not gone out yet)
                    self._ping_queued = True
                    outq.put(PingCommand(ttl))
                if pending is None:
                    pending = now
                next_ping = now + ivl  # type: ignore[operator]


def _noop() -> None:
    pass

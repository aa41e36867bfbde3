"""The Pattern interface and the pipe protocol patterns see."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .._errors import StateError, TriomqError
from .._options import SocketOptions
from .._socket_type import SocketType

if TYPE_CHECKING:
    from ._lb import FairQueue

#: A message is a list of frames. A pattern may prepend or strip envelope frames.
Msg = list[bytes]


class PipeLike(Protocol):
    """What a pattern may do with a pipe (one peer's pair of bounded queues)."""

    #: the peer's routing id, known once the handshake completes (ROUTER uses it)
    routing_id: bytes
    #: a routing id fixed by the connecting ROUTER itself (connect(routing_id=...)),
    #: which the pipe keeps across reconnects; b"" if none
    connect_routing_id: bytes
    #: True once the peer's handshake completed (``immediate`` sockets only use these)
    connected: bool
    #: the peer is gone for good: the pipe only yields what it already received
    terminating: bool
    #: the peer receives the very message objects written here (inproc): a
    #: message for several peers must give each of these its own copy
    hands_over: bool

    def __hash__(self) -> int: ...

    def writable(self) -> bool:
        """Room for one more message in the outgoing queue (below sndhwm)."""

    def write(self, msg: Msg) -> None:
        """Queue a whole message for the peer (call only when writable())."""

    def room(self) -> int:
        """How many more messages :meth:`write_many` may queue now (0 when not writable)."""

    def write_many(self, msgs: list[Msg]) -> None:
        """Queue whole messages for the peer, no more than :meth:`room`."""

    def unwrite(self, msg: Msg) -> bool:
        """Take back *msg* (the very object) if it is still queued; True if it was."""

    def readable(self) -> bool:
        """A message from the peer is waiting."""

    def read(self) -> Msg:
        """Take the next message from the peer (call only when readable())."""

    def read_many(self, max_messages: int) -> list[Msg]:
        """Take up to *max_messages* waiting messages from the peer."""

    def take_all(self) -> list[Msg]:
        """Take every waiting message, for the pattern to hand out later (it
        calls :meth:`mark_read` then); nothing else happens (a terminating
        pipe is not dropped: the socket checks its queue itself)."""

    def mark_read(self) -> None:
        """The message the application gets now came from this pipe (its peer info)."""

    def send_subscription(self, topic: bytes, subscribe: bool) -> None:
        """Pass a subscription (or cancel) to the peer, bypassing the HWM."""


def write_as_room_allows(pipe: PipeLike, msgs: list[Msg], copy: bool = False) -> int:
    """Queue as many of *msgs* as *pipe* has room for, in order (copies of
    them, with *copy*); returns how many."""
    done, total = 0, len(msgs)
    while done < total:
        room = pipe.room()
        if room <= 0:
            break
        chunk = msgs[done : done + room] if done or room < total else msgs
        pipe.write_many([list(msg) for msg in chunk] if copy else chunk)
        done += len(chunk)
    return done


class Pattern(abc.ABC):
    """One socket type's rules. The socket calls it with its pipes; it never blocks.

    ``send`` returns False when the message cannot be queued now (the socket then
    waits and retries); patterns that drop instead return True after dropping.
    ``recv`` returns None when nothing is available.
    """

    socket_type: SocketType
    #: False for send-only types (PUB, PUSH): incoming messages are discarded
    receives: bool = True
    #: False for receive-only types (SUB, PULL)
    sends: bool = True
    #: the fair queue of patterns that have one
    _fq: FairQueue | None = None
    #: True if a received message is exactly the fair queue's next one (no
    #: envelope or state), so batches can be taken from the pipes in bulk
    bulk_receive: bool = False

    def __init__(self, options: SocketOptions) -> None:
        self.options = options
        #: messages this pattern dropped (HWM, unroutable)
        self.dropped = 0
        #: set by the socket: call when something a receiver waits for arrived
        self.wake_receivers: Callable[[], None] = _noop
        #: set by the socket: call when a waiting sender may now succeed
        self.wake_senders: Callable[[], None] = _noop
        #: set by the socket: end a pipe's connection from this side (what its
        #: peer sent before stays readable), with the reason it is given
        self.close_pipe: Callable[[PipeLike, str], None] = lambda pipe, reason: None
        self._put_back: list[Msg] = []

    @abc.abstractmethod
    def attach(self, pipe: PipeLike) -> bool:
        """A new pipe (a new peer, or a connecting pipe not yet connected).

        Returns False to refuse it (PAIR takes one peer only).
        """

    @abc.abstractmethod
    def detach(self, pipe: PipeLike) -> None:
        """A pipe is gone for good."""

    def connected(self, pipe: PipeLike) -> str | None:
        """A pipe's peer completed its handshake (also after a reconnect).

        Returns a reason to refuse the peer (e.g. a duplicate routing id), or None.
        """
        return None

    def disconnected(self, pipe: PipeLike) -> None:  # noqa: B027
        """A pipe's connection ended (it may come back, or be detached later)."""

    def draining(self, pipe: PipeLike) -> None:
        """A pipe's peer is gone for good, but the pipe still holds messages to read.

        Patterns that fair-queue read these first, so that a peer that
        reconnects (and gets a new pipe) is heard in order.
        """
        fq = self._fq
        if fq is not None:
            fq.draining(pipe)

    def send(self, msg: Msg) -> bool:
        raise StateError(f"{self.socket_type.name} sockets cannot send")

    def send_batch(self, msgs: list[Msg]) -> int:
        """Queue as many of *msgs* as fit now, in order; how many were taken.

        Each one is handled exactly as :meth:`send` would (queued, or dropped and
        counted); patterns override this to queue in bulk. If :meth:`send`
        raises once some messages were taken, the batch stops there and their
        count is returned (the caller must learn what went out); the failing
        message is then the first of the rest, and raises on the next call.
        Only an error on the first message propagates. Overrides keep this rule.
        """
        send = self.send
        sent = 0
        for msg in msgs:
            try:
                if not send(msg):
                    break
            except TriomqError:
                if not sent:
                    raise
                break
            sent += 1
        return sent

    def recv(self) -> Msg | None:
        """The next message for the application, or None."""
        if self._put_back:
            return self._put_back.pop()
        return self.recv_message()

    def recv_message(self) -> Msg | None:
        raise StateError(f"{self.socket_type.name} sockets cannot receive")

    def recv_batch(self, max_messages: int) -> list[Msg]:
        """Up to *max_messages* messages for the application (possibly none)."""
        out: list[Msg] = []
        if self.bulk_receive and self._fq is not None:
            if self._put_back:
                out.append(self._put_back.pop())
            self._fq.recv_batch(out, max_messages)
            return out
        recv = self.recv
        while len(out) < max_messages:
            msg = recv()
            if msg is None:
                break
            out.append(msg)
        return out

    def unrecv(self, msg: Msg) -> None:
        """Put a message handed out by recv() back; the next recv() returns it."""
        self._put_back.append(msg)

    def subscription(self, pipe: PipeLike, topic: bytes, subscribe: bool) -> None:  # noqa: B027
        """A peer subscribed or cancelled (only publishers care)."""

    def initial_subscriptions(self) -> list[bytes]:
        """Topics to announce to a peer that just connected (only subscribers have any)."""
        return []


def _noop() -> None:
    pass

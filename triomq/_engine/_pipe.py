"""Pipes: the bounded queues between a socket and one peer.

A pipe has an outgoing queue (the socket writes, the peer's engine reads) and
an incoming queue (the engine writes, the socket reads), each bounded by its
high-water mark. Queues hold whole messages, so a message is queued all at once
or not at all. Waking is done through callbacks set by whoever waits: the
socket's parking lots on one side, the engine's (or, for inproc, the peer
socket's) on the other. Callbacks fire on transitions only (empty to non-empty,
and down to the low-water mark of half the capacity), so a busy pipe costs few
wake-ups: a writer that waited for room is woken once there is room for many.

With the ``conflate`` option a socket's queues conflate (``ConflatingQueue``):
no high-water mark, and only the latest message waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from .._patterns._base import Msg


def _noop() -> None:
    pass


class MessageQueue:
    """A FIFO of messages with a capacity (0 = unlimited).

    ``put`` never refuses: the writer checks ``writable()`` first, which is how
    HWM is enforced (control items like subscriptions bypass it on purpose).
    """

    __slots__ = ("_items", "capacity", "on_readable", "on_writable")

    #: messages replaced by a newer one (a :class:`ConflatingQueue`'s count; never here)
    replaced = 0

    def __init__(self, capacity: int) -> None:
        self._items: deque[Any] = deque()
        self.capacity = capacity
        #: called when the queue goes from empty to non-empty
        self.on_readable: Callable[[], object] = _noop
        #: called when the queue drains to half its capacity (its low-water mark,
        #: as libzmq's pipes): a writer that waited for room then gets a lot of it
        self.on_writable: Callable[[], object] = _noop

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def writable(self) -> bool:
        cap = self.capacity
        return not cap or len(self._items) < cap

    def put(self, item: Any) -> None:
        items = self._items
        items.append(item)
        if len(items) == 1:
            self.on_readable()

    def room(self) -> int:
        """How many more items fit (a large number when unlimited)."""
        cap = self.capacity
        return cap - len(self._items) if cap else 1 << 30

    def put_many(self, items: list[Any]) -> None:
        queue = self._items
        was_empty = not queue
        queue.extend(items)
        if was_empty and queue:
            self.on_readable()

    def get_many(self, max_items: int) -> list[Any]:
        """Up to *max_items* items from the front."""
        return self.get_batch(max_items)

    def peek(self) -> Any:
        """The front item, left in place."""
        return self._items[0]

    def get(self) -> Any:
        items = self._items
        item = items.popleft()
        cap = self.capacity
        if cap and len(items) == cap >> 1:
            self.on_writable()
        return item

    def get_batch(self, max_items: int) -> list[Any]:
        """Up to *max_items* items from the front."""
        items = self._items
        before = len(items)
        if before <= max_items:
            batch = list(items)
            items.clear()
        else:
            popleft = items.popleft
            batch = [popleft() for _ in range(max_items)]
        cap = self.capacity
        if cap and before > cap >> 1 >= len(items):
            self.on_writable()
        return batch

    def unget(self, item: Any) -> None:
        """Put an item back at the front (a reader that took it but could not use it)."""
        self._items.appendleft(item)
        if len(self._items) == 1:
            self.on_readable()

    def remove_if(self, predicate: Callable[[Any], bool]) -> int:
        """Drop the items matching *predicate*; returns how many."""
        kept = [item for item in self._items if not predicate(item)]
        removed = len(self._items) - len(kept)
        if removed:
            before = len(self._items)
            self._items = deque(kept)
            cap = self.capacity
            if cap and before > cap >> 1 >= len(kept):
                self.on_writable()
        return removed

    def clear(self) -> int:
        return self.remove_if(lambda item: True)

    def successor(self) -> MessageQueue:
        """An empty queue of the same kind and capacity, to take this one's
        place in a pipe (its counts carry on; its callbacks do not)."""
        return MessageQueue(self.capacity)


class ConflatingQueue(MessageQueue):
    """A queue that keeps only the latest message: the ``conflate`` option.

    A message put while another one waits takes its place, and the older one
    is counted in ``replaced``. Messages are whole, so the one kept is the
    last whole message (libzmq keeps the last frame). Control items
    (subscriptions, heartbeats, the rest of a half-written message) are kept,
    in order, as in any queue. There is no high-water mark: the queue is never
    full, as libzmq's conflating pipes ignore ``sndhwm`` and ``rcvhwm``.
    """

    __slots__ = ("admit", "replaced")

    def __init__(self, admit: Callable[[Msg], bool] | None = None) -> None:
        super().__init__(0)
        self.replaced = 0
        #: a receiving queue's filter (a SUB's subscriptions): a message it
        #: rejects is discarded on arrival instead of replacing the one waiting
        self.admit = admit

    def take_over(self, queue: MessageQueue) -> ConflatingQueue:
        """Take what *queue* holds, conflated (to take its place in a pipe,
        rewired by its owner)."""
        for item in queue._items:
            self.put(item)
        return self

    def writable(self) -> bool:
        return True

    def room(self) -> int:
        return 1 << 30

    def put(self, item: Any) -> None:
        if type(item) is not list:
            super().put(item)
        elif self.admit is None or self.admit(item):
            self._put_message(item)

    def _put_message(self, msg: Msg) -> None:
        items = self._items
        # in the waiting message's place: the queue's length (and so its
        # wake-ups) does not change
        for i in range(len(items) - 1, -1, -1):
            if type(items[i]) is list:
                items[i] = msg
                self.replaced += 1
                return
        items.append(msg)
        if len(items) == 1:
            self.on_readable()

    def put_many(self, items: list[Any]) -> None:
        if not all(type(item) is list for item in items):
            for item in items:  # (control items come one at a time: not in practice)
                self.put(item)
            return
        admit = self.admit
        if admit is not None:
            items = [msg for msg in items if admit(msg)]
        if items:
            self.replaced += len(items) - 1
            self._put_message(items[-1])

    def unget(self, item: Any) -> None:
        if type(item) is list and any(type(each) is list for each in self._items):
            self.replaced += 1  # (older than the message waiting, which stays)
            return
        super().unget(item)

    def successor(self) -> ConflatingQueue:
        new = ConflatingQueue(self.admit)
        new.replaced = self.replaced
        return new


@attrs.frozen
class SubscriptionCommand:
    """A subscription travelling in a pipe's outgoing queue (bypasses the HWM)."""

    topic: bytes
    subscribe: bool


class Lender(Protocol):
    """A connection's engine that lets a receiving task read for it (see ``_Session``)."""

    async def read_for_receiver(self) -> bool:
        """Read the connection in the calling task, until something arrives;
        False (at once, no checkpoint) if it may not now: then park as usual."""

    def read_nowait(self) -> None:
        """Read what the kernel has now, if the connection is lent."""

    def wake_borrower(self) -> None:
        """Wake a task waiting in :meth:`read_for_receiver` (something else changed)."""

    def give_back(self) -> None:
        """The socket's receivers stop borrowing: the engine reads again."""


class PipeLink(Protocol):
    """Where a pipe's control traffic goes: the engine (stream) or the inproc peer."""

    def send_subscription(self, pipe: Pipe, topic: bytes, subscribe: bool) -> None: ...

    def close(self, pipe: Pipe, reason: str) -> None:
        """End *pipe*'s connection from this side, for *reason*; what the peer
        sent before stays readable."""


@attrs.define(eq=False, slots=True, repr=False)
class Pipe:
    """One peer's pair of queues, as a pattern sees it (``PipeLike``).

    Attributes:
        endpoint: the endpoint this pipe belongs to (for monitoring and disconnect).
        persistent: a connecting socket's pipe, kept across reconnects.
        connected: the peer's handshake is complete and it is there now.
        terminating: the peer is gone; the pipe only yields what it already received.
    """

    outq: MessageQueue
    inq: MessageQueue
    endpoint: str
    persistent: bool = False
    routing_id: bytes = b""
    #: the routing id a ROUTER's connect(routing_id=...) gave this pipe (b"": none)
    connect_routing_id: bytes = b""
    connected: bool = False
    terminating: bool = False
    link: PipeLink | None = None
    #: the peer's ZMTP minor version, and its metadata
    peer_minor: int = 1
    peer_metadata: dict[str, bytes] = attrs.field(factory=dict)
    #: called once the pipe is terminating and its incoming queue is empty
    on_drained: Callable[[Pipe], None] = attrs.field(default=lambda pipe: None)
    #: messages counted through this pipe
    messages_out: int = 0
    messages_in: int = 0
    #: messages lost when the connection broke (queued or half-written)
    lost: int = 0
    #: a writer is between taking messages off outq and finishing writing them
    writing: bool = False
    #: the disk swap behind outq (a ``_swap.Spool``), when the ``swap`` option is set
    spool: Any = None
    #: who the peer is (a ``PeerInfo``), once its handshake completed
    peer: Any = None
    #: the peer's address as the transport reported it
    peer_address: str = ""
    #: shared with the socket: the pipe the last message was read from
    last_read: Any = None
    #: set by an idle engine: writes a message at once, if it may (returns
    #: True if it took the message); None while the engine is busy or absent
    direct: Callable[[Msg], bool] | None = None
    #: set by an engine whose descriptor a receiving task may read itself
    lender: Lender | None = None
    #: a receiver parked on this pipe alone: its engine should lend its descriptor
    lease_wanted: bool = False
    #: the peer takes the very message objects queued here (inproc), where an
    #: engine would only encode them
    hands_over: bool = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "terminating" if self.terminating else "pending"
        return f"<Pipe {self.endpoint} {state} out={len(self.outq)} in={len(self.inq)}>"

    # --- PipeLike, as the patterns use it

    def writable(self) -> bool:
        if self.terminating:
            return False
        spool = self.spool
        if spool is None:
            return self.outq.writable()
        if spool:  # once anything is spooled, new messages queue behind it
            return bool(spool.has_room())
        return self.outq.writable() or bool(spool.has_room())

    def write(self, msg: Msg) -> None:
        self.messages_out += 1
        spool = self.spool
        if spool is not None and (spool or not self.outq.writable()):
            spool.append(msg)
        elif self.direct is None or self.outq or not self.direct(msg):
            self.outq.put(msg)

    def room(self) -> int:
        if self.terminating:
            return 0
        if self.spool is not None:  # one at a time: each decides between queue and disk
            return 1 if self.writable() else 0
        return self.outq.room()

    def write_many(self, msgs: list[Msg]) -> None:
        if self.spool is not None:
            for msg in msgs:
                self.write(msg)
            return
        self.messages_out += len(msgs)
        self.outq.put_many(msgs)

    def unwrite(self, msg: Msg) -> bool:
        if self.outq.remove_if(lambda item: item is msg):
            self.messages_out -= 1
            return True
        return False

    def readable(self) -> bool:
        return bool(self.inq)

    def read(self) -> Msg:
        msg: Msg = self.inq.get()
        if self.last_read is not None:
            self.last_read.pipe = self
        if self.terminating and not self.inq:
            self.on_drained(self)
        return msg

    def send_subscription(self, topic: bytes, subscribe: bool) -> None:
        link = self.link
        if link is not None:
            link.send_subscription(self, topic, subscribe)

    # --- engine side

    def deliver(self, msg: Msg) -> None:
        """The engine queues a received message (after checking ``inq.writable()``)."""
        self.messages_in += 1
        self.inq.put(msg)

    def deliver_many(self, msgs: list[Msg]) -> None:
        """The engine queues received messages (no more than ``inq.room()``)."""
        self.messages_in += len(msgs)
        self.inq.put_many(msgs)

    def read_many(self, max_messages: int) -> list[Msg]:
        msgs: list[Msg] = self.inq.get_batch(max_messages)
        if self.last_read is not None:
            self.last_read.pipe = self
        if self.terminating and not self.inq:
            self.on_drained(self)
        return msgs

    def take_all(self) -> list[Msg]:
        return self.inq.get_batch(len(self.inq))

    def mark_read(self) -> None:
        if self.last_read is not None:
            self.last_read.pipe = self

    def idle(self) -> bool:
        """Nothing waits to be written to the peer."""
        return not self.outq and not self.writing and not self.spool

"""PUB, SUB, XPUB and XSUB (RFC 29/PUBSUB).

Publishers filter by prefix (one :class:`PrefixIndex` keyed by pipe, holding a
pipe once per prefix as libzmq's mtrie) and never block: a subscriber whose pipe is at its HWM loses that message, which is
counted. Subscribers filter too, with the same index, so transports that
cannot filter at the publisher (multicast) behave the same.

Two options have classes of their own, which ``make_pattern`` picks, so that
the usual case checks no option per message: with ``xpub_nodrop``
(:class:`NoDropPub`, :class:`NoDropXPub`) a publisher queues a message for
all the subscribers it matches or, while one of them is full, for none (and
the socket waits); with ``invert_matching`` a SUB (:class:`InvertedSub`)
keeps what its topics do not match. An inverted publisher picks its matching
function once, when it is made.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable
from typing import cast

from .._errors import StateError
from .._options import SocketOptions
from .._socket_type import SocketType
from ._base import Msg, Pattern, PipeLike, write_as_room_allows
from ._lb import FairQueue
from ._prefix import PrefixIndex


class Pub(Pattern):
    """Sends each message to every pipe subscribed to a prefix of its first frame."""

    socket_type = SocketType.PUB
    receives = False

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self.pipes: list[PipeLike] = []
        # a pipe holds a topic once: a peer subscribes as often as its
        # application does, but cancels once (libzmq's SUB and XSUB)
        self.index = PrefixIndex(counted=False)
        #: messages dropped per pipe (at its HWM)
        self.dropped_by_pipe: dict[PipeLike, int] = {}
        #: the subscribers a message's first frame goes to
        self._match: Callable[[bytes], Collection[Hashable]] = (
            self._match_inverted if options.invert_matching else self.index.match_keys
        )

    def _match_inverted(self, data: bytes) -> Collection[Hashable]:
        """invert_matching: the connected subscribers none of whose prefixes
        *data* starts with, as libzmq's reversed matching (a subscriber that has
        subscribed to nothing gets everything). Only peers there now, as without
        inversion: a connecting pipe, which holds no subscriptions, queues nothing,
        nor does one whose peer is being disconnected (still connected while
        its queue is written out)."""
        matched = self.index.match_keys(data)
        if not matched:
            return [pipe for pipe in self.pipes if pipe.connected and not pipe.terminating]
        if len(matched) > 8:
            matched = set(matched)
        return [pipe for pipe in self.pipes if pipe.connected and not pipe.terminating and pipe not in matched]

    def attach(self, pipe: PipeLike) -> bool:
        self.pipes.append(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        self.pipes.remove(pipe)
        self.dropped_by_pipe.pop(pipe, None)
        self._unsubscribe_all(pipe)

    def disconnected(self, pipe: PipeLike) -> None:
        self._unsubscribe_all(pipe)

    def _unsubscribe_all(self, pipe: PipeLike) -> None:
        """*pipe*'s peer is gone: forget its subscriptions."""
        self.index.remove_key(pipe)

    def subscription(self, pipe: PipeLike, topic: bytes, subscribe: bool) -> None:
        if subscribe:
            self.index.add(topic, pipe)
        else:
            self.index.remove(topic, pipe)

    def send(self, msg: Msg) -> bool:
        keys = self._match(msg[0])
        if not keys:
            return True
        several = len(keys) > 1
        for key in keys:
            pipe = cast(PipeLike, key)
            if pipe.writable():
                # an inproc peer gets the message object itself: its own copy
                pipe.write(list(msg) if several and pipe.hands_over else msg)
            else:
                self._drop(pipe, 1)
        return True

    def send_batch(self, msgs: list[Msg]) -> int:
        # each subscriber's share of the batch, queued in order, as runs:
        # consecutive messages for the same subscribers (all of them, when
        # everyone takes every topic) are one slice, shared by their pipes,
        # and marked when it goes to several. (With a disk swap, whose budget
        # the pipes share, the batch fills it one subscriber after another.)
        shares: dict[Hashable, list[tuple[list[Msg], bool]]] = {}
        match_keys = self._match
        keys: Collection[Hashable] = ()
        start = 0
        for i, msg in enumerate(msgs):
            found = match_keys(msg[0])
            if found != keys:
                _add_run(shares, keys, msgs[start:i])
                keys, start = found, i
        _add_run(shares, keys, msgs[start:])
        for key, runs in shares.items():
            pipe = cast(PipeLike, key)
            for n, (run, several) in enumerate(runs):
                # an inproc peer gets the message objects themselves: copies,
                # of what fits, when others get them too
                written = write_as_room_allows(pipe, run, copy=several and pipe.hands_over)
                if written < len(run):
                    self._drop(pipe, len(run) - written + sum(len(r) for r, _ in runs[n + 1 :]))
                    break
        return len(msgs)

    def _drop(self, pipe: PipeLike, count: int) -> None:
        """*pipe* is at its HWM: it misses *count* messages."""
        self.dropped += count
        self.dropped_by_pipe[pipe] = self.dropped_by_pipe.get(pipe, 0) + count


class NoDropPub(Pub):
    """A PUB with ``xpub_nodrop`` (libzmq's ZMQ_XPUB_NODROP): a message is
    queued for every subscriber it matches, or, if one of them is full, for
    none, and the socket waits (libzmq's xpub_t::xsend checks every matching
    pipe's HWM first, ``dist_t::check_hwm``). Nothing is dropped or counted
    as dropped. A change of subscriptions, or a peer leaving, may let a
    waiting message through: the socket's senders are woken."""

    def send(self, msg: Msg) -> bool:
        keys = self._match(msg[0])
        if not keys:
            return True
        for key in keys:
            if not cast(PipeLike, key).writable():
                return False
        several = len(keys) > 1
        for key in keys:
            pipe = cast(PipeLike, key)
            pipe.write(list(msg) if several and pipe.hands_over else msg)
        return True

    def send_batch(self, msgs: list[Msg]) -> int:
        """The messages that fit whole, in order, up to the first that does
        not: those are queued as a lossy PUB's batch (which then drops nothing)."""
        if self.options.swap:
            # a pipe with a swap decides between its queue and the disk (whose
            # budget all the pipes share) one message at a time
            return Pattern.send_batch(self, msgs)
        fit = self._fitting(msgs)
        if not fit:
            return 0
        return super().send_batch(msgs if fit == len(msgs) else msgs[:fit])

    def _fitting(self, msgs: list[Msg]) -> int:
        """How many of *msgs*, from the first, fit in the queues of all the
        subscribers they match (each one's room counted down as it goes)."""
        match = self._match
        rooms: dict[Hashable, int] = {}
        fit = run = 0
        keys: Collection[Hashable] | None = None
        for msg in msgs:  # in runs of messages for the same subscribers
            found = match(msg[0])
            if found == keys:
                run += 1
                continue
            if keys is not None:
                took = _take_room(rooms, keys, run)
                fit += took
                if took < run:
                    return fit
            keys, run = found, 1
        if keys is not None:
            fit += _take_room(rooms, keys, run)
        return fit

    def subscription(self, pipe: PipeLike, topic: bytes, subscribe: bool) -> None:
        super().subscription(pipe, topic, subscribe)
        self.wake_senders()

    def disconnected(self, pipe: PipeLike) -> None:
        super().disconnected(pipe)
        self.wake_senders()

    def detach(self, pipe: PipeLike) -> None:
        super().detach(pipe)
        self.wake_senders()


#: what an XPUB's pending entry is: a message a peer sent, a report of its
#: subscription, or a report of a peer that has left (xpub_manual has no one
#: to apply a subscription to)
_MESSAGE, _REPORT, _REPORT_OF_GONE = 0, 1, 2


class XPub(Pub):
    """A PUB that hands subscriptions to the application as ``\\x01topic`` / ``\\x00topic``.

    Duplicates are filtered (only a topic's first subscriber and last
    unsubscriber are reported) unless ``xpub_verbose`` / ``xpub_verboser``.
    With ``xpub_manual`` the application decides: after receiving a
    subscription it calls ``subscribe``/``unsubscribe`` for the peer that sent it.

    As in libzmq, the application gets a peer's reports and upstream messages
    in the order they arrived, and a peer that leaves is reported as cancelling
    the topics nobody else holds (default, ``xpub_verbose``), every topic it
    held (``xpub_verboser``), or every topic it asked for (``xpub_manual``).
    """

    _fq: FairQueue

    socket_type = SocketType.XPUB
    receives = True

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._fq = FairQueue()
        #: for the application before the fair queue: (message, the pipe it
        #: came from, what it is: _MESSAGE, _REPORT, or _REPORT_OF_GONE, a
        #: report whose peer has left). A report goes behind what its
        #: pipe delivered before it (moved here from the pipe's queue), as
        #: libzmq's one queue in arrival order. (That lifts the rcvhwm for a
        #: peer that interleaves subscriptions and messages; libzmq's XPUB reads
        #: its pipes without one.)
        self._pending: deque[tuple[Msg, PipeLike, int]] = deque()
        #: xpub_manual: the peer of the last report read (None once it is gone)
        self._last_pipe: PipeLike | None = None
        self._read_a_report = False
        #: xpub_manual: what each peer asked for, cancelled for it when it leaves
        self._asked = PrefixIndex(counted=False)
        #: the pipes given the xpub_welcome_msg
        self._welcomed: set[PipeLike] = set()

    def attach(self, pipe: PipeLike) -> bool:
        super().attach(pipe)
        self._fq.attach(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        super().detach(pipe)
        self._fq.detach(pipe)
        self._welcomed.discard(pipe)
        if self._last_pipe is pipe:
            self._last_pipe = None
        # its reports stay (libzmq's do): only the peer to apply them to is gone
        if any(p is pipe and kind == _REPORT for _, p, kind in self._pending):
            self._pending = deque(
                (m, p, _REPORT_OF_GONE if p is pipe and kind == _REPORT else kind)
                for m, p, kind in self._pending
            )

    def connected(self, pipe: PipeLike) -> str | None:
        welcome = self.options.xpub_welcome_msg
        # once per pipe, as libzmq: not again when a connecting XPUB reconnects
        if welcome is not None and pipe not in self._welcomed and pipe.writable():
            self._welcomed.add(pipe)
            pipe.write([welcome])
        return None

    def _unsubscribe_all(self, pipe: PipeLike) -> None:
        options = self.options
        if options.xpub_manual:
            # libzmq reports what the peer asked for, whatever the application granted
            gone = self._asked.prefixes(pipe)
            self._asked.remove_key(pipe)
            self.index.remove_key(pipe)
        elif options.xpub_verboser:
            gone = self.index.prefixes(pipe)
            self.index.remove_key(pipe)
        else:
            gone = self.index.remove_key(pipe)
        if gone:
            self._take_delivered(pipe)
            # (in libzmq's order: its trie's, which is the bytes' order)
            self._pending.extend(
                ([b"\x00" + prefix], pipe, _REPORT_OF_GONE) for prefix in sorted(gone)
            )
            self.wake_receivers()

    def _take_delivered(self, pipe: PipeLike) -> None:
        """Move what *pipe* delivered so far to the pending queue, ahead of a report of it."""
        if pipe.readable():
            self._pending.extend((msg, pipe, _MESSAGE) for msg in pipe.take_all())

    def _report(self, msg: bytes, pipe: PipeLike) -> None:
        self._take_delivered(pipe)
        self._pending.append(([msg], pipe, _REPORT))
        self.wake_receivers()

    def subscription(self, pipe: PipeLike, topic: bytes, subscribe: bool) -> None:
        options = self.options
        if options.xpub_manual:
            if subscribe:
                self._asked.add(topic, pipe)
            else:
                self._asked.remove(topic, pipe)
            self._report((b"\x01" if subscribe else b"\x00") + topic, pipe)
            return
        if subscribe:
            _, first = self.index.add(topic, pipe)
            notify = first or options.xpub_verbose or options.xpub_verboser
        else:
            held, last = self.index.remove(topic, pipe)
            # libzmq reports a cancel of what the peer did not hold too
            notify = last or not held or options.xpub_verboser
        if notify:
            self._report((b"\x01" if subscribe else b"\x00") + topic, pipe)

    def recv_message(self) -> Msg | None:
        if self._pending:
            msg, pipe, kind = self._pending.popleft()
            if kind != _MESSAGE:
                self._last_pipe = pipe if kind == _REPORT else None
                self._read_a_report = True
            pipe.mark_read()  # (a report names its subscriber too, gone or not)
            return msg
        got = self._fq.recv()
        return None if got is None else got[1]

    def manual_subscription(self, topic: bytes, subscribe: bool) -> None:
        """xpub_manual: apply a subscription for the peer whose subscription was last received.

        Nothing happens if that peer is gone (its reports of leaving have no
        peer), as in libzmq, so an application may mirror every report.
        """
        pipe = self._last_pipe
        if pipe is None:
            if self._read_a_report:
                return
            raise StateError("no subscription received yet: no subscriber to apply it to")
        if subscribe:
            self.index.add(topic, pipe)
        else:
            self.index.remove(topic, pipe)


class NoDropXPub(NoDropPub, XPub):
    """An XPUB with ``xpub_nodrop`` (see :class:`NoDropPub`)."""

    def manual_subscription(self, topic: bytes, subscribe: bool) -> None:
        super().manual_subscription(topic, subscribe)
        self.wake_senders()


class Sub(Pattern):
    """Fair-queues messages that match its subscriptions; sends subscriptions to every peer."""

    _fq: FairQueue

    socket_type = SocketType.SUB
    sends = False

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._fq = FairQueue()
        self.pipes: list[PipeLike] = []
        self.filter = PrefixIndex()
        #: messages received that matched no subscription
        self.filtered = 0
        for topic in options.subscribe:
            self.filter.add(topic)
        #: is a message whose first frame is this kept (InvertedSub: the opposite)
        self._keeps: Callable[[bytes], bool] = self.filter.matches

    def attach(self, pipe: PipeLike) -> bool:
        self._fq.attach(pipe)
        self.pipes.append(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        self._fq.detach(pipe)
        self.pipes.remove(pipe)

    def initial_subscriptions(self) -> list[bytes]:
        return list(self.filter.all_prefixes())

    def wants(self, msg: Msg) -> bool:
        """*msg* would be kept now (it matches a subscription)."""
        return self._keeps(msg[0])

    def _keeps_all(self) -> bool:
        """Every message is kept, as things stand (a batch needs no test)."""
        return self.filter.matches_all

    def subscribe(self, topic: bytes) -> None:
        self.filter.add(topic)
        # every one goes upstream, as libzmq's SUB sends them (an XPUB_VERBOSE
        # counts them; a publisher holds the topic once per peer all the same)
        for pipe in self.pipes:
            pipe.send_subscription(topic, True)

    def unsubscribe(self, topic: bytes) -> None:
        _, last = self.filter.remove(topic)
        if last:
            for pipe in self.pipes:
                pipe.send_subscription(topic, False)

    def recv_message(self) -> Msg | None:
        fq = self._fq
        keeps = self._keeps
        while True:
            got = fq.recv()
            if got is None:
                return None
            msg = got[1]
            if keeps(msg[0]):
                return msg
            self.filtered += 1

    def recv_batch(self, max_messages: int) -> list[Msg]:
        """Messages in bulk from the fair queue, filtered in one pass."""
        out: list[Msg] = []
        if self._put_back:
            out.append(self._put_back.pop())
        fq = self._fq
        keeps = self._keeps
        while len(out) < max_messages:
            got: list[Msg] = []
            fq.recv_batch(got, max_messages - len(out))
            if not got:
                break
            if self._keeps_all():
                out.extend(got)
                continue
            kept = [msg for msg in got if keeps(msg[0])]
            self.filtered += len(got) - len(kept)
            out.extend(kept)
        return out


class InvertedSub(Sub):
    """A SUB with ``invert_matching``: it keeps the messages none of its topics
    match (with no topics, every message), as libzmq's xsub_t::match. Its
    subscriptions go upstream as usual: an inverted publisher leaves out what
    they match, a publisher that is not inverted sends only that, and this
    socket then keeps nothing."""

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._keeps = self._matches_none

    def _matches_none(self, data: bytes) -> bool:
        return not self.filter.matches(data)

    def _keeps_all(self) -> bool:
        return not self.filter  # (no topics: nothing to leave out)


class XSub(Sub):
    """A SUB whose application sends subscriptions as messages (``\\x01topic`` / ``\\x00topic``),
    and may send other messages upstream. It does not filter what it receives."""

    socket_type = SocketType.XSUB
    sends = True
    # no filtering: the fair queue's bulk path as it is
    bulk_receive = True
    recv_batch = Pattern.recv_batch

    def send(self, msg: Msg) -> bool:
        first = msg[0]
        if len(msg) == 1 and first[:1] == b"\x01":
            topic = first[1:]
            self.filter.add(topic)
            # XPUB upstream deduplicates; libzmq's XSUB forwards every subscribe
            for pipe in self.pipes:
                pipe.send_subscription(topic, True)
            return True
        if len(msg) == 1 and first[:1] == b"\x00":
            topic = first[1:]
            _, last = self.filter.remove(topic)
            if last:
                for pipe in self.pipes:
                    pipe.send_subscription(topic, False)
            return True
        several = len(self.pipes) > 1
        for pipe in self.pipes:
            if pipe.writable():
                pipe.write(list(msg) if several and pipe.hands_over else msg)
            else:
                self.dropped += 1
        return True

    def initial_subscriptions(self) -> list[bytes]:
        return list(self.filter.all_prefixes())

    def recv_message(self) -> Msg | None:
        got = self._fq.recv()
        return None if got is None else got[1]


def _take_room(rooms: dict[Hashable, int], keys: Collection[Hashable], wanted: int) -> int:
    """How many of *wanted* messages all of *keys* have room for (their room
    in *rooms*, found on first use); that many are taken from each one's room."""
    took = wanted
    for key in keys:
        room = rooms.get(key)
        if room is None:
            room = rooms[key] = max(cast(PipeLike, key).room(), 0)
        if room < took:
            took = room
    for key in keys:
        rooms[key] -= took
    return took


def _add_run(shares: dict[Hashable, list[tuple[list[Msg], bool]]], keys: Collection[Hashable], run: list[Msg]) -> None:
    """Give *run* to each of *keys* (every subscriber's list of runs, in
    order), marked True when it goes to more than one."""
    if not run:
        return
    marked = (run, len(keys) > 1)
    for key in keys:
        runs = shares.get(key)
        if runs is None:
            shares[key] = [marked]
        else:
            runs.append(marked)

"""REQ, REP, DEALER and ROUTER (RFC 28/REQREP), with envelopes and routing ids."""

from __future__ import annotations

import os
import random
import struct

from .._errors import HostUnreachable, StateError
from .._options import SocketOptions
from .._socket_type import SocketType
from ._base import Msg, Pattern, PipeLike
from ._lb import FairQueue, LoadBalancer

_U32 = struct.Struct("<I")


class Dealer(Pattern):
    """Round-robin out to peers with room, fair-queue in; no envelopes."""

    _fq: FairQueue

    socket_type = SocketType.DEALER
    bulk_receive = True

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._lb = LoadBalancer()
        self._fq = FairQueue()

    def attach(self, pipe: PipeLike) -> bool:
        self._lb.attach(pipe)
        self._fq.attach(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        self._lb.detach(pipe)
        self._fq.detach(pipe)

    def send(self, msg: Msg) -> bool:
        return self._lb.send(msg, self.options.immediate) is not None

    def send_batch(self, msgs: list[Msg]) -> int:
        return self._lb.send_batch(msgs, self.options.immediate)

    def recv_message(self) -> Msg | None:
        got = self._fq.recv()
        return None if got is None else got[1]


class Req(Dealer):
    """A DEALER that adds the envelope and keeps one request outstanding.

    With ``req_relaxed`` (the default) a new request may be sent while a reply
    is awaited: the old request is abandoned. If it has not left yet it is
    taken back out of its queue; if it has, its late reply is recognised by
    the request id that ``req_correlate`` (the default) puts in the envelope,
    and dropped. So a cancelled ``recv`` never leaves the socket stuck.
    """

    socket_type = SocketType.REQ
    bulk_receive = False
    # each request goes through send(): it adds the envelope and keeps the state
    send_batch = Pattern.send_batch

    def recv_batch(self, max_messages: int) -> list[Msg]:
        msg = self.recv()
        return [] if msg is None else [msg]

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._expecting = False
        self._request_id = random.Random(os.urandom(8)).getrandbits(32)
        self._reply_pipe: PipeLike | None = None
        self._last_request: Msg | None = None
        #: replies dropped because they answered an abandoned request
        self.stale_replies = 0

    def detach(self, pipe: PipeLike) -> None:
        super().detach(pipe)
        if pipe is self._reply_pipe:
            self._reply_pipe = None

    def send(self, msg: Msg) -> bool:
        options = self.options
        if self._expecting and not options.req_relaxed:
            raise StateError("REQ must receive the reply before sending again (req_relaxed=False)")
        pipe = self._lb.pick(options.immediate)
        if pipe is None:
            return False
        if self._expecting:
            self._abandon()
        self._discard_waiting()
        if options.req_correlate:
            self._request_id = (self._request_id + 1) & 0xFFFFFFFF
            request = [_U32.pack(self._request_id), b"", *msg]
        else:
            request = [b"", *msg]
        pipe.write(request)
        self._reply_pipe = pipe
        self._last_request = request
        self._expecting = True
        return True

    def _discard_waiting(self) -> None:
        """A new request begins: whatever is waiting answers an older one (a
        reply put back by recv(), a late reply), as libzmq's req_t::xsend
        eats them. Without ``req_correlate`` nothing else would tell them
        from the new request's reply."""
        stale = len(self._put_back)
        self._put_back.clear()
        recv = self._fq.recv
        while recv() is not None:
            stale += 1
        self.stale_replies += stale

    def _abandon(self) -> None:
        pipe, request = self._reply_pipe, self._last_request
        if pipe is not None and request is not None:
            pipe.unwrite(request)
        self._last_request = None

    def recv_message(self) -> Msg | None:
        if not self._expecting:
            raise StateError("REQ must send a request before receiving")
        correlate = self.options.req_correlate
        expected_id = _U32.pack(self._request_id)
        # read before the loop: taking a gone peer's last message detaches its
        # pipe (on_drained), which clears _reply_pipe while the reply is in hand
        reply_pipe = self._reply_pipe
        while True:
            got = self._fq.recv()
            if got is None:
                return None
            pipe, msg = got
            if pipe is not reply_pipe:
                self.stale_replies += 1
                continue
            if correlate:
                if len(msg) < 2 or msg[0] != expected_id or msg[1] != b"":
                    self.stale_replies += 1
                    continue
                body = msg[2:]
            else:
                # (a lone b"" is no reply: a probe_router ROUTER's first message)
                if len(msg) < 2 or msg[0] != b"":
                    self.stale_replies += 1
                    continue
                body = msg[1:]
            self._expecting = False
            self._reply_pipe = None
            self._last_request = None
            self.wake_senders()
            return body

    def disconnected(self, pipe: PipeLike) -> None:
        if pipe is self._reply_pipe:
            # the request will not be answered through this connection
            self._last_request = None


class Rep(Pattern):
    """Fair-queues requests; a reply goes back with the request's envelope.

    ``recv`` while a reply is still owed abandons that request (a handler that
    was cancelled does not leave the socket stuck); libzmq would raise EFSM.
    A reply whose requester has gone (or is not reading) is dropped and
    counted, as libzmq does: a client that gave up does not stop the server.
    """

    _fq: FairQueue

    socket_type = SocketType.REP

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._fq = FairQueue()
        self._pending: tuple[PipeLike, Msg] | None = None
        #: requests abandoned: recv() again before their reply was sent
        self.abandoned = 0

    def attach(self, pipe: PipeLike) -> bool:
        self._fq.attach(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        # a pending request keeps its (now terminating) pipe: the reply is then
        # dropped by send(), as libzmq does, instead of send() raising because
        # the requester left while its request was being handled
        self._fq.detach(pipe)

    def recv_batch(self, max_messages: int) -> list[Msg]:
        # only the request received last can be answered: a batch would abandon
        # all the others, so one at a time
        msg = self.recv()
        return [] if msg is None else [msg]

    def recv_message(self) -> Msg | None:
        while True:
            got = self._fq.recv()
            if got is None:
                return None
            pipe, msg = got
            try:
                split = msg.index(b"") + 1
            except ValueError:
                split = 0
            if split == 0 or split == len(msg):
                # no envelope delimiter: libzmq's delimiter is an empty frame
                # with more to follow; without one it drops the message
                self.dropped += 1
                continue
            if self._pending is not None:
                self.abandoned += 1
            self._pending = (pipe, msg[:split])
            return msg[split:]

    def send(self, msg: Msg) -> bool:
        if self._pending is None:
            raise StateError("REP must receive a request before sending a reply")
        pipe, envelope = self._pending
        self._pending = None
        # a request recv() put back (it had several frames) is the one being
        # answered: it must not come out again, without its envelope
        self._put_back.clear()
        if pipe.writable():
            pipe.write(envelope + msg)
        else:
            self.dropped += 1  # the requester is gone or not reading: libzmq drops too
        return True


class Router(Pattern):
    """Prefixes received messages with the peer's routing id; routes sent ones by it.

    A pipe with a ``connect_routing_id`` (``connect(ep, routing_id=...)``) is
    routable by it from the start, as libzmq's ZMQ_CONNECT_ROUTING_ID: messages
    queue for it while it connects or reconnects (unless ``immediate``).
    """

    _fq: FairQueue

    socket_type = SocketType.ROUTER

    def __init__(self, options: SocketOptions) -> None:
        super().__init__(options)
        self._fq = FairQueue()
        self._by_id: dict[bytes, PipeLike] = {}
        self._next_id = random.Random(os.urandom(8)).getrandbits(32)
        #: messages sent to an unknown routing id, and dropped
        self.unroutable = 0

    def attach(self, pipe: PipeLike) -> bool:
        self._fq.attach(pipe)
        rid = pipe.connect_routing_id
        if rid:
            # (the socket checked that no one has it: routing_id_in_use)
            pipe.routing_id = rid
            self._by_id[rid] = pipe
        return True

    def detach(self, pipe: PipeLike) -> None:
        self._fq.detach(pipe)
        self._forget(pipe)

    def routing_id_in_use(self, rid: bytes) -> bool:
        """A peer (or a connect's pipe) has *rid*."""
        return rid in self._by_id

    def _forget(self, pipe: PipeLike) -> None:
        if self._by_id.get(pipe.routing_id) is pipe:
            del self._by_id[pipe.routing_id]

    def _generate_id(self) -> bytes:
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            rid = b"\x00" + self._next_id.to_bytes(4, "big")
            if rid not in self._by_id:
                return rid

    def connected(self, pipe: PipeLike) -> str | None:
        rid = pipe.routing_id
        if not rid:
            rid = pipe.routing_id = self._generate_id()
        # a peer's id may start with a zero byte, as libzmq 4.3's router.cpp
        # takes any (one may then clash with a generated id: a duplicate)
        old = self._by_id.get(rid)
        if old is not None and old is not pipe:
            if not self.options.router_handover:
                return f"routing id {rid!r} is already in use"
            # handover, as libzmq: the old connection ends; what it sent before
            # is still read, under a new id, and nothing goes to it any more.
            # An id a connect() gave is lost with it, as libzmq's: that connect
            # takes its peer's own id from its next connection on
            old.connect_routing_id = b""
            old.routing_id = self._generate_id()
            self._by_id[old.routing_id] = old
            self._by_id[rid] = pipe
            self.close_pipe(old, f"routing id {rid!r} handed over to a new connection")
            return None
        self._by_id[rid] = pipe
        return None

    def disconnected(self, pipe: PipeLike) -> None:
        if pipe.connect_routing_id and not pipe.terminating:
            return  # it reconnects under the same id: messages queue meanwhile
        self._forget(pipe)

    def send(self, msg: Msg) -> bool:
        if len(msg) < 2:
            raise StateError("ROUTER messages start with a routing id frame, then the body")
        pipe = self._by_id.get(msg[0])
        if pipe is None or (
            not pipe.connected and (not pipe.connect_routing_id or self.options.immediate)
        ):
            if self.options.router_mandatory:
                raise HostUnreachable(f"no peer with routing id {msg[0]!r}")
            self.unroutable += 1
            self.dropped += 1
            return True
        if not pipe.writable():
            if self.options.router_mandatory:
                return False  # wait for room, as libzmq's EAGAIN
            self.dropped += 1
            return True
        pipe.write(msg[1:])
        return True

    def recv_message(self) -> Msg | None:
        got = self._fq.recv()
        if got is None:
            return None
        pipe, msg = got
        return [pipe.routing_id, *msg]

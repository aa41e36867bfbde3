"""inproc://: sockets of the same Trio run joined by shared queues, with no codec.

As in libzmq, a connecting socket's pipe exists from ``connect()`` on, so it
can queue messages before the name is bound; the queues are joined to the
binder's when it appears (bind and connect work in either order). Each queue's
capacity is the sender's sndhwm plus the receiver's rcvhwm; both queues
conflate (no capacity, the latest message) if either socket does. Inproc
connections are not re-established once either side closes.

The registry of bound names lives in a ``trio.lowlevel.RunVar``: one per
``trio.run``, no process-wide state.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from .._errors import EndpointError
from .._zmtp._events import HandshakeComplete
from ._core import SocketCore
from ._monitor import FailureKind, HandshakeFailed
from ._pipe import ConflatingQueue, Pipe


class InprocCore(SocketCore, Protocol):
    """What the inproc transport needs beyond ``SocketCore``."""

    #: the conflate option is on, and acts on this socket's type
    conflate: bool

    def conflating_inq(self) -> ConflatingQueue: ...

    def wake_receivers(self) -> None: ...

    def wake_senders(self) -> None: ...

    def drop_pipe(self, pipe: Pipe) -> None: ...

    def adopt_queues(self, pipe: Pipe) -> None: ...


@attrs.define(eq=False)
class _Pending:
    core: InprocCore
    pipe: Pipe


@attrs.define(eq=False)
class _Registry:
    bound: dict[str, InprocCore] = attrs.field(factory=dict)
    pending: dict[str, list[_Pending]] = attrs.field(factory=dict)


_registry: trio.lowlevel.RunVar[_Registry] = trio.lowlevel.RunVar("triomq_inproc")


def _get_registry() -> _Registry:
    try:
        return _registry.get()
    except LookupError:
        reg = _Registry()
        _registry.set(reg)
        return reg


@attrs.define(eq=False)
class InprocLink:
    """A pipe's link to its inproc peer: subscriptions go straight to the peer socket."""

    peer_core: InprocCore
    peer_pipe: Pipe
    #: the socket whose pipe this link is
    core: InprocCore

    def send_subscription(self, pipe: Pipe, topic: bytes, subscribe: bool) -> None:
        self.peer_core.pipe_subscription(self.peer_pipe, topic, subscribe)

    def close(self, pipe: Pipe, reason: str) -> None:
        """End the pair from this side, which still reads what the peer sent:
        the peer's pipe gives up the queue they share (it would count what is
        in it as lost), then each side drops its pipe once read."""
        peer_pipe = self.peer_pipe
        peer_pipe.outq = peer_pipe.outq.successor()
        close_inproc_pipe(pipe)
        self.core.pipe_disconnected(pipe)


def bind_inproc(core: InprocCore, name: str) -> None:
    """Register *name*; join the pipes of sockets already connecting to it."""
    reg = _get_registry()
    if name in reg.bound:
        raise EndpointError(f"inproc://{name} is already bound (address in use)")
    reg.bound[name] = core
    for pending in reg.pending.pop(name, []):
        _join(pending.core, pending.pipe, core, name)


def unbind_inproc(core: InprocCore, name: str) -> None:
    reg = _get_registry()
    if reg.bound.get(name) is core:
        del reg.bound[name]


def connect_inproc(core: InprocCore, name: str, pipe: Pipe) -> None:
    """Join *pipe* (already made and attached by the connecting socket) to the binder of *name*."""
    reg = _get_registry()
    pipe.hands_over = True
    binder = reg.bound.get(name)
    if binder is None:
        reg.pending.setdefault(name, []).append(_Pending(core, pipe))
    else:
        _join(core, pipe, binder, name)


def cancel_pending(core: InprocCore, pipe: Pipe) -> None:
    """Forget a connect that never found its binder."""
    reg = _get_registry()
    for name, waiting in list(reg.pending.items()):
        reg.pending[name] = [p for p in waiting if p.pipe is not pipe]
        if not reg.pending[name]:
            del reg.pending[name]


def _combined(a: int, b: int) -> int:
    return a + b if a and b else 0


def _join(conn_core: InprocCore, conn_pipe: Pipe, bind_core: InprocCore, name: str) -> None:
    endpoint = f"inproc://{name}"
    bind_pipe = bind_core.new_pipe(endpoint, persistent=False)
    bind_pipe.hands_over = True
    c_opts, b_opts = conn_core.options, bind_core.options
    if conn_core.conflate or bind_core.conflate:
        # a queue both sockets share conflates if either one does (libzmq
        # takes the connecting socket's option for both, and ignores the
        # binder's); what the connector queued before the bind is conflated
        if not isinstance(conn_pipe.outq, ConflatingQueue):
            conn_pipe.outq = bind_core.conflating_inq().take_over(conn_pipe.outq)
            conn_pipe.inq = conn_core.conflating_inq().take_over(conn_pipe.inq)
            conn_core.adopt_queues(conn_pipe)
    else:
        conn_pipe.outq.capacity = _combined(c_opts.sndhwm, b_opts.rcvhwm)
        conn_pipe.inq.capacity = _combined(b_opts.sndhwm, c_opts.rcvhwm)
    # the binder's pipe shares the connector's queues, crossed over
    bind_pipe.outq = conn_pipe.inq
    bind_pipe.inq = conn_pipe.outq
    bind_core.adopt_queues(bind_pipe)

    refusal: str | None = None
    if not bind_core.socket_type.compatible_with(conn_core.socket_type):
        refusal = (
            f"incompatible socket types: {bind_core.socket_type.name} "
            f"cannot talk to {conn_core.socket_type.name}"
        )
        bind_core.emit(HandshakeFailed(endpoint, "", FailureKind.PROTOCOL, refusal))
        conn_core.emit(HandshakeFailed(endpoint, "", FailureKind.PROTOCOL, refusal))
        bind_core.drop_pipe(bind_pipe)  # (and its disk swap, if it has one)
        _refuse(conn_core, conn_pipe)
        return
    refusal = bind_core.pipe_connected(
        bind_pipe,
        HandshakeComplete(conn_core.socket_type, 1, conn_core.options.routing_id, {}),
    )
    if refusal is None:
        refusal = conn_core.pipe_connected(
            conn_pipe,
            HandshakeComplete(bind_core.socket_type, 1, bind_core.options.routing_id, {}),
        )
    if refusal is not None:
        bind_core.drop_pipe(bind_pipe)  # (refused by either side)
        _refuse(conn_core, conn_pipe)
        return
    # inproc connections are not re-established: once joined, a close ends them
    conn_pipe.persistent = False
    conn_pipe.link = InprocLink(bind_core, bind_pipe, conn_core)
    bind_pipe.link = InprocLink(conn_core, conn_pipe, bind_core)
    for topic in conn_core.initial_subscriptions():
        bind_core.pipe_subscription(bind_pipe, topic, True)
    for topic in bind_core.initial_subscriptions():
        conn_core.pipe_subscription(conn_pipe, topic, True)
    # probe_router: an empty message, ahead of what was queued before the join
    if c_opts.probe_router:
        conn_pipe.outq.unget([b""])
    if b_opts.probe_router:
        bind_pipe.outq.unget([b""])
    # messages queued before the bind are there to read now
    if bind_pipe.inq:
        bind_core.wake_receivers()
    # the queues just grew (capacity is now sndhwm + rcvhwm): whoever waited for room has it
    conn_pipe.outq.on_writable()
    bind_pipe.outq.on_writable()


def _refuse(conn_core: InprocCore, conn_pipe: Pipe) -> None:
    """Drop a connecting pipe the binder refused: what it queued is lost (the
    socket does not count an inproc pipe's queue, which its peer normally reads)."""
    conn_pipe.lost += conn_pipe.outq.clear()
    conn_core.drop_pipe(conn_pipe)


def close_inproc_pipe(pipe: Pipe) -> None:
    """Our side of an inproc pipe is going away: the peer reads what is left, then drops it."""
    link = pipe.link
    pipe.link = None
    if isinstance(link, InprocLink):
        peer_pipe = link.peer_pipe
        peer_pipe.link = None
        link.peer_core.pipe_disconnected(peer_pipe)

"""Connecting and accepting: the tasks that own a connect()'s or a bind()'s connections."""

from __future__ import annotations

import logging
import random
from typing import Any

import trio

from .._endpoint import Endpoint
from .._transports._stream import BoundListener, SocketSetup, open_stream, peer_address
from ._core import SocketCore
from ._monitor import Accepted, Closed, Connected, ConnectRetried
from ._pipe import Pipe
from ._session import _describe, run_stream_session

logger = logging.getLogger("triomq")

#: how long an acceptor pauses after an accept error such as EMFILE
ACCEPT_ERROR_PAUSE = 0.1


def next_delay(current: float, options: Any) -> float:
    """libzmq's reconnect schedule: the interval plus jitter, doubling up to the max."""
    ivl = float(options.reconnect_ivl or 0.0)
    cap = float(options.reconnect_ivl_max)
    if cap and cap > ivl:
        return min(current * 2, cap)
    return ivl


async def run_dialer(
    core: SocketCore,
    endpoint: Endpoint,
    pipe: Pipe,
    rng: random.Random,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, run the session, and reconnect after it ends, until cancelled.

    With reconnection off (``reconnect_ivl`` None or 0: libzmq reconnects only
    when its interval is > 0), a first attempt that fails leaves the pipe
    waiting, with no retry; a connection that was made and ends takes the
    connect with it (libzmq's session terminates its endpoint then,
    session_base.cpp ``reconnect()``): its pipe is dropped, and what was
    queued on it is lost.
    """
    options = core.options
    name = str(endpoint)
    reconnects = bool(options.reconnect_ivl)
    setup = SocketSetup.of(options)
    with trio.CancelScope() as scope:
        task_status.started(scope)
        delay = options.reconnect_ivl or 0.0
        while True:
            try:
                stream = await open_stream(
                    endpoint, ssl_context=options.ssl_context, tls_hostname=options.tls_hostname,
                    setup=setup,
                )
            except (OSError, trio.BrokenResourceError) as exc:
                reason = _describe(exc)
            else:
                if not reconnects:
                    # this connection is the pipe's last: when it ends, the session
                    # treats the pipe as gone for good (queue lost, in Disconnected)
                    pipe.persistent = False
                core.emit(Connected(name))
                ok = await run_stream_session(
                    core, stream, endpoint=name, peer_address=peer_address(stream), pipe=pipe
                )
                if not reconnects:
                    logger.info("%s: connection ended; not reconnecting (reconnect_ivl=%s)",
                                name, options.reconnect_ivl)
                    core.connect_ended(pipe)
                    return
                reason = "disconnected" if ok else "handshake failed"
                if ok:
                    delay = options.reconnect_ivl or 0.0
            if not reconnects:
                logger.info("%s: not retrying (reconnect_ivl=%s): %s", name, options.reconnect_ivl, reason)
                await trio.sleep_forever()
            # jitter as libzmq: between the interval and twice it, for the first try
            wait = delay + rng.random() * min(delay, options.reconnect_ivl or 0.0)
            core.emit(ConnectRetried(name, wait, reason))
            await trio.sleep(wait)
            delay = next_delay(delay, options)


async def run_acceptor(
    core: SocketCore,
    bound: BoundListener,
    closed: trio.Event,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on every listener of a bind, one session task each.

    Sets *closed* once the listeners are closed (the address is free again).
    """
    name = str(bound.endpoint)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery.cancel_scope)
            for listener in bound.listeners:
                nursery.start_soon(_accept_loop, core, listener, name, nursery)
    finally:
        await bound.aclose()
        closed.set()
        core.emit(Closed(name))


async def _accept_loop(
    core: SocketCore, listener: trio.abc.Listener[trio.abc.Stream], name: str, nursery: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            # EMFILE and friends: report, pause, go on (the listener stays open)
            logger.warning("%s: accept failed: %s", name, _describe(exc))
            await trio.sleep(ACCEPT_ERROR_PAUSE)
            continue
        address = peer_address(stream)
        core.emit(Accepted(name, address))
        nursery.start_soon(_accepted_session, core, stream, name, address)


async def _accepted_session(core: SocketCore, stream: trio.abc.Stream, name: str, address: str) -> None:
    await run_stream_session(core, stream, endpoint=name, peer_address=address)


__all__ = ["run_acceptor", "run_dialer"]

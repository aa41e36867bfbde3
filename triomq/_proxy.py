"""proxy(): ZeroMQ's built-in device, as a coroutine that runs until cancelled."""

from __future__ import annotations

import trio

from ._engine._groups import raise_plain
from ._socket import Socket


class ProxyControl:
    """Pause and resume a running :func:`proxy` from another task.

    While paused, the proxy holds at most the message it already took from
    each direction; everything else waits in the sockets' queues (and their
    HWMs push back on the peers, as in libzmq's PAUSE). A message it holds
    when cancelled goes back to its socket, unconsumed.
    """

    def __init__(self) -> None:
        self._running = trio.Event()
        self._running.set()
        #: messages forwarded (both directions)
        self.forwarded = 0

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        if self._running.is_set():
            self._running = trio.Event()

    def resume(self) -> None:
        self._running.set()

    async def _wait_running(self) -> None:
        while not self._running.is_set():
            await self._running.wait()


async def proxy(
    frontend: Socket,
    backend: Socket,
    capture: Socket | None = None,
    *,
    control: ProxyControl | None = None,
) -> None:
    """Forward messages between *frontend* and *backend* until cancelled.

    Each direction in which the first socket can receive and the second can
    send is forwarded (XSUB/XPUB: messages one way, subscriptions the other;
    ROUTER/DEALER: requests and replies; PULL/PUSH: one way). A copy of every
    message goes to *capture* if given, once the destination has taken it.
    Returns if either socket is closed.

    Cancelling it (its only way to stop, as libzmq's TERMINATE) loses nothing:
    a message taken from a socket but not yet queued on the other (the proxy
    was paused, or the destination had no room or no peer) is put back, and
    is the first that socket's next receive returns.
    """
    control = control or ProxyControl()
    try:
        async with trio.open_nursery() as nursery:
            if frontend.pattern.receives and backend.pattern.sends:
                nursery.start_soon(_pump, frontend, backend, capture, control, nursery)
            if backend.pattern.receives and frontend.pattern.sends:
                nursery.start_soon(_pump, backend, frontend, capture, control, nursery)
            # a pump waiting to receive would not see its destination close
            for sock in (frontend, backend, capture):
                if sock is not None:
                    nursery.start_soon(_stop_when_closed, sock, nursery)
    except BaseExceptionGroup as group:
        # as a plain call raises: HostUnreachable, not a group of one
        raise_plain(group)


async def _stop_when_closed(sock: Socket, nursery: trio.Nursery) -> None:
    await sock._closed_event.wait()
    nursery.cancel_scope.cancel()


async def _pump(
    source: Socket,
    dest: Socket,
    capture: Socket | None,
    control: ProxyControl,
    nursery: trio.Nursery,
) -> None:
    try:
        while True:
            await control._wait_running()
            msg = await source.recv_multipart()
            try:
                await control._wait_running()
                await dest.send_multipart(msg)
            except BaseException:
                # cancelled (or the destination closed) before the message was
                # queued: it goes back, unconsumed (a cancelled send queued nothing)
                source._unreceive(msg)
                raise
            control.forwarded += 1
            if capture is not None:
                await capture.send_multipart(msg)  # (each send queues a list of its own)
    except trio.ClosedResourceError:
        nursery.cancel_scope.cancel()

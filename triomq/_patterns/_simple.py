"""PAIR, PUSH and PULL (RFC 30/PIPELINE, 31/EXPAIR)."""

from __future__ import annotations

from .._socket_type import SocketType
from ._base import Msg, Pattern, PipeLike
from ._lb import FairQueue, LoadBalancer


class Push(Pattern):
    """Round-robin to peers with room; waits when every pipe is at its HWM."""

    socket_type = SocketType.PUSH
    receives = False

    def __init__(self, options):  # type: ignore[no-untyped-def]
        super().__init__(options)
        self._lb = LoadBalancer()

    def attach(self, pipe: PipeLike) -> bool:
        self._lb.attach(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        self._lb.detach(pipe)

    def send(self, msg: Msg) -> bool:
        return self._lb.send(msg, self.options.immediate) is not None

    def send_batch(self, msgs: list[Msg]) -> int:
        return self._lb.send_batch(msgs, self.options.immediate)


class Pull(Pattern):
    """Fair-queues messages from all peers."""

    _fq: FairQueue

    socket_type = SocketType.PULL
    sends = False
    bulk_receive = True

    def __init__(self, options):  # type: ignore[no-untyped-def]
        super().__init__(options)
        self._fq = FairQueue()

    def attach(self, pipe: PipeLike) -> bool:
        self._fq.attach(pipe)
        return True

    def detach(self, pipe: PipeLike) -> None:
        self._fq.detach(pipe)

    def recv_message(self) -> Msg | None:
        got = self._fq.recv()
        return None if got is None else got[1]


class Pair(Pattern):
    """Exactly one peer; a second one is refused."""

    socket_type = SocketType.PAIR

    def __init__(self, options):  # type: ignore[no-untyped-def]
        super().__init__(options)
        self._pipe: PipeLike | None = None

    def attach(self, pipe: PipeLike) -> bool:
        if self._pipe is not None:
            return False
        self._pipe = pipe
        return True

    def detach(self, pipe: PipeLike) -> None:
        if pipe is self._pipe:
            self._pipe = None

    def send(self, msg: Msg) -> bool:
        pipe = self._pipe
        if pipe is None or not pipe.writable():
            return False
        if self.options.immediate and not pipe.connected:
            return False
        pipe.write(msg)
        return True

    def recv_message(self) -> Msg | None:
        pipe = self._pipe
        if pipe is None or not pipe.readable():
            return None
        return pipe.read()

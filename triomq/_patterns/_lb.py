"""Load balancing (round robin over writable pipes) and fair queueing (round robin over readable ones)."""

from __future__ import annotations

from ._base import Msg, PipeLike, write_as_room_allows


class _RoundRobin:
    """A list of pipes and the position of the next one to try."""

    __slots__ = ("_next", "pipes")

    def __init__(self) -> None:
        self.pipes: list[PipeLike] = []
        self._next = 0

    def attach(self, pipe: PipeLike) -> None:
        self.pipes.append(pipe)

    def detach(self, pipe: PipeLike) -> None:
        i = self.pipes.index(pipe)
        del self.pipes[i]
        if i < self._next:
            self._next -= 1
        if self._next >= len(self.pipes):
            self._next = 0


class LoadBalancer(_RoundRobin):
    """Round-robin over the pipes that have room, as libzmq's lb_t."""

    __slots__ = ()

    def pick(self, only_connected: bool = False) -> PipeLike | None:
        """The next pipe with room, advancing the round robin; None if all are full."""
        pipes = self.pipes
        n = len(pipes)
        start = self._next
        for k in range(n):
            i = (start + k) % n
            pipe = pipes[i]
            if pipe.writable() and (pipe.connected or not only_connected):
                self._next = (i + 1) % n
                return pipe
        return None

    def send(self, msg: Msg, only_connected: bool = False) -> PipeLike | None:
        """Queue *msg* on the next pipe with room; the pipe used, or None."""
        pipe = self.pick(only_connected)
        if pipe is not None:
            pipe.write(msg)
        return pipe

    def send_batch(self, msgs: list[Msg], only_connected: bool = False) -> int:
        """Queue as many of *msgs* as fit, in order; how many were queued.

        With one pipe they go in bulk; with several, one by one in turn, as
        :meth:`send` would.
        """
        pipes = self.pipes
        total = len(msgs)
        sent = 0
        if len(pipes) == 1:
            pipe = pipes[0]
            if only_connected and not pipe.connected:
                return 0
            return write_as_room_allows(pipe, msgs)
        send = self.send
        while sent < total and send(msgs[sent], only_connected) is not None:
            sent += 1
        return sent


class FairQueue(_RoundRobin):
    """Round-robin over the pipes that have a message waiting, as libzmq's fq_t.

    Pipes whose peer is gone but that still hold messages ("draining") are
    read first: a peer that reconnects gets a new pipe, and its older messages
    must come out before its newer ones.
    """

    __slots__ = ("_draining",)

    def __init__(self) -> None:
        super().__init__()
        self._draining: list[PipeLike] = []

    def detach(self, pipe: PipeLike) -> None:
        super().detach(pipe)
        if pipe in self._draining:
            self._draining.remove(pipe)

    def draining(self, pipe: PipeLike) -> None:
        """*pipe*'s peer is gone; what it still holds is older than anything new."""
        if pipe in self.pipes and pipe not in self._draining:
            self._draining.append(pipe)

    def _from_draining(self) -> tuple[PipeLike, Msg] | None:
        draining = self._draining
        while draining:
            pipe = draining[0]
            if pipe.readable():
                return pipe, pipe.read()
            draining.pop(0)
        return None

    def recv_batch(self, out: list[Msg], max_messages: int) -> None:
        """Append up to *max_messages* messages to *out*, one pipe at a time in turn.

        With one pipe this takes them in bulk; with several it keeps the
        message-by-message fairness of :meth:`recv`.
        """
        if self._draining:
            while len(out) < max_messages:
                got = self._from_draining()
                if got is None:
                    break
                out.append(got[1])
        pipes = self.pipes
        if len(pipes) == 1:
            pipe = pipes[0]
            if pipe.readable() and len(out) < max_messages:
                out.extend(pipe.read_many(max_messages - len(out)))
            return
        while len(out) < max_messages:
            got = self.recv()
            if got is None:
                return
            out.append(got[1])

    def recv(self) -> tuple[PipeLike, Msg] | None:
        """The next message and the pipe it came from, or None."""
        if self._draining:
            got = self._from_draining()
            if got is not None:
                return got
        pipes = self.pipes
        n = len(pipes)
        start = self._next
        for k in range(n):
            i = (start + k) % n
            pipe = pipes[i]
            if pipe.readable():
                self._next = (i + 1) % n
                return pipe, pipe.read()
        return None

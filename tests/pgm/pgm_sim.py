"""An in-memory network for the sans-I/O PGM core, with a simulated clock.

One :class:`PgmSender` multicasts to several :class:`PgmReceiver` nodes; every
direction of every link goes through its own :class:`FaultInjector`.  The
clock jumps to the earliest of: the next datagram due, and every component's
``next_deadline()``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from triomq._pgm import DelayLine, FaultInjector, Loss, PgmReceiver, PgmSender, ReceiverOutput

GROUP = "239.192.1.1"
SOURCE_ADDR = "10.0.0.1"
PORT = 5555
GSI = bytes.fromhex("0123456789ab")
SPORT = 40001


def make_messages(rng: random.Random, count: int, *, big_every: int = 1000) -> list[list[bytes]]:
    """Mixed sizes: mostly small, some medium, one in ``big_every`` up to 200 KB."""
    messages: list[list[bytes]] = []
    for i in range(count):
        r = rng.random()
        if big_every and i % big_every == big_every // 2:
            size = rng.randint(100_000, 200_000)
        elif r < 0.80:
            size = rng.randint(0, 300)
        elif r < 0.97:
            size = rng.randint(300, 4_000)
        else:
            size = rng.randint(4_000, 30_000)
        nframes = 1 if rng.random() < 0.8 else rng.randint(2, 4)
        # Tag each message with its index so a mix-up cannot go unnoticed.
        tag = i.to_bytes(4, "big")
        if nframes == 1:
            frames = [tag + rng.randbytes(size)]
        else:
            body = rng.randbytes(size)
            bounds = [0, *sorted(rng.randint(0, size) for _ in range(nframes - 2)), size]
            frames = [tag] + [body[a:b] for a, b in itertools.pairwise(bounds)]
        messages.append(frames)
    return messages


class Node:
    def __init__(
        self,
        name: str,
        addr: str,
        receiver: PgmReceiver,
        down: FaultInjector[Any],
        up: FaultInjector[Any],
    ) -> None:
        self.name = name
        self.addr = addr
        self.receiver = receiver
        self.down = down  # sender -> this receiver (multicast leg)
        self.up = up  # this receiver -> sender (unicast NAKs)
        self.messages: list[list[bytes]] = []
        self.losses: list[Loss] = []


class Network:
    def __init__(
        self,
        seed: int,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0005,
        rate_kbps: float = 80_000,
        recovery_ivl: float = 10.0,
        sender_kwargs: dict[str, Any] | None = None,
        receiver_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.faults = {"drop": drop, "duplicate": duplicate, "reorder": reorder, "delay": delay}
        self.rate_kbps = rate_kbps
        self.recovery_ivl = recovery_ivl
        self.receiver_kwargs = dict(receiver_kwargs or {})
        self.now = 0.0
        self.sender = PgmSender(
            GSI,
            SPORT,
            PORT,
            GROUP,
            SOURCE_ADDR,
            1500,
            rate_kbps,
            recovery_ivl,
            random.Random(self.rng.getrandbits(64)),
            **(sender_kwargs or {}),
        )
        self.nodes: list[Node] = []
        self.line: DelayLine[tuple[Node | None, bytes, str]] = DelayLine()
        self._outbox: Iterator[Sequence[Sequence[bytes]]] = iter(())
        self._outbox_done = True
        self.sent_messages = 0
        self.iterations = 0

    def add_receiver(self, **overrides: Any) -> Node:
        i = len(self.nodes)
        kwargs: dict[str, Any] = {"rate_kbps": self.rate_kbps, "recovery_ivl": self.recovery_ivl}
        kwargs.update(self.receiver_kwargs)
        kwargs.update(overrides)
        receiver = PgmReceiver(PORT, GROUP, random.Random(self.rng.getrandbits(64)), **kwargs)
        node = Node(
            f"r{i}",
            f"10.0.1.{i + 1}",
            receiver,
            FaultInjector(random.Random(self.rng.getrandbits(64)), **self.faults),
            FaultInjector(random.Random(self.rng.getrandbits(64)), **self.faults),
        )
        self.nodes.append(node)
        return node

    def warm_up(self, duration: float = 0.5) -> None:
        """Let the source's start-up SPMs reach the receivers before any data."""
        self.run_for(duration)
        for node in self.nodes:
            assert node.receiver.peers, f"{node.name} heard no SPM"

    def queue(self, batches: Iterator[Sequence[Sequence[bytes]]]) -> None:
        """Messages to send: each item is a batch handed to ``send_many`` at once."""
        self._outbox = batches
        self._outbox_done = False

    # ------------------------------------------------------------------ plumbing

    def _multicast(self, datagrams: list[bytes]) -> None:
        if not datagrams:
            return
        for node in self.nodes:
            for t, d in node.down.apply(datagrams, self.now):
                self.line.push(t, (node, d, SOURCE_ADDR))

    def _handle(self, node: Node, out: ReceiverOutput) -> None:
        if out.messages:
            node.messages.extend(out.messages)
        if out.losses:
            node.losses.extend(out.losses)
        if out.outgoing:
            for o in out.outgoing:
                assert o.dest == SOURCE_ADDR, o
            for t, d in node.up.apply([o.data for o in out.outgoing], self.now):
                self.line.push(t, (None, d, node.addr))

    @property
    def all_sent(self) -> bool:
        """Every queued message has been handed over and transmitted once."""
        return self._outbox_done and self.sender.queued_bytes == 0

    def _feed(self) -> None:
        while self.sender.send_delay(self.now) == 0:
            batch = next(self._outbox, None)
            if batch is None:
                self._outbox_done = True
                return
            self.sent_messages += len(batch)
            self._multicast(self.sender.send_many(batch, self.now))

    def run(
        self,
        until: Callable[[], bool],
        *,
        max_time: float,
        stop_at: float = math.inf,
        max_iterations: int = 5_000_000,
    ) -> None:
        sender = self.sender
        while True:
            self._feed()
            if until():
                return
            self.iterations += 1
            assert self.iterations < max_iterations, "simulation does not converge"
            t = min(
                self.line.next_deadline(),
                sender.next_deadline(),
                *(n.receiver.next_deadline() for n in self.nodes),
                stop_at,
            )
            assert t <= max_time, f"simulated time limit hit at {self.now:.3f}s"
            self.now = max(self.now, t)
            now = self.now
            for node, data, src in self.line.pop_due(now):
                if node is None:
                    self._multicast(sender.on_packet(data, now))
                else:
                    self._handle(node, node.receiver.on_packet(data, src, now))
            if sender.next_deadline() <= now:
                self._multicast(sender.on_timer(now))
            for node in self.nodes:
                if node.receiver.next_deadline() <= now:
                    self._handle(node, node.receiver.on_timer(now))

    def run_for(self, duration: float) -> None:
        end = self.now + duration
        self.run(lambda: self.now >= end, max_time=end, stop_at=end)


def batches(
    messages: list[list[bytes]], rng: random.Random, max_batch: int = 4
) -> Iterator[list[list[bytes]]]:
    """Hand messages over one at a time, sometimes a few together."""
    i = 0
    while i < len(messages):
        k = 1 if rng.random() < 0.7 else rng.randint(2, max_batch)
        yield messages[i : i + k]
        i += k

"""Remote calls over DEALER/ROUTER with retries: the "lazy pirate" pattern, built in.

The client is a DEALER that tags each request with an id and keeps many in
flight; replies find their caller by id, and late or duplicate replies are
dropped. Its envelope (``[id, b"", body...]``) is the one a REP echoes, so the
client works against libzmq REP and ROUTER servers as well as :func:`serve`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._engine._groups import raise_plain
from ._errors import RequestFailed, StateError
from ._socket import Socket, _to_message, open_socket
from ._socket_type import SocketType

logger = logging.getLogger("triomq")

_Frames = Sequence[bytes]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How an :class:`RpcClient` retries.

    Attributes:
        attempt_timeout: seconds to wait for a reply to one attempt.
        attempts: how many times a request is sent before giving up.
        backoff: seconds to wait before the first retry; doubled each retry.
        backoff_max: the longest wait between attempts.
    """

    attempt_timeout: float = attrs.field(default=2.5, validator=attrs.validators.gt(0))
    attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    backoff: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


class RpcClient:
    """Sends requests and waits for their replies. Make one with :func:`open_rpc_client`."""

    def __init__(self, sock: Socket, policy: RetryPolicy) -> None:
        self.socket = sock
        self.policy = policy
        self._ids = itertools.count(1)
        self._waiting: dict[bytes, trio.MemorySendChannel[list[bytes]]] = {}
        #: replies that arrived for no waiting request (late or duplicate)
        self.stale_replies = 0
        #: attempts that timed out and were retried
        self.retries = 0

    async def request(self, frames: _Frames | bytes) -> list[bytes]:
        """Send *frames* as one request and return the reply's frames.

        Each attempt waits ``attempt_timeout``; after ``attempts`` attempts,
        raises :class:`triomq.RequestFailed`. The request may reach the server
        more than once (at-least-once, as with any retry), but an attempt's
        copy still queued unwritten when it times out (the server away) is
        taken back, so a server that comes back runs the request once, not
        once per attempt; so is the copy of a call given up or cancelled. The
        caller's cancel scope bounds the whole call.
        """
        body = [frames] if isinstance(frames, bytes) else list(frames)
        request_id = next(self._ids).to_bytes(8, "big")
        send, receive = trio.open_memory_channel[list[bytes]](1)
        self._waiting[request_id] = send
        policy = self.policy
        delay = min(policy.backoff, policy.backoff_max)
        sock = self.socket
        sent: list[bytes] | None = None
        try:
            for attempt in range(policy.attempts):
                if attempt:
                    self.retries += 1
                    if delay:
                        await trio.sleep(delay)
                        delay = min(delay * 2, policy.backoff_max)
                with trio.move_on_after(policy.attempt_timeout):
                    # the send is part of the attempt: a DEALER with no peer
                    # (``immediate``) or a full queue waits to send, and a
                    # cancelled send queued nothing
                    msg = _to_message([request_id, b"", *body])
                    await sock._send(msg)
                    sent = msg
                    reply = await receive.receive()
                    sent = None  # (written and answered)
                    return reply
                # A copy not written yet (the server away) is taken back: a
                # server that comes back then runs the request once, not once
                # per attempt (the guide's Lazy Pirate reopens its socket)
                if sent is not None:
                    sock._withdraw(sent)
                    sent = None
            raise RequestFailed(
                f"no reply after {policy.attempts} attempts of {policy.attempt_timeout}s each"
            )
        finally:
            del self._waiting[request_id]
            if sent is not None:
                sock._withdraw(sent)  # (the caller gave up)

    async def _dispatch(self) -> None:
        async for msg in self.socket:
            if len(msg) < 2 or msg[1] != b"":
                self.stale_replies += 1
                continue
            waiter = self._waiting.get(msg[0])
            if waiter is None:
                self.stale_replies += 1
                continue
            try:
                waiter.send_nowait(msg[2:])
            except trio.WouldBlock:
                self.stale_replies += 1  # a duplicate reply: the first one is waiting


@asynccontextmanager
async def open_rpc_client(
    *endpoints: str, policy: RetryPolicy | None = None, **options: Any
) -> AsyncIterator[RpcClient]:
    """A client connected to *endpoints* (requests are balanced over them).

    ``options`` are socket options for the DEALER underneath. ``linger``
    defaults to 0: a request still queued when the client closes has no
    caller waiting for its reply any more. An exception raised in the block
    comes out as itself, not inside an ExceptionGroup.
    """
    options.setdefault("linger", 0)
    async with open_socket(SocketType.DEALER, **options) as sock:
        for endpoint in endpoints:
            await sock.connect(endpoint)
        client = RpcClient(sock, policy or RetryPolicy())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._dispatch)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # the dispatcher never raises (but when cancelled): the group holds
            # the block's exception, which comes out as itself, as open_socket's
            raise_plain(group)


Handler = Callable[[list[bytes]], Awaitable[Sequence[bytes] | bytes]]


async def serve(
    sock: Socket,
    handler: Handler,
    *,
    max_in_flight: int = 100,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on a ROUTER socket with *handler*, many at once, until cancelled.

    Each request runs ``await handler(frames)`` in its own task (at most
    *max_in_flight* at a time); the reply goes back with the request's
    envelope. A request whose handler raises, returns something that is not
    frames, or whose reply cannot be sent (its client gone, with
    ``router_mandatory``) is logged and gets no reply (the client's retry
    policy takes over); the server goes on serving.
    """
    if sock.socket_type is not SocketType.ROUTER:
        raise StateError("serve() needs a ROUTER socket")
    limiter = trio.CapacityLimiter(max_in_flight if max_in_flight > 0 else math.inf)

    async def handle(token: object, envelope: list[bytes], body: list[bytes]) -> None:
        try:
            # the reply's conversion and its sending fail like the handler: one
            # request goes unanswered, never the whole server
            reply = await handler(body)
            frames = [reply] if isinstance(reply, (bytes, bytearray, memoryview)) else list(reply)
            await sock.send_multipart([*envelope, *frames])
        except Exception:
            logger.exception("request failed, no reply sent")
        finally:
            limiter.release_on_behalf_of(token)

    async with trio.open_nursery() as nursery:
        task_status.started()
        async for msg in sock:
            try:
                split = msg.index(b"", 1) + 1
            except ValueError:
                continue  # no envelope delimiter: not a request
            token = object()
            await limiter.acquire_on_behalf_of(token)
            nursery.start_soon(handle, token, msg[:split], msg[split:])

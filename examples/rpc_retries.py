"""Request-reply with timeouts and retries, using triomq's RPC helper.

Concurrency idea: timeouts are cancel scopes, and many calls are many tasks.
``triomq.serve()`` answers each request in a task of its own, so a slow
request does not hold up the others; ``open_rpc_client()`` keeps many calls in
flight on one DEALER socket, and its ``RetryPolicy`` re-sends a request whose
reply is late (the "lazy pirate" pattern). A late reply that turns up after
all is recognised by its request id and dropped. A caller can still bound a
whole call with its own ``trio.move_on_after``.

    python examples/rpc_retries.py
"""

import trio

import triomq

CALLS = 20


async def run_server(*, task_status: trio.TaskStatus[str]) -> None:
    seen: set[bytes] = set()

    async def handler(frames: list[bytes]) -> bytes:
        (number,) = frames
        if int(number) % 4 == 0 and number not in seen:
            seen.add(number)
            await trio.sleep(0.5)  # every 4th request is slow the first time: the client retries
        return b"%d squared is %d" % (int(number), int(number) ** 2)

    async with triomq.open_socket(triomq.ROUTER) as sock:
        task_status.started(await sock.bind("tcp://127.0.0.1:0"))
        await triomq.serve(sock, handler)  # until cancelled


async def main() -> None:
    policy = triomq.RetryPolicy(attempt_timeout=0.2, attempts=3)
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(run_server)
        async with triomq.open_rpc_client(endpoint, policy=policy) as rpc:
            replies: dict[int, bytes] = {}

            async def call(n: int) -> None:
                (replies[n],) = await rpc.request(b"%d" % n)

            started = trio.current_time()
            async with trio.open_nursery() as calls:  # all the calls at once
                for n in range(CALLS):
                    calls.start_soon(call, n)
            elapsed = trio.current_time() - started
            # the slow first attempts (0.5 s each) answer meanwhile, too late:
            # each is dropped as it comes (on a busy machine, some come later)
            await trio.sleep(0.5)
        print(
            f"{len(replies)} calls answered in {elapsed:.2f} s, {rpc.retries} of them retried, "
            f"{rpc.stale_replies} late replies dropped so far"
        )
        print(f"  e.g. {replies[4].decode()}")
        nursery.cancel_scope.cancel()  # stop the server

    # nobody answers now: each attempt times out, then the call fails. (An RPC
    # client's linger is 0 unless told otherwise: on closing, it drops the
    # requests still queued for the absent server rather than wait for it forever)
    async with triomq.open_rpc_client(endpoint, policy=policy) as rpc:
        try:
            await rpc.request(b"7")
        except triomq.RequestFailed as exc:
            print(f"with the server gone: RequestFailed: {exc}")


if __name__ == "__main__":
    trio.run(main)

"""RPC through a server crash: the server is killed and restarted while the client keeps calling.

Concurrency idea: a cancel scope is a kill switch. The supervisor runs each
"server process" inside its own ``trio.CancelScope``; cancelling it stops the
server mid-request (its socket closes, connections drop, nothing is answered)
and a new generation binds the same address. The client never notices beyond
a delay: its DEALER reconnects by itself, and the retry policy re-sends the
requests that were lost with the dead server. Replies are at-least-once: a
request may be handled twice when the first reply was lost.

    python examples/rpc_restart.py
"""

import trio

import triomq

CLIENTS = 3


async def server(generation: int, endpoint: str, *, task_status: trio.TaskStatus[str]) -> None:
    async def handler(frames: list[bytes]) -> bytes:
        await trio.sleep(0.02)
        return b"%s from server generation %d" % (frames[0], generation)

    async with triomq.open_socket(triomq.ROUTER, linger=0) as sock:
        task_status.started(await sock.bind(endpoint))
        await triomq.serve(sock, handler)


async def supervisor(*, task_status: trio.TaskStatus[str]) -> None:
    endpoint = "tcp://127.0.0.1:0"
    generation = 1
    while True:
        with trio.CancelScope() as kill_switch:
            async with trio.open_nursery() as nursery:
                endpoint = await nursery.start(server, generation, endpoint)  # the real port, kept
                if generation == 1:
                    task_status.started(endpoint)
                print(f"supervisor: server generation {generation} up on {endpoint}")
                await trio.sleep(0.7)
                kill_switch.cancel()
        print(f"supervisor: killed generation {generation}; restarting in 0.3 s")
        await trio.sleep(0.3)  # the server is down for a while
        generation += 1


async def client(name: str, endpoint: str, calls: int, answered: list[bytes]) -> None:
    policy = triomq.RetryPolicy(attempt_timeout=0.25, attempts=20)
    async with triomq.open_rpc_client(endpoint, policy=policy, linger=0) as rpc:
        for n in range(calls):
            (reply,) = await rpc.request(f"{name} call {n}".encode())
            answered.append(reply)
            await trio.sleep(0.05)
    print(f"{name}: {calls} calls answered, {rpc.retries} retries")


async def main() -> None:
    answered: list[bytes] = []
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(supervisor)
        async with trio.open_nursery() as clients:
            for n in range(CLIENTS):
                clients.start_soon(client, f"client-{n}", endpoint, 30, answered)
        nursery.cancel_scope.cancel()  # the supervisor would go on forever
    generations = sorted({reply.rsplit(b" ", 1)[1].decode() for reply in answered})
    print(f"all {len(answered)} calls answered, by server generations {', '.join(generations)}")


if __name__ == "__main__":
    trio.run(main)

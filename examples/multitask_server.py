"""A multi-task server: ROUTER in front, DEALER behind, worker tasks over inproc.

Concurrency idea: one server, many requests in progress at once. Clients talk
to a ROUTER over tcp; ``triomq.proxy()`` runs as a task and relays requests to
a DEALER, which deals them out over ``inproc://`` to worker tasks (each with
its own REP socket) and routes the replies back. A slow request holds up one
worker, not the server. inproc costs no sockets and no copies: it is how tasks
of one process talk when they might later move to other processes.

    python examples/multitask_server.py
"""

from collections import Counter

import trio

import triomq

WORKERS = 4
CLIENTS = 3
REQUESTS = 10  # per client


async def worker(name: str) -> None:
    async with triomq.open_socket(triomq.REP) as sock:
        await sock.connect("inproc://workers")
        async for (request,) in sock:
            await trio.sleep(0.01)  # the work
            await sock.send(request + b" handled by " + name.encode())


async def server(*, task_status: trio.TaskStatus[str]) -> None:
    async with (
        triomq.open_socket(triomq.ROUTER) as frontend,
        triomq.open_socket(triomq.DEALER) as backend,
        trio.open_nursery() as nursery,
    ):
        endpoint = await frontend.bind("tcp://127.0.0.1:0")
        await backend.bind("inproc://workers")
        for n in range(WORKERS):
            nursery.start_soon(worker, f"worker-{n}")
        await backend.wait_peers(WORKERS)
        task_status.started(endpoint)
        await triomq.proxy(frontend, backend)  # runs until cancelled


async def client(name: str, endpoint: str, handled_by: Counter[str]) -> None:
    async with triomq.open_socket(triomq.REQ) as sock:
        await sock.connect(endpoint)
        for n in range(REQUESTS):
            await sock.send(f"{name} request {n}".encode())
            reply = (await sock.recv()).decode()
            handled_by[reply.rsplit(" ", 1)[1]] += 1
    print(f"{name}: {REQUESTS} replies")


async def main() -> None:
    handled_by: Counter[str] = Counter()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(server)
        async with trio.open_nursery() as clients:
            for n in range(CLIENTS):
                clients.start_soon(client, f"client-{n}", endpoint, handled_by)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    print(
        f"all {CLIENTS * REQUESTS} requests answered by {len(handled_by)} workers "
        f"in {elapsed:.2f} s: {dict(sorted(handled_by.items()))}"
    )


if __name__ == "__main__":
    trio.run(main)

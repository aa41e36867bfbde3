"""Hello world: REQ/REP between two tasks.

Concurrency idea: a nursery runs tasks side by side, and ``nursery.start()``
waits until a task says it is ready (here: the server has bound its socket)
and hands back what it reports (the real port). When the client is done,
cancelling the nursery stops the server: no task outlives the block.

    python examples/hello_world.py
"""

import trio

import triomq


async def server(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    async with triomq.open_socket(triomq.REP) as sock:
        endpoint = await sock.bind("tcp://127.0.0.1:0")  # port 0: any free port
        task_status.started(endpoint)  # nursery.start() returns this
        while True:
            request = await sock.recv()
            print(f"server: received {request.decode()}")
            await trio.sleep(0.01)  # "do some work"
            await sock.send(b"World")


async def client(endpoint: str) -> None:
    async with triomq.open_socket(triomq.REQ) as sock:
        await sock.connect(endpoint)
        for n in range(5):
            await sock.send(b"Hello")
            reply = await sock.recv()
            print(f"client: reply {n} is {reply.decode()}")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(server)
        await client(endpoint)
        nursery.cancel_scope.cancel()  # the server loops forever: stop it
    print("hello world: 5 requests, 5 replies")


if __name__ == "__main__":
    trio.run(main)

"""Relay race: three steps hand a baton along PAIR sockets over inproc.

Concurrency idea: ordering tasks by message. Each step is a task that waits
for a signal from the step before it, does its part, then signals the next.
Within one Trio program a ``trio.Event`` or a memory channel does this more
cheaply; PAIR over ``inproc://`` is the same shape with a socket, so a step
can later move to another thread, process or machine by changing only the
endpoint (``tcp://``, ``ipc://``). A PAIR socket talks to exactly one peer.

    python examples/pair_relay.py
"""

import trio

import triomq


async def step1(*, task_status: trio.TaskStatus[None]) -> None:
    async with triomq.open_socket(triomq.PAIR) as to_step2:
        await to_step2.connect("inproc://step2")
        task_status.started()
        await trio.sleep(0.05)  # the work of step 1
        print("step 1 done, signalling step 2")
        await to_step2.send(b"baton")


async def step2(*, task_status: trio.TaskStatus[None]) -> None:
    async with (
        triomq.open_socket(triomq.PAIR) as from_step1,
        triomq.open_socket(triomq.PAIR) as to_step3,
    ):
        await from_step1.bind("inproc://step2")
        await to_step3.connect("inproc://step3")
        task_status.started()
        baton = await from_step1.recv()
        await trio.sleep(0.05)  # the work of step 2
        print("step 2 done, signalling step 3")
        await to_step3.send(baton)


async def main() -> None:
    async with triomq.open_socket(triomq.PAIR) as from_step2:
        await from_step2.bind("inproc://step3")
        async with trio.open_nursery() as nursery:
            await nursery.start(step2)  # binds inproc://step2 before step 1 connects
            await nursery.start(step1)
            baton = await from_step2.recv()
    print(f"step 3 got the {baton.decode()}: test successful")


if __name__ == "__main__":
    trio.run(main)

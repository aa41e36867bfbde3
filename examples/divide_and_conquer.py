"""Divide and conquer: a ventilator, a pool of workers, and a sink (PUSH/PULL).

Concurrency idea: a worker pool is just N tasks in a nursery. The ventilator
PUSHes tasks, and PUSH spreads them over the connected workers; each worker
PULLs a task, "works" (sleeps), and PUSHes the result to the sink, which
collects every result. Because the workers wait concurrently, 100 tasks of
~5 ms each finish in about a quarter of their total time with 4 workers.

The ventilator waits for its workers (``wait_peers``) before sending: tasks
sent while only the first worker has connected would all go to that one.

    python examples/divide_and_conquer.py
"""

import random
from collections import Counter

import trio

import triomq

WORKERS = 4
TASKS = 100


async def worker(
    name: str,
    tasks_from: str,
    results_to: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with (
        triomq.open_socket(triomq.PULL) as receiver,
        triomq.open_socket(triomq.PUSH) as sender,
    ):
        await receiver.connect(tasks_from)
        await sender.connect(results_to)
        task_status.started()
        async for (workload,) in receiver:
            await trio.sleep(int(workload) / 1000)  # the "work"
            await sender.send(name.encode())


async def sink(
    results: trio.MemorySendChannel[bytes], *, task_status: trio.TaskStatus[str]
) -> None:
    async with triomq.open_socket(triomq.PULL) as receiver:
        task_status.started(await receiver.bind("tcp://127.0.0.1:0"))
        async with results:
            for _ in range(TASKS):
                await results.send(await receiver.recv())


async def main() -> None:
    results_send, results_receive = trio.open_memory_channel[bytes](TASKS)
    async with triomq.open_socket(triomq.PUSH) as ventilator, trio.open_nursery() as nursery:
        tasks_endpoint = await ventilator.bind("tcp://127.0.0.1:0")
        results_endpoint = await nursery.start(sink, results_send)
        for n in range(WORKERS):
            await nursery.start(worker, f"worker-{n}", tasks_endpoint, results_endpoint)
        await ventilator.wait_peers(WORKERS)

        started = trio.current_time()
        workloads = [random.randint(1, 9) for _ in range(TASKS)]
        for workload in workloads:
            await ventilator.send(b"%d" % workload)
        done_by = Counter([name.decode() async for name in results_receive])
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()  # the workers loop forever

    print(
        f"{TASKS} tasks done by {WORKERS} workers in {elapsed * 1000:.0f} ms "
        f"(total work {sum(workloads)} ms)"
    )
    for name, count in sorted(done_by.items()):
        print(f"  {name}: {count} tasks")


if __name__ == "__main__":
    trio.run(main)

"""The gateway: the ``triomq demo`` scenario, shortened.

Concurrency idea: tasks come and go while the system runs. A gateway (PUSH)
spreads a rising load over game-server tasks (PULL); new servers are started
into the running nursery (hot-plugged, no restart), and one is killed
abruptly by cancelling its scope. PUSH stops sending to the dead server and the
survivors absorb its share; the summary accounts for every request.

This is ``triomq demo --duration 3 --servers 2 --max-servers 4 --rate 5000``;
the scenario's code is triomq's own demo module (``triomq/_demo.py``, read it
for the tasks), and ``triomq demo --help`` lists its settings.

    python examples/gateway.py
"""

import sys

import trio

from triomq._demo import run_demo


async def main() -> int:
    summary = await run_demo(duration=3.0, servers=2, max_servers=4, rate=5000.0)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))

"""Weather feed: PUB/SUB, one server and several clients, each filtering by zip code.

Concurrency idea: fan-out. One publisher task never waits for its readers;
each client task subscribes to the topic it wants (the filtering happens at
the publisher) and works at its own pace. The nursery's block ends when the
clients have their averages, and cancelling it stops the endless server.

A subscriber that joins late misses what was published before it joined
(the "slow joiner"): fine for a weather feed. ``sync_pub.py`` shows the remedy
when nothing may be missed.

    python examples/weather.py
"""

import random

import trio

import triomq

ZIP_CODES = [10001, 10002, 10003, 10004, 10005]


async def weather_server(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    async with triomq.open_socket(triomq.PUB) as pub:
        endpoint = await pub.bind("tcp://127.0.0.1:0")
        task_status.started(endpoint)
        while True:
            zipcode = random.choice(ZIP_CODES)
            temperature = random.randrange(-20, 40)
            humidity = random.randrange(10, 60)
            await pub.send(f"{zipcode} {temperature} {humidity}".encode())
            await trio.sleep(0.0005)


async def weather_client(endpoint: str, zipcode: int, updates: int = 20) -> None:
    # subscribe before connecting: the subscription goes out right after the
    # handshake (what is published before it arrives is not for this client)
    async with triomq.open_socket(triomq.SUB, subscribe=[f"{zipcode} ".encode()]) as sub:
        await sub.connect(endpoint)
        temperatures = []
        for _ in range(updates):
            _, temperature, _ = (await sub.recv()).split()
            temperatures.append(int(temperature))
    average = sum(temperatures) / len(temperatures)
    print(f"average temperature for zipcode {zipcode} was {average:.1f}C ({updates} updates)")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(weather_server)
        async with trio.open_nursery() as clients:
            for zipcode in ZIP_CODES[:3]:
                clients.start_soon(weather_client, endpoint, zipcode)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)

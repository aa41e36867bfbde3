"""`triomq demo`: the game gateway.

A gateway (PUSH) spreads a rising stream of player requests over game servers
(PULL). Servers are hot-plugged as the load rises (they connect to the running
gateway, no restart), and one is stopped abruptly part-way through; the others
absorb its share. A live view shows requests per second per server; the
summary accounts for every request sent.

Everything runs in one Trio process, each server with its own socket and its
own tasks, over real tcp (or ipc/inproc) connections.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
from typing import TextIO

import attrs
import trio

from ._engine._monitor import Disconnected
from ._socket import Socket, open_socket
from ._socket_type import SocketType


@attrs.define(eq=False)
class GameServer:
    name: str
    received: list[int] = attrs.field(factory=list)
    #: requests per second, over the last view interval
    rate: float = 0.0
    running: bool = True
    stopped_abruptly: bool = False
    #: requests that were waiting in this server's socket when it was stopped
    unprocessed_at_stop: int = 0
    _last_count: int = 0
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.define
class DemoSummary:
    sent: int
    processed_by_survivors: int
    processed_by_stopped: int
    in_flight_to_stopped: int
    lost_elsewhere: int
    duplicates: int
    servers_started: int
    servers_stopped: int

    @property
    def ok(self) -> bool:
        return self.lost_elsewhere == 0 and self.duplicates == 0


async def run_demo(
    *,
    duration: float = 10.0,
    servers: int = 3,
    max_servers: int = 5,
    rate: float = 20_000.0,
    transport: str = "tcp",
    out: TextIO = sys.stdout,
    live: bool | None = None,
) -> DemoSummary:
    """Run the gateway scenario for *duration* seconds and return its summary."""
    if live is None:
        live = out.isatty()
    if transport == "ipc":
        # (the socket file goes with its directory, even if the run fails)
        with tempfile.TemporaryDirectory(prefix="triomq-demo-") as directory:
            return await _run_demo(
                f"ipc://{directory}/gateway", duration, servers, max_servers, rate, out, live
            )
    endpoint = "tcp://127.0.0.1:0" if transport == "tcp" else f"inproc://gateway-{os.getpid()}"
    return await _run_demo(endpoint, duration, servers, max_servers, rate, out, live)


async def _run_demo(
    endpoint: str, duration: float, servers: int, max_servers: int, rate: float, out: TextIO, live: bool
) -> DemoSummary:
    game_servers: list[GameServer] = []
    say = _Printer(out, live)
    sent = 0
    #: how many requests had been sent when the gateway saw each disconnect
    sent_at_disconnect: list[int] = []

    async with open_socket(SocketType.PUSH, sndhwm=10_000) as gateway:
        address = await gateway.bind(endpoint)
        say.line(f"gateway listening on {address}")
        async with trio.open_nursery() as nursery, gateway.monitor() as events:

            async def watch() -> None:
                async for event in events:
                    if isinstance(event, Disconnected):
                        sent_at_disconnect.append(sent)

            nursery.start_soon(watch)

            async def start_server() -> None:
                server = GameServer(f"server-{len(game_servers) + 1}")
                game_servers.append(server)
                await nursery.start(_run_server, server, address)
                say.line(f"+ {server.name} connected to the running gateway")

            for _ in range(servers):
                await start_server()
            await gateway.wait_peers(servers)

            t0 = trio.current_time()
            plan = _plan(duration, servers, max_servers)
            view = trio.current_time()
            view_sent = 0
            while (now := trio.current_time()) - t0 < duration:
                elapsed = now - t0
                while plan and plan[0][0] <= elapsed:
                    _, action = plan.pop(0)
                    if action == "add":
                        await start_server()
                    else:
                        victim = _pick_victim(game_servers)
                        if victim is not None:
                            victim.stopped_abruptly = True
                            victim.scope.cancel()
                            say.line(f"x {victim.name} stopped abruptly")
                # the load rises from a third of the rate to all of it
                target = rate * (1 / 3 + (2 / 3) * min(elapsed / (duration * 0.6), 1.0))
                for _ in range(max(int(target * 0.01), 1)):  # one 10 ms tick's worth
                    await gateway.send(b"%d" % sent)
                    sent += 1
                await trio.sleep_until(now + 0.01)
                if now - view >= 0.5:
                    _update_rates(game_servers, now - view)
                    say.view(game_servers, sent, elapsed, (sent - view_sent) / (now - view))
                    view, view_sent = now, sent

            # stop sending; let the survivors drain what is queued for them:
            # done when the gateway's queues are empty and nothing more arrives
            with trio.move_on_after(10):
                last = -1
                while gateway.statistics().queued_out or _processed(game_servers) != last:
                    last = _processed(game_servers)
                    await trio.sleep(0.2)
            for server in game_servers:
                server.scope.cancel()
            nursery.cancel_scope.cancel()

    summary = _summarize(game_servers, sent, sent_at_disconnect)
    say.summary(summary, game_servers)
    return summary


def _plan(duration: float, servers: int, max_servers: int) -> list[tuple[float, str]]:
    plan: list[tuple[float, str]] = []
    extra = max(max_servers - servers, 0)
    for i in range(extra):
        plan.append((duration * (0.25 + 0.3 * i / max(extra, 1)), "add"))
    plan.append((duration * 0.65, "stop"))
    return sorted(plan)


def _pick_victim(servers: list[GameServer]) -> GameServer | None:
    running = [s for s in servers if s.running]
    return running[len(running) // 2] if len(running) > 1 else None


async def _run_server(
    server: GameServer, address: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    sock: Socket | None = None
    with server.scope:
        async with open_socket(SocketType.PULL, linger=0, rcvhwm=1000) as sock:
            await sock.connect(address)
            task_status.started()
            async for msg in sock:
                server.received.append(int(msg[0]))
    server.running = False
    if server.stopped_abruptly and sock is not None:
        server.unprocessed_at_stop = sock.statistics().queued_in


def _update_rates(servers: list[GameServer], dt: float) -> None:
    for s in servers:
        count = len(s.received)
        s.rate = (count - s._last_count) / dt if s.running else 0.0
        s._last_count = count


def _processed(servers: list[GameServer]) -> int:
    return sum(len(s.received) for s in servers)


def _summarize(servers: list[GameServer], sent: int, sent_at_disconnect: list[int]) -> DemoSummary:
    seen: set[int] = set()
    duplicates = 0
    for s in servers:
        for seq in s.received:
            if seq in seen:
                duplicates += 1
            seen.add(seq)
    missing = set(range(sent)) - seen
    survivors = [s for s in servers if not s.stopped_abruptly]
    stopped = [s for s in servers if s.stopped_abruptly]
    # a request lost with a stopped server was sent after the last one it
    # processed and before the gateway saw the connection drop; any other
    # missing request would be a real loss
    lo = min((max(s.received) + 1 if s.received else 0 for s in stopped), default=math.inf)
    # (the event can be seen while the gateway is inside send(), with that
    # request already queued but not yet counted: hence the + 1)
    hi = max(sent_at_disconnect, default=sent - 1) + 1
    in_flight = {seq for seq in missing if lo <= seq < hi}
    return DemoSummary(
        sent=sent,
        processed_by_survivors=sum(len(s.received) for s in survivors),
        processed_by_stopped=sum(len(s.received) for s in stopped),
        in_flight_to_stopped=len(in_flight),
        lost_elsewhere=len(missing - in_flight),
        duplicates=duplicates,
        servers_started=len(servers),
        servers_stopped=len(stopped),
    )


@attrs.define
class _Printer:
    out: TextIO
    live: bool
    _drawn: int = 0

    def line(self, text: str) -> None:
        self._erase()
        print(text, file=self.out, flush=True)

    def _erase(self) -> None:
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def view(self, servers: list[GameServer], sent: int, elapsed: float, rate: float) -> None:
        lines = [f"t={elapsed:5.1f}s  gateway {rate:8.0f} req/s  sent {sent}"]
        width = 40
        peak = max([s.rate for s in servers] + [1.0])
        for s in servers:
            bar = "#" * int(width * s.rate / peak)
            state = "" if s.running else ("  (stopped)" if s.stopped_abruptly else "  (done)")
            lines.append(f"  {s.name:10} {s.rate:8.0f} req/s {len(s.received):8} total {bar}{state}")
        if self.live:
            self._erase()
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
            self._drawn = len(lines)
        else:
            print(lines[0] + "  " + ", ".join(f"{s.name}={s.rate:.0f}/s" for s in servers), file=self.out, flush=True)

    def summary(self, summary: DemoSummary, servers: list[GameServer]) -> None:
        self._erase()
        w = self.out.write
        w("\nsummary\n")
        w(f"  servers started            {summary.servers_started} (stopped abruptly: {summary.servers_stopped})\n")
        w(f"  requests sent              {summary.sent}\n")
        w(f"  processed by survivors     {summary.processed_by_survivors}\n")
        for s in servers:
            if not s.stopped_abruptly:
                w(f"    {s.name:10} {len(s.received):8}\n")
        w(f"  processed by stopped       {summary.processed_by_stopped}\n")
        for s in servers:
            if s.stopped_abruptly:
                w(f"    {s.name:10} {len(s.received):8}  (stopped abruptly)\n")
        w(f"  in flight to stopped       {summary.in_flight_to_stopped}  (queued for it when it died)\n")
        w(f"  lost among survivors       {summary.lost_elsewhere}\n")
        w(f"  duplicates                 {summary.duplicates}\n")
        verdict = "OK: nothing lost among the servers that stayed up" if summary.ok else "FAILED"
        w(f"  {verdict}\n")
        self.out.flush()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="triomq demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    parser.add_argument("--servers", type=int, default=3, help="game servers at the start (default 3)")
    parser.add_argument("--max-servers", type=int, default=5, help="servers once the load has risen (default 5)")
    parser.add_argument("--rate", type=float, default=20_000, help="peak requests per second (default 20000)")
    parser.add_argument("--transport", choices=["tcp", "ipc", "inproc"], default="tcp")
    args = parser.parse_args(argv)
    if args.servers < 2:
        parser.error("--servers must be at least 2 (one is stopped part-way)")
    interrupted = False

    async def run() -> DemoSummary | None:
        # Ctrl-C (or SIGTERM) cancels the run cleanly: a KeyboardInterrupt raised
        # wherever the loop happens to be can land inside Trio's own machinery
        nonlocal interrupted
        summary = None
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    nonlocal interrupted
                    async for signum in signals:
                        interrupted = signum == signal.SIGINT
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                summary = await run_demo(
                    duration=args.duration,
                    servers=args.servers,
                    max_servers=max(args.max_servers, args.servers),
                    rate=args.rate,
                    transport=args.transport,
                )
                nursery.cancel_scope.cancel()
        return summary

    summary = trio.run(run)
    if summary is None:  # stopped by a signal
        return 130 if interrupted else 0
    return 0 if summary.ok else 1

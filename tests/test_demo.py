"""The main job: `triomq demo` runs, hot-plugs and kills servers, and loses nothing among survivors."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from triomq._demo import run_demo


def test_triomq_demo_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "triomq", "demo", "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "connected to the running gateway" in out
    assert re.search(r"servers started\s+5 \(stopped abruptly: 1\)", out)
    assert re.search(r"lost among survivors\s+0\n", out)
    assert re.search(r"duplicates\s+0\n", out)
    assert "OK: nothing lost among the servers that stayed up" in out
    sent = int(re.search(r"requests sent\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    survivors = int(re.search(r"processed by survivors\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    stopped = int(re.search(r"processed by stopped\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    in_flight = int(re.search(r"in flight to stopped\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert sent > 1000 and survivors > 0 and stopped > 0
    assert survivors + stopped + in_flight == sent  # every request accounted for


@pytest.mark.parametrize("transport", ["inproc", "ipc"])
async def test_demo_over_other_transports(transport: str) -> None:
    out = io.StringIO()
    summary = await run_demo(duration=2, servers=2, max_servers=3, transport=transport, out=out, live=False)
    assert summary.ok, out.getvalue()
    assert summary.servers_started == 3 and summary.servers_stopped == 1
    assert summary.processed_by_survivors + summary.processed_by_stopped + summary.in_flight_to_stopped == summary.sent

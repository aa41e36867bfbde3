"""Every example runs on its own, exits 0 and prints its key line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: a line (or part of one) that each example prints when it did its job
KEY_LINES = {
    "hello_world.py": "hello world: 5 requests, 5 replies",
    "weather.py": "average temperature for zipcode",
    "divide_and_conquer.py": "100 tasks done by 4 workers",
    "multitask_server.py": "all 30 requests answered by 4 workers",
    "pair_relay.py": "step 3 got the baton",
    "rpc_retries.py": "RequestFailed: no reply after 3 attempts",
    "rpc_restart.py": "all 90 calls answered, by server generations 1, 2",
    "sync_pub.py": "each of 3 subscribers received all 1000 updates",
    "forwarder.py": "subscriber to 'weather': 10 messages via the proxy",
    "gateway.py": "OK: nothing lost among the servers that stayed up",
}


def test_every_example_is_checked() -> None:
    files = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(KEY_LINES) <= files, "an example listed here is missing"
    readme = (EXAMPLES / "README.md").read_text()
    for name in files:
        assert f"`{name}`" in readme, f"{name} is not in examples/README.md"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name: str) -> None:
    if name == "secure_service.py":
        pytest.importorskip("nacl", reason="CURVE needs PyNaCl")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    key = KEY_LINES.get(name)
    if key is not None:
        assert key in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr

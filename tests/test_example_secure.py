"""examples/secure_service.py runs on its own and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
import zmq.auth

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "secure_service.py"


async def test_secure_service_example(tmp_path: Path) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(EXAMPLE), str(tmp_path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "alice: got 'hello, alice: goodbye'" in out
    assert "bob: got 'hello, bob: goodbye'" in out
    assert "mallory: refused (auth)" in out
    assert "server: refused a client (auth)" in out
    assert out.rstrip().endswith("all as expected")
    # the key files it wrote are the format pyzmq reads
    public, secret = zmq.auth.load_certificate(tmp_path / "server" / "server.key_secret")
    assert secret is not None and zmq.curve_public(secret) == public
    assert sorted(p.name for p in (tmp_path / "authorized").iterdir()) == ["alice.key", "bob.key"]


def test_secure_service_example_runs_with_a_temporary_directory() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()

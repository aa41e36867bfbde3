"""The short version of the soak and fault suite (benchmarks/soak.py --short)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_soak_short() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--short"], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = dict(
        line.rsplit(None, 1) for line in result.stdout.splitlines() if line and line[0] != " " and " " in line
    )
    assert result.stdout.strip().endswith("OK")
    assert figures["duplicates"] == "0" and figures["corrupted"] == "0" and figures["reordered"] == "0"
    assert int(figures["workers killed (SIGKILL)"]) >= 1
    assert int(figures["received"]) > 0

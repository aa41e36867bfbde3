from __future__ import annotations

import itertools
import os
import tempfile

import pytest

_counter = itertools.count()


@pytest.fixture(params=["tcp", "ipc", "inproc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def endpoint(transport: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh endpoint to bind on, for each transport."""
    n = next(_counter)
    if transport == "tcp":
        return "tcp://127.0.0.1:0"
    if transport == "ipc":
        # unix socket paths are short: use a short temp dir, not pytest's long tmp_path
        d = tempfile.mkdtemp(prefix="tq")
        return f"ipc://{d}/s{n}"
    return f"inproc://ep-{os.getpid()}-{n}"

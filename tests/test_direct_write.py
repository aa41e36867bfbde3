"""A message sent while the connection's writer is idle is written by the
sender's task at once (request/reply latency). Whatever the kernel does not
take goes first when the writer resumes: order and content are kept."""

from __future__ import annotations

import pytest
import trio

import triomq
from triomq._engine import _session


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records what each direct-write attempt decided."""
    seen: list[bool] = []
    original = _session._Session._write_now

    def spy(self: _session._Session, msg: list[bytes]) -> bool:
        took = original(self, msg)
        seen.append(took)
        return took

    monkeypatch.setattr(_session._Session, "_write_now", spy)
    return seen


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_a_partly_written_message_goes_first(
    transport: str, direct_writes: list[bool], tmp_path_factory: pytest.TempPathFactory
) -> None:
    endpoint = "tcp://127.0.0.1:0" if transport == "tcp" else "ipc://" + str(tmp_path_factory.mktemp("dw") / "s")
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the kernel takes at once
    with trio.fail_after(20):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            async with triomq.open_socket(triomq.PUSH) as push:
                await push.connect(ep)
                await push.wait_peers()
                await push.send_multipart([b"head", big])
                assert direct_writes == [True]  # written (in part) by send() itself
                for i in range(100):
                    await push.send(b"%d" % i)
                assert await pull.recv_multipart() == [b"head", big]
                for i in range(100):
                    assert await pull.recv() == b"%d" % i


async def test_request_reply_writes_directly(direct_writes: list[bool]) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
            ep = await rep.bind("tcp://127.0.0.1:0")
            await req.connect(ep)
            await req.wait_peers()
            for i in range(20):
                await req.send(b"ping %d" % i)
                assert await rep.recv() == b"ping %d" % i
                await rep.send(b"pong %d" % i)
                assert await req.recv() == b"pong %d" % i
            # each side's writer was idle for every message (at real time, more
            # than DIRECT_GAP passes between a side's sends)
            assert direct_writes.count(True) >= 30

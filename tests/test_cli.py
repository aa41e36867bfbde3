"""The ``triomq`` command, run as a subprocess against libzmq peers (pyzmq)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from triomq._cli import decode_binary, encode_binary, main, parse_certificate

zmq = pytest.importorskip("zmq")
zmq_auth = pytest.importorskip("zmq.auth")
needs_nacl = pytest.mark.skipif(
    importlib.util.find_spec("nacl") is None, reason="CURVE needs PyNaCl"
)

ROOT = Path(__file__).resolve().parent.parent
TRIOMQ = [sys.executable, "-m", "triomq"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str, stdin: bytes = b"", timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*TRIOMQ, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
        check=False,
    )


class Proc(subprocess.Popen[bytes]):
    """A triomq process whose stderr goes to a file (read it with :meth:`err`)."""

    def __init__(self, args: list[str], err_path: Path) -> None:
        self.err_path = err_path
        with open(err_path, "wb") as err:
            super().__init__(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=ENV, cwd=ROOT
            )

    def err(self) -> str:
        return self.err_path.read_text()

    def bound_endpoints(self, count: int = 1, timeout: float = 10) -> list[str]:
        """The endpoints it reports on stderr ('... bound to tcp://...')."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(r"bound to (\S+)", self.err())
            if len(found) >= count:
                return found[:count]
            if self.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no bound endpoint reported: {self.err()!r}")
            time.sleep(0.02)  # polls: stderr goes to a file, which gives no event


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Starts triomq processes; any still running at the end of the test is killed."""
    procs: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc([*TRIOMQ, *args], tmp_path / f"stderr-{len(procs)}.txt")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def zsock() -> Iterator[Callable[[int], Any]]:
    """Makes pyzmq sockets (LINGER 0), all closed at the end of the test."""
    context = zmq.Context()
    sockets: list[Any] = []

    def make(kind: int) -> Any:
        sock = context.socket(kind)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = 10_000  # fail, never hang
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()
    context.term()


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------- usage


def test_help_everywhere() -> None:
    for command in [[], ["sub"], ["req"], ["router"], ["keygen"], ["proxy"], ["bench"], ["demo"]]:
        result = run(*command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert b"usage:" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert b"a command is needed" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["req", "foo://x"], "unknown transport"),
        (["sub", "tcp://127.0.0.1:notaport"], "bad port"),
        (["pull", "--connect", "tcp://*:5555"], "wildcard"),
        (["proxy", "nope", "tcp://*:1", "pub", "tcp://*:2"], "invalid choice"),
        (["req", "tcp://127.0.0.1:1", "--timeout", "-1"], "--timeout"),
        (["proxy", "pub", "tcp://127.0.0.1:0", "pub", "tcp://127.0.0.1:0"], "nothing to forward"),
        (["pull", "-d", "", "tcp://127.0.0.1:1"], "empty delimiter"),
        (["pull", "ipc://*"], "names no path"),
        (["pull", "--bind", "tls://127.0.0.1:0"], "does not speak tls://"),
        (["bench", "nonsense"], "no benchmark group 'nonsense'"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert message in one_line_error(result)


def test_unreachable_peer_with_timeout() -> None:
    started = time.monotonic()
    result = run("req", "tcp://127.0.0.1:1", "--timeout", "0.5", stdin=b"hello\n")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "no reply within 0.5s" in line and "cannot connect" in line
    assert time.monotonic() - started < 10


def test_a_bound_req_without_a_peer_gives_up_after_its_timeout() -> None:
    # the REQ waits to send, not for a reply: --timeout bounds that too
    started = time.monotonic()
    result = run("req", "--bind", "tcp://127.0.0.1:0", "--timeout", "0.5", stdin=b"hello\n")
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert "no peer to send to within 0.5s" in result.stderr.decode().splitlines()[-1]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("command", [["keygen"], ["demo", "--duration", "2"]])
def test_a_closed_stdout_ends_quietly(command: list[str]) -> None:
    # (| head: the reader goes away; no traceback, exit 0)
    proc = subprocess.Popen(
        [*TRIOMQ, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT
    )
    assert proc.stdout is not None
    proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"Traceback" not in err, err


def test_demo_interrupted_exits_130_without_a_traceback() -> None:
    proc = subprocess.Popen(
        [*TRIOMQ, "demo", "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # (it is running: the gateway is listening)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"Traceback" not in err, err


def test_cannot_bind_is_a_runtime_failure(zsock: Callable[[int], Any]) -> None:
    taken = zsock(zmq.REP)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    result = run("rep", f"tcp://127.0.0.1:{port}", "--echo")
    assert result.returncode == 1
    assert "cannot bind" in one_line_error(result)


# ---------------------------------------------------------------------------- against libzmq


def test_sub_receives_from_libzmq_pub(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    pub = zsock(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    proc = start(
        "sub", f"tcp://127.0.0.1:{port}", "--topic", "weather", "--count", "3", "--timeout", "15"
    )
    i = 0
    deadline = time.monotonic() + 15
    # a libzmq PUB drops what it publishes before the subscription arrives, and
    # says nothing when it does: publish until the SUB has had its 3 (polls)
    while proc.poll() is None and time.monotonic() < deadline:
        pub.send_multipart([b"weather", b"%d" % i])
        pub.send(b"traffic %d" % i)
        i += 1
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, proc.err()
    lines = out.decode().splitlines()
    assert len(lines) == 3
    assert all(re.fullmatch(r"weather\t\d+", line) for line in lines), lines


def test_req_talks_to_libzmq_rep(zsock: Callable[[int], Any]) -> None:
    rep = zsock(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        for _ in range(3):
            rep.send_multipart([frame.upper() for frame in rep.recv_multipart()])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result = run(
        "req",
        f"tcp://127.0.0.1:{port}",
        "--timeout",
        "10",
        "-d",
        ",",
        stdin=b"hello\nmulti,part\nlast",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"HELLO\nMULTI,PART\nLAST\n"
    thread.join(5)


def test_req_times_out_when_libzmq_rep_is_silent(zsock: Callable[[int], Any]) -> None:
    rep = zsock(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    result = run("req", f"tcp://127.0.0.1:{port}", "--timeout", "0.5", stdin=b"anyone?\n")
    assert result.returncode == 1
    assert one_line_error(result) == f"triomq: no reply within 0.5s from tcp://127.0.0.1:{port}"
    assert rep.recv() == b"anyone?"


@pytest.mark.parametrize(("command", "what"), [("pull", "message"), ("rep", "request")])
def test_a_silent_peer_ends_a_receiving_tool_after_its_timeout(
    command: str, what: str, zsock: Callable[[int], Any]
) -> None:
    # a libzmq peer that connects and says nothing
    peer = zsock(zmq.PUSH if command == "pull" else zmq.REQ)
    port = peer.bind_to_random_port("tcp://127.0.0.1")
    result = run(command, "--connect", f"tcp://127.0.0.1:{port}", "--timeout", "0.5")
    assert result.returncode == 1
    assert one_line_error(result).startswith(f"triomq: no {what} within 0.5s ")
    assert f"tcp://127.0.0.1:{port}" in one_line_error(result)


def test_rep_echo_answers_libzmq_req(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    proc = start("rep", "tcp://127.0.0.1:0", "--echo", "--count", "2")
    (endpoint,) = proc.bound_endpoints()
    req = zsock(zmq.REQ)
    req.connect(endpoint)
    req.send_multipart([b"one", b"two"])
    assert req.recv_multipart() == [b"one", b"two"]
    req.send(b"three")
    assert req.recv() == b"three"
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == b"one\ttwo\nthree\n"


def test_rep_replies_with_stdin_lines(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    proc = start("rep", "tcp://127.0.0.1:0")
    (endpoint,) = proc.bound_endpoints()
    assert proc.stdin is not None
    proc.stdin.write(b"first answer\nsecond answer\n")
    proc.stdin.flush()
    req = zsock(zmq.REQ)
    req.connect(endpoint)
    for question, answer in [(b"q1", b"first answer"), (b"q2", b"second answer")]:
        req.send(question)
        assert req.recv() == answer
    req.send(b"q3")  # no answer left on stdin: printed, unanswered, and the command ends
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == b"q1\nq2\nq3\n"


def test_push_binary_multipart_to_libzmq_pull(zsock: Callable[[int], Any]) -> None:
    pull = zsock(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    messages = [[b"a\nb", b""], [b"\x00\xff" * 10], [b"x", b"y", b"z"]]
    result = run("push", f"tcp://127.0.0.1:{port}", "--binary", stdin=encode_binary(messages))
    assert result.returncode == 0, result.stderr
    assert [pull.recv_multipart() for _ in messages] == messages


def test_pull_binary_from_libzmq_push(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    proc = start("pull", "tcp://127.0.0.1:0", "--binary", "-n", "2")
    (endpoint,) = proc.bound_endpoints()
    push = zsock(zmq.PUSH)
    push.connect(endpoint)
    push.send_multipart([b"frame\n1", b"frame 2"])
    push.send(b"")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert decode_binary(out) == [[b"frame\n1", b"frame 2"], [b""]]


def test_pub_waits_for_peers_then_libzmq_sub_gets_everything(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    proc = start("pub", "tcp://127.0.0.1:0", "--peers", "1")
    (endpoint,) = proc.bound_endpoints()
    sub = zsock(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(endpoint)
    proc.communicate(b"".join(b"msg %d\n" % i for i in range(20)), timeout=10)
    assert proc.returncode == 0, proc.err()
    assert [sub.recv() for _ in range(20)] == [b"msg %d" % i for i in range(20)]


def test_pub_waits_for_subscriptions_not_only_handshakes(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    """``pub --peers`` waits until its peers have subscribed: a libzmq SUB that
    connects and never subscribes gets the run timed out, and no message is
    sent (the tool used to wait 0.1 s after the handshakes and send)."""
    proc = start("pub", "tcp://127.0.0.1:0", "--peers", "1", "--timeout", "1")
    (endpoint,) = proc.bound_endpoints()
    sub = zsock(zmq.SUB)
    sub.connect(endpoint)
    proc.communicate(b"lost\n", timeout=10)
    assert proc.returncode == 1
    assert "0 of 1 peer(s) subscribed within 1s" in proc.err(), proc.err()
    sub.subscribe(b"")
    assert sub.poll(100) == 0


async def test_pub_counts_the_subscriptions_of_the_peers_there_now() -> None:
    """``pub --peers N`` waits for N connected peers that have subscribed: a
    subscriber that came and went no longer counts, so a peer connecting after
    it is waited for until its own subscription arrives (it used to be taken
    as subscribed, and to miss the first messages)."""
    import trio.testing

    import triomq
    from triomq._cli import _PeerStatus

    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.XPUB, xpub_verbose=True) as pub,
            trio.open_nursery() as nursery,
        ):
            status = _PeerStatus()
            nursery.start_soon(status.watch_subscriptions, pub)
            await pub.bind("inproc://cli-subscribers")
            async with triomq.open_socket(triomq.SUB, subscribe=[b""]) as gone:
                await gone.connect("inproc://cli-subscribers")
                await status.wait_subscribers(pub, 1)
            async with triomq.open_socket(triomq.SUB) as late:
                await late.connect("inproc://cli-subscribers")
                await pub.wait_peers(1)
                done = trio.Event()

                async def wait() -> None:
                    await status.wait_subscribers(pub, 1)
                    done.set()

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set() and status.subscribed(pub) == 0
                await late.subscribe(b"")
                await done.wait()
                assert status.subscribed(pub) == 1
            nursery.cancel_scope.cancel()


def test_dealer_and_router_with_libzmq(
    start: Callable[..., Proc], zsock: Callable[[int], Any]
) -> None:
    # triomq router <- libzmq dealer: the routing id is printed in hex, and a
    # line starting with it is routed back
    proc = start("router", "tcp://127.0.0.1:0", "-n", "1")
    (endpoint,) = proc.bound_endpoints()
    dealer = zsock(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"peer")
    dealer.connect(endpoint)
    assert proc.stdin is not None
    dealer.send_multipart([b"hello", b"router"])
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"70656572\thello\trouter\n"
    proc.stdin.write(b"70656572\tback\n")
    proc.stdin.flush()
    assert dealer.recv_multipart() == [b"back"]
    proc.stdin.close()
    proc.wait(10)
    assert proc.returncode == 0

    router = zsock(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    proc = start("dealer", f"tcp://127.0.0.1:{port}", "--routing-id", "cli", "-n", "1")
    assert proc.stdin is not None
    proc.stdin.write(b"ping\n")
    proc.stdin.flush()
    assert router.recv_multipart() == [b"cli", b"ping"]
    router.send_multipart([b"cli", b"pong"])
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == b"pong\n"


# ---------------------------------------------------------------------------- keys and CURVE


@needs_nacl
def test_keygen_files_are_zcert_and_private(tmp_path: Path) -> None:
    base = tmp_path / "server"
    result = run("keygen", "--out", str(base))
    assert result.returncode == 0, result.stderr
    secret_file, public_file = Path(f"{base}.key_secret"), Path(f"{base}.key")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    public, secret = zmq_auth.load_certificate(str(secret_file))
    assert secret is not None and len(secret) == 40
    assert zmq.curve_public(secret) == public
    assert zmq_auth.load_certificate(str(public_file)) == (public, None)
    assert public.decode() in result.stdout.decode()
    # never overwritten by accident
    again = run("keygen", "--out", str(base))
    assert again.returncode == 1
    assert "exists" in one_line_error(again)


@needs_nacl
def test_keygen_to_stdout_and_bare_keys() -> None:
    result = run("keygen")
    assert result.returncode == 0
    public, secret = parse_certificate(result.stdout.decode())
    assert public is not None and secret is not None
    assert zmq.curve_public(secret) == public
    assert parse_certificate(public.decode() + "\n") == (public, None)


@needs_nacl
def test_curve_rep_with_libzmq_client(
    start: Callable[..., Proc], zsock: Callable[[int], Any], tmp_path: Path
) -> None:
    base = tmp_path / "server"
    assert run("keygen", "--out", str(base)).returncode == 0
    proc = start(
        "rep", "tcp://127.0.0.1:0", "--curve-server", f"{base}.key_secret", "--echo", "-n", "1"
    )
    (endpoint,) = proc.bound_endpoints()
    server_public, _ = zmq_auth.load_certificate(f"{base}.key")
    client_public, client_secret = zmq.curve_keypair()
    req = zsock(zmq.REQ)
    req.curve_serverkey = server_public
    req.curve_publickey = client_public
    req.curve_secretkey = client_secret
    req.connect(endpoint)
    req.send(b"secret hello")
    assert req.recv() == b"secret hello"
    proc.communicate(timeout=10)
    assert proc.returncode == 0


@needs_nacl
def test_curve_between_two_triomq_commands_with_an_allow_directory(
    start: Callable[..., Proc], tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("server", "alice", "mallory"):
        assert run("keygen", "--out", str(tmp_path / name)).returncode == 0
    (tmp_path / "alice.key").rename(allowed / "alice.key")
    proc = start(
        "rep",
        "tcp://127.0.0.1:0",
        "--curve-server",
        str(tmp_path / "server.key_secret"),
        "--curve-allow",
        str(allowed),
        "--echo",
        "-n",
        "1",
    )
    (endpoint,) = proc.bound_endpoints()
    server_key = str(tmp_path / "server.key")

    refused = run(
        "req",
        endpoint,
        "--curve-serverkey",
        server_key,
        "--curve-key",
        str(tmp_path / "mallory.key_secret"),
        "--timeout",
        "1",
        stdin=b"let me in\n",
    )
    assert refused.returncode == 1
    assert "handshake" in one_line_error(refused)

    allowed_run = run(
        "req",
        endpoint,
        "--curve-serverkey",
        server_key,
        "--curve-key",
        str(tmp_path / "alice.key_secret"),
        "--timeout",
        "5",
        stdin=b"hi\n",
    )
    assert allowed_run.returncode == 0, allowed_run.stderr
    assert allowed_run.stdout == b"hi\n"
    proc.communicate(timeout=10)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------- proxy, bench, demo


@pytest.mark.parametrize(
    ("front", "back", "topic"),
    [
        ("xsub", "xpub", b"news"),  # subscriptions go upstream
        ("sub", "pub", b""),  # a SUB frontend subscribes to every topic (it received nothing)
    ],
)
def test_proxy_between_libzmq_peers(
    start: Callable[..., Proc], zsock: Callable[[int], Any], front: str, back: str, topic: bytes
) -> None:
    proc = start("proxy", front, "tcp://127.0.0.1:0", back, "tcp://127.0.0.1:0")
    front_ep, back_ep = proc.bound_endpoints(2)
    pub = zsock(zmq.PUB)
    pub.connect(front_ep)
    sub = zsock(zmq.SUB)
    sub.subscribe(topic)
    sub.connect(back_ep)
    sub.rcvtimeo = 10
    got = None
    deadline = time.monotonic() + 10
    while got is None and time.monotonic() < deadline:  # (slow joiners on both sides)
        pub.send(b"sports: nothing")
        pub.send(b"news: proxied")
        try:
            got = sub.recv()
        except zmq.Again:
            pass
    assert got == (b"news: proxied" if topic else b"sports: nothing")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0, proc.err()
    assert "messages forwarded" in proc.err()


def test_bench_without_a_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import triomq._cli as cli

    monkeypatch.setattr(cli, "BENCH_PATH", tmp_path / "benchmarks" / "bench.py")
    assert main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "ship with the source checkout" in err
    assert len(err.strip().splitlines()) == 1


def test_bench_runs_the_benchmark_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import triomq._cli as cli

    fake = tmp_path / "bench.py"
    fake.write_text(
        "def have_pyzmq(): return True\n"
        "def median_of(runs, fn): return sorted(fn() for _ in range(runs))[runs // 2]\n"
        "class Table:\n"
        "    def add(self, *row): print('row', *row)\n"
        "def main(argv):\n"
        "    print('argv', argv)\n"
        "    t = Table(); t.add('x', median_of(3, lambda: 1.0))\n"
        "    return 0\n"
    )
    monkeypatch.setattr(cli, "BENCH_PATH", fake)
    assert main(["bench", "--quick", "latency"]) == 0
    out = capsys.readouterr().out
    assert "argv ['latency', '--quick']" in out
    assert "row x 1.0" in out


def test_demo_dispatches_to_the_demo() -> None:
    result = run("demo", "--help")
    assert result.returncode == 0
    assert b"--duration" in result.stdout

"""The ``triomq`` command: demo, cat-style socket tools, keygen, proxy, bench.

``triomq pub|sub|push|pull|req|rep|pair|dealer|router ENDPOINT...`` moves
messages between stdin/stdout and a socket, so shell scripts (and people
debugging a ZeroMQ system) can talk to any ZeroMQ peer.

Exit codes: 0 success, 1 runtime failure (no reply, cannot bind, ...),
2 usage error (bad arguments, malformed endpoint), 130 interrupted.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Self

import trio

from ._endpoint import parse_endpoint
from ._engine._monitor import ConnectRetried, HandshakeFailed, HandshakeSucceeded, MonitorEvent
from ._errors import EndpointError, TriomqError
from ._options import SocketOptions
from ._proxy import ProxyControl, proxy
from ._socket import PeerInfo, Socket, open_socket
from ._socket_type import SocketType

PROG = "triomq"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: the socket types of the cat tools, and whether each binds by default
CAT_TYPES: dict[str, bool] = {
    "pub": True,
    "sub": False,
    "push": False,
    "pull": False,
    "req": False,
    "rep": True,
    "pair": False,
    "dealer": False,
    "router": True,
}
#: every type, for proxy
ALL_TYPES = [t.name.lower() for t in SocketType]

BENCH_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"

_Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class CliError(Exception):
    """A failure reported as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------- argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_FORMATS = """\
message formats:
  default   one line of stdin = one single-frame message; a received message
            is printed as one line, its frames separated by a tab (or by -d)
  -d SEP    lines are split at SEP into frames (and frames joined with SEP);
            "\\t" means a tab. ROUTER: the first field is the peer's routing
            id, in hex; ROUTER splits lines at a tab unless -d says otherwise
  --binary  exact bytes: each message is a 4-byte big-endian frame count,
            then each frame as a 4-byte big-endian length and its bytes

endpoints: "@tcp://..." binds and ">tcp://..." connects (CZMQ's notation);
  otherwise --bind/--connect decide, else a wildcard host or port
  (tcp://*:5555, tcp://127.0.0.1:0) binds, else pub, rep and router bind
  and the other types connect. A bound endpoint is reported on stderr.
"""

_ROLES = {
    "pub": "publish each stdin message",
    "sub": "print each message published to the subscribed topics",
    "push": "send each stdin message to the next pulling peer",
    "pull": "print each message pushed to us",
    "req": "send each stdin message as a request and print its reply",
    "rep": "print each request and answer it (with --echo, --reply, or the next stdin message)",
    "pair": "send stdin and print what arrives, both at once",
    "dealer": "send stdin and print what arrives, both at once",
    "router": "print messages (routing id first, in hex); route stdin lines by their first field",
}


_COUNT_HELP = {
    "pub": "stop after sending N messages",
    "push": "stop after sending N messages",
    "sub": "stop after receiving N messages",
    "pull": "stop after receiving N messages",
    "req": "stop after N requests and their replies",
    "rep": "stop after answering N requests",
    **dict.fromkeys(
        ("pair", "dealer", "router"),
        "stop once N messages have arrived and stdin is exhausted (default: run until interrupted)",
    ),
}


def _add_security(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security (CURVE)")
    g.add_argument(
        "--curve-server",
        metavar="CERT",
        help="be a CURVE server with the secret key in CERT (NAME.key_secret from 'triomq keygen')",
    )
    g.add_argument(
        "--curve-allow",
        metavar="DIR",
        help="CURVE server: only allow clients whose public key is in a DIR/*.key file "
        "(default: any client that knows our public key)",
    )
    g.add_argument(
        "--curve-serverkey",
        metavar="KEY",
        help="be a CURVE client of the server with this public key (Z85, or a certificate file)",
    )
    g.add_argument(
        "--curve-key",
        metavar="CERT",
        help="CURVE client: our own secret certificate (default: a fresh key pair)",
    )


#: the groups of benchmarks/bench.py
BENCH_GROUPS = ("throughput", "latency", "pubsub", "inproc", "curve")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Trio-native ZeroMQ: cat-style socket tools, CURVE keys, a proxy, "
        "benchmarks, a demo.",
        epilog="exit codes: 0 ok, 1 runtime failure, 2 usage error, 130 interrupted. "
        "Run 'triomq COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("demo", help="the game-gateway demo (triomq demo --help)", add_help=False)

    for name, binds in CAT_TYPES.items():
        p = sub.add_parser(
            name,
            help=_ROLES[name],
            description=f"A {name.upper()} socket: {_ROLES[name]}.",
            epilog=_FORMATS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("endpoints", nargs="+", metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
        how = p.add_mutually_exclusive_group()
        how.add_argument(
            "--bind",
            dest="bind",
            action="store_true",
            default=None,
            help="bind the endpoints" + (" (the default)" if binds else ""),
        )
        how.add_argument(
            "--connect",
            dest="bind",
            action="store_false",
            help="connect to the endpoints" + ("" if binds else " (the default)"),
        )
        p.add_argument(
            "--binary", action="store_true", help="length-prefixed frames instead of lines"
        )
        p.add_argument("-d", "--delimiter", metavar="SEP", help="split lines into frames at SEP")
        p.add_argument("-n", "--count", type=_positive_int, metavar="N", help=_COUNT_HELP[name])
        p.add_argument(
            "--timeout",
            type=_positive_float,
            metavar="S",
            help=(
                "exit 1 if the reply to a request takes longer than S seconds"
                if name == "req"
                else "exit 1 if no peer connects within S seconds"
                if name in ("pub", "push")
                else "exit 1 if no message arrives within S seconds"
            ),
        )
        if name == "sub":
            p.add_argument(
                "-t",
                "--topic",
                action="append",
                metavar="T",
                help="subscribe to messages starting with T (repeatable; default: everything)",
            )
        if name in ("pub", "push"):
            p.add_argument(
                "--peers",
                type=_positive_int,
                metavar="N",
                default=0,
                help=(
                    "wait for N peers to connect before sending"
                    + (" and subscribe (the slow-joiner remedy)" if name == "pub" else "")
                ),
            )
        if name == "rep":
            answer = p.add_mutually_exclusive_group()
            answer.add_argument(
                "--echo", action="store_true", help="send each request back as its reply"
            )
            answer.add_argument("--reply", metavar="TEXT", help="answer every request with TEXT")
        if name in ("req", "dealer", "router", "pair"):
            p.add_argument("--routing-id", metavar="ID", help="our routing id (as text)")
        p.add_argument(
            "--linger",
            type=_nonnegative_float,
            metavar="S",
            help="on exit, wait at most S seconds for unsent messages (default: until sent)",
        )
        p.add_argument(
            "-q", "--quiet", action="store_true", help="do not report the bound endpoints"
        )
        _add_security(p)
        p.set_defaults(socket_type=name, handler=_cmd_cat)

    p = sub.add_parser(
        "keygen",
        help="make a CURVE key pair",
        description="Make a CURVE key pair. Without --out, print the secret certificate "
        "(czmq's zcert format: a 'curve' section with public-key and secret-key). With --out BASE, "
        "write BASE.key (the public certificate: hand it out, or drop it in a server's "
        "--curve-allow directory) and BASE.key_secret (both keys, mode 0600), as pyzmq's "
        "zmq.auth.create_certificates and triomq.auth.create_certificates do.",
    )
    p.add_argument("--out", metavar="BASENAME", help="write BASENAME.key and BASENAME.key_secret")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=_cmd_keygen)

    p = sub.add_parser(
        "proxy",
        help="forward messages between two sockets (zmq_proxy)",
        description="Forward messages between a frontend and a backend socket until interrupted "
        "(e.g. 'triomq proxy xsub tcp://*:5555 xpub tcp://*:5556', or router/dealer, pull/push). "
        "Endpoints are bound unless written '>tcp://...' (connect).",
    )
    p.add_argument("frontend_type", metavar="FRONTEND_TYPE", type=str.lower, choices=ALL_TYPES)
    p.add_argument("frontend", metavar="FRONTEND_EP")
    p.add_argument("backend_type", metavar="BACKEND_TYPE", type=str.lower, choices=ALL_TYPES)
    p.add_argument("backend", metavar="BACKEND_EP")
    p.add_argument(
        "--capture", metavar="EP", help="a PUB socket on EP gets a copy of every message"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="do not report endpoints and counts")
    p.set_defaults(handler=_cmd_proxy)

    p = sub.add_parser(
        "bench",
        help="triomq and pyzmq side by side (needs the source checkout)",
        description="Run benchmarks/bench.py from the source checkout: throughput, latency, "
        "pub/sub fan-out and CURVE, for triomq and (when installed) pyzmq.",
    )
    p.add_argument(
        "groups",
        nargs="*",
        metavar="GROUP",
        help=f"{', '.join(BENCH_GROUPS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="smaller counts, one run per row")
    p.add_argument(
        "--runs", type=_positive_int, metavar="N", help="runs per row (the median is shown)"
    )
    p.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    p.set_defaults(handler=_cmd_bench)
    return parser


def _version() -> str:
    import triomq

    return triomq.__version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


# ---------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``triomq`` command with *argv* (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    handler: Callable[[argparse.Namespace], int]
    if args_list and args_list[0] == "demo":
        from ._demo import main as demo_main

        def handler(args: argparse.Namespace) -> int:
            return demo_main(args_list[1:])

        args = argparse.Namespace()
    else:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: a command is needed (see {PROG} --help)", file=sys.stderr)
            return EXIT_USAGE
        handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        _error(exc.message)
        return exc.code
    except BaseException as raised:
        # (from a Trio program, such as the demo, it may come in a group)
        err = _unwrap(raised)
        if isinstance(err, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(err, BrokenPipeError):
            _silence_stdout()  # the reader of our stdout went away (| head): we are done
            return EXIT_OK
        if isinstance(err, OSError):  # writing our output failed (a full disk, say)
            _error(err.strerror or str(err))
            return EXIT_FAILURE
        raise


def _silence_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the flush at exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _error(message: str) -> None:
    try:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        _error(message)


def _run_trio(
    args: argparse.Namespace, command: Callable[[argparse.Namespace, _Run], Awaitable[None]]
) -> int:
    """Run *command* under Trio; SIGINT/SIGTERM end it cleanly; errors become one line."""
    run = _Run()

    async def wrapper() -> None:
        with run.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, run)
                try:
                    await command(args, run)
                finally:
                    nursery.cancel_scope.cancel()

    try:
        trio.run(wrapper)
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return _outcome(run, exc)
    if run.error is not None:
        raise run.error
    return EXIT_INTERRUPTED if run.interrupted else EXIT_OK


def _outcome(run: _Run, exc: BaseException) -> int:
    """The exit code for a run that raised *exc*; CliError for a failure to report."""
    if run.error is not None:
        raise run.error from None
    err = _unwrap(exc)
    if isinstance(err, CliError):
        raise err from None
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, BrokenPipeError):
        _silence_stdout()
        return EXIT_OK  # the reader of our stdout went away (| head): we are done
    if isinstance(err, (TriomqError, OSError, trio.TooSlowError)):
        raise CliError(str(err) or type(err).__name__) from None
    raise exc


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        interesting = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(interesting) != 1:
            return exc
        exc = interesting[0]
    return exc


class _Run:
    """One run of a command: its cancel scope, and how it ended."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.error: CliError | None = None
        self.interrupted = False

    def fail(self, message: str, code: int = EXIT_FAILURE) -> NoReturn:
        """End the run now with *message* (skipping linger: nothing more will be delivered)."""
        self.error = CliError(message, code)
        self.scope.cancel()
        raise self.error

    def finish(self) -> None:
        """End the run now, successfully."""
        self.scope.cancel()


async def _watch_signals(run: _Run) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            run.interrupted = signum == signal.SIGINT
            run.scope.cancel()
            return


# ---------------------------------------------------------------------------- endpoints and options


def _split_endpoint(text: str, default_bind: bool) -> tuple[str, bool]:
    """('tcp://...', bind?) from '@tcp://...', '>tcp://...' or a bare endpoint."""
    if text[:1] == "@":
        return text[1:], True
    if text[:1] == ">":
        return text[1:], False
    return text, default_bind


def _resolve_endpoints(
    texts: Sequence[str], flag: bool | None, type_binds: bool
) -> list[tuple[str, bool]]:
    """Validate each endpoint (exit 2 if malformed) and decide bind or connect."""
    out = []
    for text in texts:
        raw, bind = _split_endpoint(text, True)
        try:
            ep = parse_endpoint(raw)
        except EndpointError as exc:
            raise CliError(f"bad endpoint {raw!r}: {exc}", EXIT_USAGE) from None
        if raw == text:  # no @ or > prefix
            if flag is not None:
                bind = flag
            elif ep.scheme in ("tcp", "tls") and (ep.host == "*" or ep.port == 0):
                bind = True
            else:
                bind = type_binds
        if not bind and ep.scheme in ("tcp", "tls") and (ep.host == "*" or ep.port == 0):
            raise CliError(
                f"cannot connect to a wildcard address or port: {raw} (use --bind)", EXIT_USAGE
            )
        if ep.scheme == "ipc" and ep.path == "*":
            raise CliError(f"ipc://* names no path: {raw} (give one, e.g. ipc:///tmp/feed)", EXIT_USAGE)
        if ep.scheme == "tls":
            # (the library takes an ssl.SSLContext, which the command has no way to set)
            raise CliError(f"the command does not speak tls://: {raw} (use tcp:// with CURVE)", EXIT_USAGE)
        out.append((raw, bind))
    return out


async def _attach(
    sock: Socket, endpoints: list[tuple[str, bool]], args: argparse.Namespace
) -> None:
    for endpoint, bind in endpoints:
        if bind:
            try:
                resolved = await sock.bind(endpoint)
            except EndpointError as exc:
                raise CliError(str(exc)) from None
            _say(args, f"{sock.socket_type.name} bound to {resolved}")
        else:
            try:
                await sock.connect(endpoint)
            except EndpointError as exc:
                raise CliError(str(exc)) from None


def _security_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if getattr(args, "curve_server", None):
        if args.curve_serverkey:
            raise CliError("--curve-server and --curve-serverkey exclude each other", EXIT_USAGE)
        public, secret = load_certificate(args.curve_server, secret_wanted=True)
        opts.update(curve_server=True, curve_secretkey=secret, curve_publickey=public)
        if args.curve_allow:
            from .auth import curve_key_directory

            if not Path(args.curve_allow).is_dir():
                raise CliError(f"--curve-allow: {args.curve_allow} is not a directory", EXIT_USAGE)
            opts["authenticator"] = curve_key_directory(args.curve_allow)
    elif getattr(args, "curve_serverkey", None):
        server_key = args.curve_serverkey
        if not _Z85_KEY.match(server_key):
            server_key, _ = load_certificate(server_key, secret_wanted=False)
        if args.curve_key:
            public, secret = load_certificate(args.curve_key, secret_wanted=True)
        else:
            public, secret = _keypair()
        opts.update(curve_serverkey=server_key, curve_publickey=public, curve_secretkey=secret)
    elif getattr(args, "curve_key", None):
        raise CliError("--curve-key needs --curve-serverkey", EXIT_USAGE)
    if getattr(args, "curve_allow", None) and not getattr(args, "curve_server", None):
        raise CliError("--curve-allow needs --curve-server", EXIT_USAGE)
    return opts


def _unescape(sep: str) -> bytes:
    return sep.replace("\\t", "\t").replace("\\n", "\n").encode()


# ---------------------------------------------------------------------------- message I/O


class MessageReader:
    """Messages from a file descriptor (a tty, a pipe or a file).

    Reads happen in a worker thread with ``os.read`` (no buffered object whose
    lock a blocked thread could hold at exit), so a cancelled read is simply
    abandoned.
    """

    def __init__(
        self, fd: int, *, binary: bool, delimiter: bytes | None, hex_first: bool = False
    ) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._eof = False
        self.binary = binary
        self.delimiter = delimiter
        self.hex_first = hex_first

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await trio.to_thread.run_sync(os.read, self._fd, 65536, abandon_on_cancel=True)
        except OSError as exc:
            raise CliError(f"cannot read stdin: {exc.strerror or exc}") from None
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def _exact(self, n: int, what: str, start: bool = False) -> bytes | None:
        while len(self._buf) < n:
            if not await self._fill():
                if start and not self._buf:
                    return None
                raise CliError(f"stdin ended in the middle of {what} (--binary input)")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _line(self) -> bytes | None:
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                return line
            start = len(self._buf)
            if not await self._fill():
                if not self._buf:
                    return None
                line = bytes(self._buf)
                self._buf.clear()
                return line

    async def read(self) -> list[bytes] | None:
        """The next message, or None at the end of the input."""
        if self.binary:
            head = await self._exact(4, "a message", start=True)
            if head is None:
                return None
            (count,) = struct.unpack(">I", head)
            if count == 0:
                raise CliError("a message has at least one frame (--binary input had a count of 0)")
            frames = []
            for _ in range(count):
                size_raw = await self._exact(4, "a frame length")
                assert size_raw is not None
                (size,) = struct.unpack(">I", size_raw)
                frame = await self._exact(size, "a frame")
                assert frame is not None
                frames.append(frame)
            return frames
        while True:
            line = await self._line()
            if line is None:
                return None
            if line.endswith(b"\r"):
                line = line[:-1]
            frames = line.split(self.delimiter) if self.delimiter else [line]
            if self.hex_first:
                try:
                    frames[0] = bytes.fromhex(frames[0].decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    _error(f"skipping a line whose routing id is not hex: {frames[0][:40]!r}")
                    continue
                if len(frames) < 2:
                    _error("skipping a line with a routing id and no message")
                    continue
            return frames


class MessageWriter:
    """Messages to a binary stream, as lines or length-prefixed frames; flushed each time."""

    def __init__(
        self, out: BinaryIO, *, binary: bool, delimiter: bytes | None, hex_first: bool = False
    ) -> None:
        self._out = out
        self.binary = binary
        self.delimiter = delimiter if delimiter is not None else b"\t"
        self.hex_first = hex_first

    def write(self, msg: Sequence[bytes]) -> None:
        if self.binary:
            parts = [struct.pack(">I", len(msg))]
            for frame in msg:
                parts.append(struct.pack(">I", len(frame)))
                parts.append(frame)
            self._out.write(b"".join(parts))
        else:
            frames = list(msg)
            if self.hex_first and frames:
                frames[0] = frames[0].hex().encode()
            self._out.write(self.delimiter.join(frames) + b"\n")
        self._out.flush()


def encode_binary(messages: Sequence[Sequence[bytes]]) -> bytes:
    """The ``--binary`` encoding of *messages* (for scripts and tests)."""
    parts = []
    for msg in messages:
        parts.append(struct.pack(">I", len(msg)))
        for frame in msg:
            parts.append(struct.pack(">I", len(frame)) + frame)
    return b"".join(parts)


def decode_binary(data: bytes) -> list[list[bytes]]:
    """Messages from their ``--binary`` encoding. Raises ValueError if *data* is truncated."""
    out: list[list[bytes]] = []
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError("truncated")
        (count,) = struct.unpack_from(">I", data, i)
        i += 4
        msg = []
        for _ in range(count):
            if i + 4 > len(data):
                raise ValueError("truncated")
            (size,) = struct.unpack_from(">I", data, i)
            i += 4
            if i + size > len(data):
                raise ValueError("truncated")
            msg.append(data[i : i + size])
            i += size
        out.append(msg)
    return out


# ---------------------------------------------------------------------------- the cat tools


def _cmd_cat(args: argparse.Namespace) -> int:
    name: str = args.socket_type
    endpoints = _resolve_endpoints(args.endpoints, args.bind, CAT_TYPES[name])
    options = _security_options(args)
    if name == "sub":
        options["subscribe"] = tuple(t.encode() for t in (args.topic or [""]))
    if getattr(args, "routing_id", None):
        options["routing_id"] = args.routing_id.encode()
    if args.linger is not None:
        options["linger"] = args.linger
    elif name == "req":
        options["linger"] = (
            0  # a REQ only leaves after its replies came: anything queued is a failure
        )
    delimiter = _unescape(args.delimiter) if args.delimiter is not None else None
    if delimiter == b"":
        raise CliError("an empty delimiter splits nothing, and would join frames invisibly", EXIT_USAGE)
    if name == "router" and delimiter is None and not args.binary:
        delimiter = b"\t"
    hex_first = name == "router" and not args.binary
    try:
        SocketOptions(**options)
    except (TypeError, ValueError) as exc:
        raise CliError(f"bad option: {exc}", EXIT_USAGE) from None
    reader = MessageReader(0, binary=args.binary, delimiter=delimiter, hex_first=hex_first)
    writer = MessageWriter(
        sys.stdout.buffer, binary=args.binary, delimiter=delimiter, hex_first=hex_first
    )

    kind = SocketType[name.upper()]
    if kind is SocketType.PUB and (args.peers or args.timeout):
        # to wait for the peers' subscriptions, not only their handshakes, the
        # tool publishes through an XPUB, which sees every subscription arrive
        kind = SocketType.XPUB
        options["xpub_verbose"] = True

    async def command(args: argparse.Namespace, run: _Run) -> None:
        async with (
            open_socket(kind, **options) as sock,
            sock.monitor() as events,
            trio.open_nursery() as nursery,
        ):
            status = _PeerStatus()
            nursery.start_soon(status.watch, events)
            if kind is SocketType.XPUB:
                nursery.start_soon(status.watch_subscriptions, sock)
            await _attach(sock, endpoints, args)
            await _ROLE_RUNNERS[name](sock, args, run, reader, writer, status)
            nursery.cancel_scope.cancel()

    return _run_trio(args, command)


class _PeerStatus:
    """What the monitor says about our peers, to explain a timeout."""

    def __init__(self) -> None:
        self.ever_connected = False
        self.last_problem = ""
        #: the peers that subscribed (to anything), by identity: two inproc
        #: peers may have equal PeerInfo
        self.subscribers: dict[int, PeerInfo] = {}
        self._subscribed = trio.Event()

    async def watch_subscriptions(self, sock: Socket) -> None:
        """Read an XPUB's subscription reports (for ever: unread, they would pile up)."""
        while True:
            report, peer = await sock.recv_multipart_with_peer()
            if peer is not None and report[0][:1] == b"\x01":
                self.subscribers[id(peer)] = peer
                self._subscribed.set()
                self._subscribed = trio.Event()

    def subscribed(self, sock: Socket) -> int:
        """The peers connected now that have subscribed (one that left, or
        reconnected, must subscribe again: its connection is a new peer)."""
        return sum(1 for peer in sock.peers() if id(peer) in self.subscribers)

    async def wait_subscribers(self, sock: Socket, count: int) -> None:
        while self.subscribed(sock) < count:
            await self._subscribed.wait()

    async def watch(self, events: trio.MemoryReceiveChannel[MonitorEvent]) -> None:
        async for event in events:
            if isinstance(event, HandshakeSucceeded):
                self.ever_connected = True
            elif isinstance(event, ConnectRetried):
                if event.reason != "handshake failed" or not self.last_problem:
                    self.last_problem = f"cannot connect to {event.endpoint}: {event.reason}"
            elif isinstance(event, HandshakeFailed):
                self.last_problem = f"handshake with {event.peer_address} failed: {event.reason}"

    def explain(self) -> str:
        if self.ever_connected:
            return ""
        return f" ({self.last_problem})" if self.last_problem else " (no peer connected)"


def _endpoints_text(args: argparse.Namespace) -> str:
    return ", ".join(_split_endpoint(e, True)[0] for e in args.endpoints)


async def _wait_for_peers(
    sock: Socket, args: argparse.Namespace, run: _Run, status: _PeerStatus
) -> None:
    peers: int = args.peers or (1 if args.timeout else 0)
    if not peers:
        return
    with trio.move_on_after(args.timeout or float("inf")) as scope:
        await sock.wait_peers(peers)
        if sock.socket_type is SocketType.XPUB:
            # (a pub: a subscription travels just after its handshake)
            await status.wait_subscribers(sock, peers)
    if scope.cancelled_caught:
        if sock.statistics().peers >= peers:
            run.fail(
                f"{status.subscribed(sock)} of {peers} peer(s) subscribed within "
                f"{args.timeout:g}s on {_endpoints_text(args)}"
            )
        run.fail(
            f"{sock.statistics().peers} of {peers} peer(s) connected within {args.timeout:g}s "
            f"on {_endpoints_text(args)}{status.explain()}"
        )


async def _send_stdin(sock: Socket, reader: MessageReader, count: int | None) -> int:
    sent = 0
    while count is None or sent < count:
        msg = await reader.read()
        if msg is None:
            break
        await sock.send_multipart(msg)
        sent += 1
    return sent


async def _recv_within(
    sock: Socket, args: argparse.Namespace, run: _Run, why: Callable[[], str]
) -> list[bytes]:
    """The next message, or end the run after ``--timeout`` with the message
    ``no <why()>`` (made only then: it may ask the peers' status)."""
    with trio.move_on_after(args.timeout or float("inf")):
        return await sock.recv_multipart()
    run.fail(f"no {why()}")


async def _receive(
    sock: Socket, args: argparse.Namespace, run: _Run, writer: MessageWriter, status: _PeerStatus
) -> None:
    received = 0
    while args.count is None or received < args.count:
        msg = await _recv_within(
            sock, args, run,
            lambda: f"message within {args.timeout:g}s on {_endpoints_text(args)}{status.explain()}",
        )
        writer.write(msg)
        received += 1


async def _run_sender(
    sock: Socket,
    args: argparse.Namespace,
    run: _Run,
    reader: MessageReader,
    writer: MessageWriter,
    status: _PeerStatus,
) -> None:
    await _wait_for_peers(sock, args, run, status)
    await _send_stdin(sock, reader, args.count)


async def _run_receiver(
    sock: Socket,
    args: argparse.Namespace,
    run: _Run,
    reader: MessageReader,
    writer: MessageWriter,
    status: _PeerStatus,
) -> None:
    await _receive(sock, args, run, writer, status)


async def _run_req(
    sock: Socket,
    args: argparse.Namespace,
    run: _Run,
    reader: MessageReader,
    writer: MessageWriter,
    status: _PeerStatus,
) -> None:
    done = 0
    while args.count is None or done < args.count:
        msg = await reader.read()
        if msg is None:
            return
        # a REQ with no peer waits to send: --timeout bounds that wait too
        with trio.move_on_after(args.timeout or float("inf")) as waited:
            await sock.send_multipart(msg)
        if waited.cancelled_caught:
            run.fail(f"no peer to send to within {args.timeout:g}s at {_endpoints_text(args)}{status.explain()}")
        reply = await _recv_within(
            sock, args, run,
            lambda: f"reply within {args.timeout:g}s from {_endpoints_text(args)}{status.explain()}",
        )
        writer.write(reply)
        done += 1


async def _run_rep(
    sock: Socket,
    args: argparse.Namespace,
    run: _Run,
    reader: MessageReader,
    writer: MessageWriter,
    status: _PeerStatus,
) -> None:
    done = 0
    while args.count is None or done < args.count:
        request = await _recv_within(
            sock, args, run, lambda: f"request within {args.timeout:g}s on {_endpoints_text(args)}"
        )
        writer.write(request)
        if args.echo:
            reply = request
        elif args.reply is not None:
            reply = [args.reply.encode()]
        else:
            answer = await reader.read()
            if answer is None:
                return  # no more answers: the requester gets none
            reply = answer
        await sock.send_multipart(reply)
        done += 1


async def _run_both(
    sock: Socket,
    args: argparse.Namespace,
    run: _Run,
    reader: MessageReader,
    writer: MessageWriter,
    status: _PeerStatus,
) -> None:
    """PAIR, DEALER, ROUTER: send stdin and print what arrives, at the same time.

    With --count N, ends once N messages have arrived and stdin is exhausted;
    without it, runs until interrupted (the end of stdin only ends sending).
    """
    sent_all = trio.Event()

    async def send() -> None:
        await _send_stdin(sock, reader, None)
        sent_all.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await _receive(sock, args, run, writer, status)
        await sent_all.wait()
        nursery.cancel_scope.cancel()


_Runner = Callable[
    [Socket, argparse.Namespace, _Run, MessageReader, MessageWriter, _PeerStatus], Awaitable[None]
]
_ROLE_RUNNERS: dict[str, _Runner] = {
    "pub": _run_sender,
    "push": _run_sender,
    "sub": _run_receiver,
    "pull": _run_receiver,
    "req": _run_req,
    "rep": _run_rep,
    "pair": _run_both,
    "dealer": _run_both,
    "router": _run_both,
}


# ---------------------------------------------------------------------------- keys


def _keypair() -> tuple[bytes, bytes]:
    try:
        from ._mechanisms._z85 import curve_keypair

        return curve_keypair()
    except ImportError:
        raise CliError("CURVE needs PyNaCl: pip install 'triomq[curve]'") from None


def certificate_text(public: bytes, secret: bytes | None) -> str:
    """A certificate in czmq's zcert format (readable by czmq and pyzmq's ``zmq.auth``)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    if secret is not None:
        banner = (
            f"#   ****  Generated on {stamp} by triomq  ****\n"
            "#   ZeroMQ CURVE **Secret** Certificate\n"
            "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
        )
    else:
        banner = (
            f"#   ****  Generated on {stamp} by triomq  ****\n"
            "#   ZeroMQ CURVE Public Certificate\n"
            "#   Exchange securely, or use a secure mechanism to verify the contents\n"
            "#   of this file after exchange.\n\n"
        )
    text = banner + "metadata\ncurve\n" + f'    public-key = "{public.decode()}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode()}"\n'
    return text


_ZPL_KEY = re.compile(r"""^\s*(public-key|secret-key)\s*=\s*["']?([^"'\s]*)["']?\s*$""")


def parse_certificate(text: str) -> tuple[bytes | None, bytes | None]:
    """``(public, secret)`` Z85 keys from certificate text; either may be None.

    Accepts czmq's zcert format (``public-key = "..."`` and ``secret-key = "..."``
    lines) and a bare Z85 key on the first line that is not a comment (returned
    as ``(key, None)``: the caller knows which kind it expects).
    """
    public = secret = None
    bare = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ZPL_KEY.match(stripped)
        if match:
            key = match.group(2).encode()
            if match.group(1) == "public-key":
                public = key
            else:
                secret = key
        elif bare is None and _Z85_KEY.match(stripped) and public is None and secret is None:
            bare = stripped.encode()
    if public is None and secret is None and bare is not None:
        return bare, None
    return public, secret


def load_certificate(path: str, *, secret_wanted: bool) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` from a certificate file. A file holding only a bare Z85
    key gives the secret key if *secret_wanted*, else the public key. Raises
    CliError if there is no usable key."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    public, secret = parse_certificate(text)
    if secret_wanted and secret is None and public is not None and "public-key" not in text:
        public, secret = None, public  # a bare key, in a file meant to hold a secret one
    for key in (public, secret):
        if key is not None and not _Z85_KEY.match(key.decode()):
            raise CliError(f"{path}: not a 40-character Z85 key: {key.decode()[:50]!r}")
    if secret is not None and public is None:
        from ._mechanisms._z85 import curve_public

        try:
            public = curve_public(secret)
        except ImportError:
            raise CliError("CURVE needs PyNaCl: pip install 'triomq[curve]'") from None
    if public is None:
        raise CliError(f"{path}: no CURVE key found")
    if secret_wanted and secret is None:
        raise CliError(f"{path}: no secret key (it is a public certificate)")
    return public, secret


def _write_new(path: Path, text: str, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CliError(f"{path} exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, mode)
        f.write(text)


def _cmd_keygen(args: argparse.Namespace) -> int:
    public, secret = _keypair()
    if args.out is None:
        sys.stdout.write(certificate_text(public, secret))
        return EXIT_OK
    public_path = Path(f"{args.out}.key")
    secret_path = Path(f"{args.out}.key_secret")
    if not args.force:
        for path in (secret_path, public_path):
            if path.exists():
                raise CliError(f"{path} exists (use --force to overwrite it)")
    _write_new(secret_path, certificate_text(public, secret), 0o600, args.force)
    _write_new(public_path, certificate_text(public, None), 0o644, args.force)
    print(f"wrote {public_path} (public key {public.decode()})")
    print(f"  and {secret_path} (secret: keep it private)")
    return EXIT_OK


# ---------------------------------------------------------------------------- proxy


def _cmd_proxy(args: argparse.Namespace) -> int:
    front_type = SocketType[args.frontend_type.upper()]
    back_type = SocketType[args.backend_type.upper()]
    (front_ep,) = _resolve_endpoints([args.frontend], None, True)
    (back_ep,) = _resolve_endpoints([args.backend], None, True)
    capture_ep = _resolve_endpoints([args.capture], None, True) if args.capture else []

    async def command(args: argparse.Namespace, run: _Run) -> None:
        control = ProxyControl()
        async with (
            open_socket(front_type, linger=0) as frontend,
            open_socket(back_type, linger=0) as backend,
            open_socket(SocketType.PUB, linger=0) as capture,
        ):
            if not (
                (frontend.pattern.receives and backend.pattern.sends)
                or (backend.pattern.receives and frontend.pattern.sends)
            ):
                raise CliError(
                    f"nothing to forward between {front_type.name} and {back_type.name}", EXIT_USAGE
                )
            for sock in (frontend, backend):
                if sock.socket_type is SocketType.SUB:
                    await sock.subscribe(b"")  # (a proxy forwards everything)
            await _attach(frontend, [front_ep], args)
            await _attach(backend, [back_ep], args)
            await _attach(capture, capture_ep, args)
            _say(args, f"proxy {front_type.name} <-> {back_type.name} running (Ctrl-C to stop)")
            try:
                await proxy(frontend, backend, capture if capture_ep else None, control=control)
            finally:
                _say(args, f"{control.forwarded} messages forwarded")

    return _run_trio(args, command)


# ---------------------------------------------------------------------------- bench


def _load_bench(path: Path) -> Any:
    if not path.is_file():
        raise CliError(
            "the benchmarks ship with the source checkout (benchmarks/bench.py), "
            f"and there is none at {path}: clone the repository and run 'triomq bench' "
            "from its editable install, or 'python benchmarks/bench.py'"
        )
    spec = importlib.util.spec_from_file_location("triomq_bench", path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Progress:
    """A one-line progress display on stderr (only on a terminal), cleared before each table row."""

    def __init__(self, enabled: bool, runs: int) -> None:
        self.enabled = enabled
        self.runs = runs
        self.row = 1
        self.lib = ""
        self.run = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> Self:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.clear()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self.draw()

    def draw(self) -> None:
        if not self.enabled or not self.lib:
            return
        elapsed = time.monotonic() - self.started
        with self._lock:
            sys.stderr.write(
                f"\r\x1b[K  row {self.row}: {self.lib}, run {self.run}/{self.runs}"
                f"  ({elapsed:4.0f} s)"
            )
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            with self._lock:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()


def _cmd_bench(args: argparse.Namespace) -> int:
    module = _load_bench(BENCH_PATH)
    unknown = [group for group in args.groups if group not in BENCH_GROUPS]
    if unknown:
        # (checked here: argparse's choices refuse an empty nargs="*" list in 3.11)
        raise CliError(f"no benchmark group {unknown[0]!r} (groups: {', '.join(BENCH_GROUPS)})", EXIT_USAGE)
    argv = list(args.groups)
    if args.quick:
        argv.append("--quick")
    if args.runs:
        argv += ["--runs", str(args.runs)]
    if args.markdown:
        argv += ["--markdown", args.markdown]
    runs = 1 if args.quick else (args.runs or 3)
    if not module.have_pyzmq():
        print(
            "pyzmq is not installed: measuring triomq only (pip install pyzmq to compare)",
            flush=True,
        )
    progress = _Progress(sys.stderr.isatty(), runs)
    median_of = module.median_of
    table_add = module.Table.add

    def tracked_median(n: int, fn: Callable[[], float]) -> float:
        progress.lib = "triomq" if progress.lib != "triomq" else "pyzmq"
        progress.run = 0

        def one() -> float:
            progress.run += 1
            progress.draw()
            return fn()

        result: float = median_of(n, one)
        return result

    def tracked_add(table: Any, *row: Any) -> None:
        progress.clear()
        table_add(table, *row)
        progress.row += 1
        progress.lib = ""

    module.median_of = tracked_median
    module.Table.add = tracked_add
    with progress:
        code: int = module.main(argv)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

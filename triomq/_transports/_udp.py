"""UDP sockets for ``epgm://``: multicast senders and receivers, and a fault seam.

PGM over UDP (OpenPGM's encapsulation, which libzmq's ``epgm://`` uses) needs
three kinds of socket, all on the endpoint's port:

* a *sender* socket bound to ``interface:port``: it multicasts to the group
  (``IP_MULTICAST_IF`` = the interface, TTL = ``multicast_hops``, loopback =
  ``multicast_loop``) and receives the NAKs and SPMRs that receivers unicast
  to the address the sender advertises in its SPMs;
* a *receiver* socket bound to ``group:port`` (``SO_REUSEADDR``, so that any
  number of receivers on one host share the port) that joined the group on
  the interface (``IP_ADD_MEMBERSHIP``);
* a receiver's *unicast* socket, on an ephemeral port, that sends its NAKs.

They are stdlib sockets in non-blocking mode driven with
``trio.lowlevel.wait_readable`` / ``wait_writable``, so that one wake-up can
read a whole burst of datagrams (``trio.socket``'s ``recvfrom`` costs a
scheduling round per datagram).

:class:`DatagramSocket` wraps one of them.  It may route what it sends (and
what it receives) through a :class:`triomq._pgm.FaultInjector`, which drops,
duplicates, delays and reorders datagrams: the seam the tests use to run PGM
over a lossy network on one host.

No ZeroMQ and no PGM knowledge here beyond the address rules.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import socket
import struct
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import trio

from .._errors import EndpointError
from .._pgm import DelayLine, FaultInjector

__all__ = [
    "DatagramSocket",
    "open_multicast_receiver",
    "open_multicast_sender",
    "open_unicast",
    "resolve_interface",
    "validate_group",
]

logger = logging.getLogger("triomq")

Address = tuple[str, int]

#: socket buffer sizes we ask for (the kernel caps them at net.core.[rw]mem_max)
RCVBUF = 4 * 1024 * 1024
SNDBUF = 1024 * 1024
#: Linux's IP_MULTICAST_ALL (not in every Python's socket module)
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_SIOCGIFADDR = 0x8915
#: errors a send of one datagram may meet that only lose that datagram
_TRANSIENT = {
    errno.ECONNREFUSED,  # an ICMP port unreachable from an earlier datagram
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EPERM,  # a firewall
    errno.ENOBUFS,
    errno.EMSGSIZE,
}


# --------------------------------------------------------------------------- addresses


def resolve_interface(name: str) -> str:
    """The IPv4 address of an interface given by address (``127.0.0.1``) or name (``lo``).

    Raises:
        EndpointError: not an IPv4 address nor an interface with one.
    """
    try:
        addr = ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        if addr.is_unspecified or addr.is_multicast:
            raise EndpointError(f"epgm needs an interface, not {name!r}")
        return str(addr)
    if sys.platform.startswith("linux"):
        import fcntl

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            packed = struct.pack("256s", name.encode()[:15])
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, packed)
        except (OSError, UnicodeError):
            raise EndpointError(f"no IPv4 interface named {name!r}") from None
        finally:
            s.close()
        return socket.inet_ntoa(raw[20:24])
    raise EndpointError(f"give the interface as its IPv4 address, not {name!r}")


def validate_group(group: str, port: int) -> str:
    """The group address, checked: an IPv4 multicast address, and a real port."""
    try:
        addr = ipaddress.IPv4Address(group)
    except ValueError:
        raise EndpointError(
            f"epgm group must be an IPv4 multicast address, not {group!r}"
        ) from None
    if not addr.is_multicast:
        raise EndpointError(f"{group} is not a multicast address (224.0.0.0/4)")
    if not 0 < port <= 0xFFFF:
        raise EndpointError("epgm needs a port")
    return str(addr)


def _os_error(what: str, exc: OSError) -> EndpointError:
    return EndpointError(f"{what}: {exc.strerror or exc}")


def _set_buffer(sock: socket.socket, option: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError:  # pragma: no cover - a platform refusing a buffer size
        pass


def open_multicast_sender(
    interface: str, port: int, *, hops: int, loop: bool, sndbuf: int = SNDBUF
) -> socket.socket:
    """A socket on ``interface:port`` that multicasts and receives NAKs.

    Raises:
        EndpointError: the address is taken (another sender on this port) or
            the interface refuses multicast.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_buffer(sock, socket.SO_SNDBUF, sndbuf)
        _set_buffer(sock, socket.SO_RCVBUF, RCVBUF // 4)
        try:
            sock.bind((interface, port))
        except OSError as exc:
            raise _os_error(f"cannot bind the PGM source to {interface}:{port}", exc) from None
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, min(hops, 255))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
        except OSError as exc:
            raise _os_error(f"{interface} cannot send multicast", exc) from None
    except BaseException:
        sock.close()
        raise
    return sock


def open_multicast_receiver(
    interface: str, group: str, port: int, *, rcvbuf: int = RCVBUF
) -> socket.socket:
    """A socket on ``group:port`` that joined ``group`` on ``interface``.

    Raises:
        EndpointError: the port cannot be shared or the group cannot be joined.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _set_buffer(sock, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.bind((group, port))
        except OSError:
            # Some systems (Windows) cannot bind a multicast address.
            try:
                sock.bind(("", port))
            except OSError as exc:
                raise _os_error(f"cannot bind to port {port} for {group}", exc) from None
        if sys.platform.startswith("linux"):
            # Only this group, even if another socket of the host joined others.
            try:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            except OSError:  # pragma: no cover - old kernels
                pass
        mreq = socket.inet_aton(group) + socket.inet_aton(interface)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            raise _os_error(f"cannot join {group} on {interface}", exc) from None
    except BaseException:
        sock.close()
        raise
    return sock


def open_unicast(interface: str, *, sndbuf: int = SNDBUF // 4) -> socket.socket:
    """An ephemeral-port socket on ``interface`` (a receiver sends its NAKs from it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_buffer(sock, socket.SO_SNDBUF, sndbuf)
        try:
            sock.bind((interface, 0))
        except OSError as exc:
            raise _os_error(f"cannot bind to {interface}", exc) from None
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------- datagram socket


class DatagramSocket:
    """A non-blocking UDP socket for trio, with optional fault injection.

    ``faults_out`` (a :class:`~triomq._pgm.FaultInjector`) sees every datagram
    handed to :meth:`send`; ``faults_in`` every datagram read from the socket.
    What they delay is held here: incoming datagrams come out of
    :meth:`receive_nowait` when due (and :meth:`wait_readable` wakes for them);
    outgoing ones are sent by :meth:`run_delayed`, a task the owner starts
    (only needed when ``faults_out`` is set).

    Sending never fails: UDP may lose a datagram anyway, so a datagram that
    meets an error is counted in ``send_errors`` and dropped.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        faults_out: FaultInjector[Any] | None = None,
        faults_in: FaultInjector[Any] | None = None,
    ) -> None:
        self.sock = sock
        self.faults_out = faults_out
        self.faults_in = faults_in
        self._out_line: DelayLine[tuple[bytes, Address]] = DelayLine()
        self._in_line: DelayLine[tuple[bytes, Address]] = DelayLine()
        self._delayed_lot = trio.lowlevel.ParkingLot()
        self._write_lock = trio.Lock()
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.bytes_received = 0
        self.send_errors = 0
        self.closed = False

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    # ------------------------------------------------------------------ sending

    async def send(self, datagrams: Sequence[bytes], address: Address) -> None:
        """Send each datagram to ``address`` (through ``faults_out``, if set).

        Waits only while the socket's send buffer is full. Not a checkpoint
        otherwise: callers checkpoint in their own loops.
        """
        if not datagrams:
            return
        if self.faults_out is not None:
            timed = self.faults_out.apply([(d, address) for d in datagrams], trio.current_time())
            now = trio.current_time()
            due: list[bytes] = []
            for deliver_at, item in timed:
                if deliver_at <= now:
                    due.append(item[0])
                else:
                    self._out_line.push(deliver_at, item)
            if len(self._out_line):
                self._delayed_lot.unpark_all()
            datagrams = due
        await self._send_now(datagrams, address)

    async def _send_now(self, datagrams: Sequence[bytes], address: Address) -> None:
        sendto = self.sock.sendto
        i = 0
        n = len(datagrams)
        while i < n:
            data = datagrams[i]
            try:
                sendto(data, address)
            except BlockingIOError:
                async with self._write_lock:
                    await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError as exc:
                if exc.errno not in _TRANSIENT:
                    raise
                self.send_errors += 1
                logger.debug("datagram to %s:%d dropped: %s", *address, exc)
            else:
                self.datagrams_sent += 1
                self.bytes_sent += len(data)
            i += 1

    async def run_delayed(self) -> None:
        """Send the datagrams ``faults_out`` delayed, when they are due (a task; runs until cancelled)."""
        line = self._out_line
        while True:
            with trio.move_on_at(line.next_deadline()):
                await self._delayed_lot.park()
            due = line.pop_due(trio.current_time())
            if not due:
                continue
            by_address: dict[Address, list[bytes]] = defaultdict(list)
            for data, address in due:
                by_address[address].append(data)
            for address, datagrams in by_address.items():
                await self._send_now(datagrams, address)

    # ------------------------------------------------------------------ receiving

    def receive_nowait(
        self, max_datagrams: int, max_size: int = 65536
    ) -> list[tuple[bytes, Address]]:
        """Up to ``max_datagrams`` datagrams that are here now, as ``(data, (host, port))``."""
        out: list[tuple[bytes, Address]] = []
        recvfrom = self.sock.recvfrom
        raw: list[tuple[bytes, Address]] = []
        while len(raw) < max_datagrams:
            try:
                data, address = recvfrom(max_size)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _TRANSIENT:  # ECONNREFUSED after an ICMP error
                    continue
                raise
            raw.append((data, address))
            self.datagrams_received += 1
            self.bytes_received += len(data)
        faults = self.faults_in
        if faults is None:
            return raw
        line = self._in_line
        if raw:
            line.extend(faults.apply(raw, trio.current_time()))
        if len(line):
            out = line.pop_due(trio.current_time())
        return out

    def next_delayed(self) -> float:
        """When a datagram held by ``faults_in`` becomes due (``inf``: none held)."""
        return self._in_line.next_deadline() if self.faults_in is not None else math.inf

    async def wait_readable(self, deadline: float = math.inf) -> None:
        """Wait until a datagram may be read, or ``deadline`` (a checkpoint)."""
        deadline = min(deadline, self.next_delayed())
        if deadline <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_readable(self.sock)

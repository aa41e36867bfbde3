"""Endpoint strings: ``tcp://host:port``, ``tls://host:port``, ``ipc://path``,
``inproc://name`` and ``epgm://interface;group:port``, parsed into frozen records."""

from __future__ import annotations

import attrs

from ._errors import EndpointError

SCHEMES = ("tcp", "tls", "ipc", "inproc", "epgm", "pgm")


@attrs.frozen
class Endpoint:
    """A parsed endpoint.

    Attributes:
        scheme: "tcp", "tls", "ipc", "inproc", "epgm" (``pgm`` is read as ``epgm``).
        host: for tcp/tls, the host (``*`` for every interface); for epgm, the interface.
        port: for tcp/tls/epgm.
        path: for ipc (a leading ``@`` means Linux's abstract namespace) and inproc (the name).
        group: for epgm, the multicast group address.
        source: for tcp and tls, libzmq's ``tcp://source_host:port;host:port`` local
            address, as ``host:port`` (or None): the connection is made from it.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""
    group: str = ""
    source: str | None = None

    def __str__(self) -> str:
        if self.scheme in ("ipc", "inproc"):
            return f"{self.scheme}://{self.path}"
        if self.scheme == "epgm":
            return f"epgm://{self.host};{self.group}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        source = f"{self.source};" if self.source is not None else ""
        return f"{self.scheme}://{source}{host}:{self.port}"


def _split_host_port(text: str, endpoint: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise EndpointError(f"bad IPv6 address in {endpoint!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise EndpointError(f"missing port in {endpoint!r}")
    if not host:
        raise EndpointError(f"missing host in {endpoint!r}")
    if port_text == "*":
        port = 0
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise EndpointError(f"bad port {port_text!r} in {endpoint!r}") from None
        if not 0 <= port <= 65535:
            raise EndpointError(f"port out of range in {endpoint!r}")
    return host, port


def parse_endpoint(endpoint: str) -> Endpoint:
    """Parse an endpoint string.

    Raises:
        EndpointError: unknown scheme or malformed address.
    """
    if not isinstance(endpoint, str):
        raise EndpointError(f"endpoint must be a str, not {type(endpoint).__name__}")
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise EndpointError(f"endpoint {endpoint!r} has no scheme (like tcp://)")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise EndpointError(f"unknown transport {scheme!r} in {endpoint!r}")
    if not rest:
        raise EndpointError(f"empty address in {endpoint!r}")
    if scheme in ("ipc", "inproc"):
        return Endpoint(scheme=scheme, path=rest)
    if scheme in ("epgm", "pgm"):
        iface, sep, group_port = rest.partition(";")
        if not sep or not iface:
            raise EndpointError(f"epgm endpoint must be interface;group:port, got {endpoint!r}")
        group, port = _split_host_port(group_port, endpoint)
        return Endpoint(scheme="epgm", host=iface, port=port, group=group)
    source = None
    if ";" in rest:
        source, _, rest = rest.partition(";")
        # libzmq wants host:port here too (port 0 or * for any)
        source_host, source_port = _split_host_port(source, endpoint)
        source = _source_text(source_host, source_port)
    host, port = _split_host_port(rest, endpoint)
    return Endpoint(scheme=scheme, host=host, port=port, source=source)


def _source_text(host: str, port: int) -> str:
    """The ``source`` of an endpoint, normalised (``*`` becomes 0)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_source(source: str) -> tuple[str, int]:
    """An endpoint's ``source`` as (host, port)."""
    return _split_host_port(source, source)

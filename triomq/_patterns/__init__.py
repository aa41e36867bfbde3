"""Socket-type strategies: routing, load balancing, fair queueing, filtering.

Pure and synchronous: no trio, no frames on the wire. A pattern sees pipes only
through the small :class:`~triomq._patterns._base.PipeLike` protocol.
"""

from __future__ import annotations

from .._options import SocketOptions
from .._socket_type import SocketType
from ._base import Pattern
from ._simple import Pair, Pull, Push

_PATTERNS: dict[SocketType, type[Pattern]] = {
    SocketType.PAIR: Pair,
    SocketType.PUSH: Push,
    SocketType.PULL: Pull,
}


def make_pattern(socket_type: SocketType, options: SocketOptions) -> Pattern:
    """The strategy object for *socket_type*."""
    try:
        cls = _PATTERNS[socket_type]
    except KeyError:
        raise NotImplementedError(f"{socket_type.name} sockets are not implemented yet") from None
    return cls(options)

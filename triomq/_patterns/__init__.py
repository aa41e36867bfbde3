"""Socket-type strategies: routing, load balancing, fair queueing, filtering.

Pure and synchronous: no trio, no frames on the wire. A pattern sees pipes only
through the small :class:`~triomq._patterns._base.PipeLike` protocol.
"""

from __future__ import annotations

from .._options import SocketOptions
from .._socket_type import SocketType
from ._base import Pattern
from ._pubsub import Pub, Sub, XPub, XSub
from ._reqrep import Dealer, Rep, Req, Router
from ._simple import Pair, Pull, Push

_PATTERNS: dict[SocketType, type[Pattern]] = {
    SocketType.PAIR: Pair,
    SocketType.PUSH: Push,
    SocketType.PULL: Pull,
    SocketType.REQ: Req,
    SocketType.REP: Rep,
    SocketType.DEALER: Dealer,
    SocketType.ROUTER: Router,
    SocketType.PUB: Pub,
    SocketType.SUB: Sub,
    SocketType.XPUB: XPub,
    SocketType.XSUB: XSub,
}


def make_pattern(socket_type: SocketType, options: SocketOptions) -> Pattern:
    """The strategy object for *socket_type*."""
    return _PATTERNS[socket_type](options)

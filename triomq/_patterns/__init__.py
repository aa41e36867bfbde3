"""Socket-type strategies: routing, load balancing, fair queueing, filtering.

Pure and synchronous: no trio, no frames on the wire. A pattern sees pipes only
through the small :class:`~triomq._patterns._base.PipeLike` protocol.
"""

from __future__ import annotations

from .._options import SocketOptions
from .._socket_type import SocketType
from ._base import Pattern
from ._pubsub import InvertedSub, NoDropPub, NoDropXPub, Pub, Sub, XPub, XSub
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
    """The strategy object for *socket_type* (its options checked for it:
    ``_options.check_options_for_type``)."""
    # (variants, so that the common case pays for no option check per message)
    if options.xpub_nodrop and socket_type in (SocketType.PUB, SocketType.XPUB):
        return NoDropXPub(options) if socket_type is SocketType.XPUB else NoDropPub(options)
    if options.invert_matching and socket_type is SocketType.SUB:
        return InvertedSub(options)
    return _PATTERNS[socket_type](options)

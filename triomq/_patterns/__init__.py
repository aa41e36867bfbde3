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

_PUBLISHERS = (SocketType.PUB, SocketType.XPUB)
_PUBSUB = (SocketType.PUB, SocketType.XPUB, SocketType.SUB, SocketType.XSUB)


def check_pattern_options(socket_type: SocketType, options: SocketOptions) -> None:
    """Raise ValueError for a pub-sub option set on a socket type it means
    nothing to: surely a mistake. (libzmq refuses ZMQ_XPUB_NODROP on any
    socket but PUB and XPUB; it takes ZMQ_INVERT_MATCHING on any socket, and
    ignores it where it does not apply.)"""
    if options.xpub_nodrop and socket_type not in _PUBLISHERS:
        raise ValueError(f"xpub_nodrop applies to PUB and XPUB sockets, not {socket_type.name}")
    if options.invert_matching and socket_type not in _PUBSUB:
        raise ValueError(
            f"invert_matching applies to PUB, XPUB, SUB and XSUB sockets, not {socket_type.name}"
        )


def make_pattern(socket_type: SocketType, options: SocketOptions) -> Pattern:
    """The strategy object for *socket_type*.

    Raises:
        ValueError: an option that does not apply to *socket_type* (see
            :func:`check_pattern_options`).
    """
    check_pattern_options(socket_type, options)
    # (variants, so that the common case pays for no option check per message)
    if options.xpub_nodrop:
        return NoDropXPub(options) if socket_type is SocketType.XPUB else NoDropPub(options)
    if options.invert_matching and socket_type is SocketType.SUB:
        return InvertedSub(options)
    return _PATTERNS[socket_type](options)

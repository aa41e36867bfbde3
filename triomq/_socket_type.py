"""Socket types, their wire names, and which pairs may talk to each other."""

from __future__ import annotations

import enum


class SocketType(enum.Enum):
    """The ZeroMQ socket types. The value is the name sent in READY's Socket-Type."""

    PAIR = b"PAIR"
    PUB = b"PUB"
    SUB = b"SUB"
    REQ = b"REQ"
    REP = b"REP"
    DEALER = b"DEALER"
    ROUTER = b"ROUTER"
    PULL = b"PULL"
    PUSH = b"PUSH"
    XPUB = b"XPUB"
    XSUB = b"XSUB"

    @classmethod
    def from_wire(cls, name: bytes) -> SocketType | None:
        """The type whose wire name is *name*, or None for an unknown name."""
        return _BY_WIRE.get(bytes(name).upper())

    def compatible_with(self, other: SocketType) -> bool:
        """True if a socket of this type may talk to one of type *other* (RFC 23/37)."""
        return other in _COMPATIBLE[self]


_BY_WIRE = {t.value: t for t in SocketType}

_S = SocketType
_COMPATIBLE: dict[SocketType, frozenset[SocketType]] = {
    _S.PAIR: frozenset({_S.PAIR}),
    _S.PUB: frozenset({_S.SUB, _S.XSUB}),
    _S.XPUB: frozenset({_S.SUB, _S.XSUB}),
    _S.SUB: frozenset({_S.PUB, _S.XPUB}),
    _S.XSUB: frozenset({_S.PUB, _S.XPUB}),
    _S.REQ: frozenset({_S.REP, _S.ROUTER}),
    _S.REP: frozenset({_S.REQ, _S.DEALER}),
    _S.DEALER: frozenset({_S.REP, _S.DEALER, _S.ROUTER}),
    _S.ROUTER: frozenset({_S.REQ, _S.DEALER, _S.ROUTER}),
    _S.PUSH: frozenset({_S.PULL}),
    _S.PULL: frozenset({_S.PUSH}),
}

"""Which security mechanism a socket's options ask for, checked with clear errors.

libzmq's rules: ``curve_server=True`` makes a CURVE server, ``curve_serverkey``
a CURVE client; ``plain_server=True`` a PLAIN server, ``plain_username`` (or
``plain_password``) a PLAIN client; otherwise NULL. CURVE keys without a CURVE
role are refused (libzmq would speak CURVE; NULL would let anyone in, in
clear). Keys are 32 raw bytes or 40 characters of Z85 (bytes or str).
Usernames and passwords are bytes or str (UTF-8), at most 255 bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._zmtp._mechanism import Mechanism
from ._null import NullMechanism
from ._z85 import normalize_key

if TYPE_CHECKING:
    from .._options import SocketOptions

__all__ = ["check_security_options", "make_mechanism"]


def check_security_options(options: SocketOptions) -> None:
    """Raise ValueError (or TypeError) if the security options do not make sense.

    Cheap for NULL and PLAIN; for CURVE it decodes the keys and checks that the
    public key belongs to the secret key.
    """
    make_mechanism(options)


def make_mechanism(options: SocketOptions, *, accepted: bool = True) -> Mechanism:
    """A fresh mechanism for one connection, as the options say.

    *accepted* says which side of the connection this is: NULL with an
    authenticator asks it at a different time on each (see NullMechanism).

    Raises:
        ValueError: conflicting options, a missing or malformed key, a public key
            that does not belong to the secret key, a credential over 255 bytes.
        TypeError: an ``authenticator`` that is not callable.
    """
    authenticator = options.authenticator
    if authenticator is not None and not callable(authenticator):
        raise TypeError(
            f"authenticator must be an async callable, not {type(authenticator).__name__}"
        )
    authenticate = authenticator is not None
    curve = options.curve_server or options.curve_serverkey is not None
    plain = (
        options.plain_server
        or options.plain_username is not None
        or options.plain_password is not None
    )
    if curve and plain:
        raise ValueError("both CURVE and PLAIN options are set; a socket uses one mechanism")
    if not curve and (options.curve_secretkey is not None or options.curve_publickey is not None):
        # libzmq makes any socket given a CURVE key speak CURVE; quietly speaking
        # NULL instead would accept anyone in clear text: fail closed
        raise ValueError(
            "CURVE keys are set but no CURVE role: set curve_server=True for a server, "
            "or curve_serverkey (the server's public key) for a client"
        )
    if curve:
        return _curve(options, authenticate)
    if plain:
        from ._plain import PlainMechanism

        return PlainMechanism(
            as_server=options.plain_server,
            # a PLAIN server always asks; without an authenticator the answer is no
            authenticate=True,
            username=_credential("plain_username", options.plain_username),
            password=_credential("plain_password", options.plain_password),
            libzmq_error=True,
        )
    return NullMechanism(
        as_server=authenticate, authenticate=authenticate, ask_at_once=not accepted
    )


def _curve(options: SocketOptions, authenticate: bool) -> Mechanism:
    if options.curve_server and options.curve_serverkey is not None:
        raise ValueError(
            "curve_server=True and curve_serverkey are exclusive: "
            "a server has no server key, a client sets curve_serverkey"
        )
    if options.curve_secretkey is None:
        role = "server" if options.curve_server else "client"
        raise ValueError(
            f"a CURVE {role} needs curve_secretkey (make a key pair with triomq.curve_keypair())"
        )
    from ._curve import CurveMechanism
    from ._z85 import curve_public

    secret = _key("curve_secretkey", options.curve_secretkey)
    public = normalize_key(curve_public(secret))
    if (
        options.curve_publickey is not None
        and _key("curve_publickey", options.curve_publickey) != public
    ):
        raise ValueError("curve_publickey does not belong to curve_secretkey")
    server_key = None
    if not options.curve_server:
        server_key = _key("curve_serverkey", options.curve_serverkey)
    return CurveMechanism(
        as_server=options.curve_server,
        authenticate=authenticate,
        public_key=public,
        secret_key=secret,
        server_key=server_key,
    )


def _key(name: str, value: object) -> bytes:
    try:
        return normalize_key(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _credential(name: str, value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise ValueError(f"{name} is at most 255 bytes, got {len(raw)}")
    return raw

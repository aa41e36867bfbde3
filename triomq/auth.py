"""Ready-made authenticators, and CURVE key files.

A socket's ``authenticator`` option is a callable (async or not) that gets a
:class:`AuthRequest` once per handshake and answers: falsy denies (:class:`Deny`
carries a reason for the monitor's ``HandshakeFailed`` event), ``True`` allows,
and a ``str`` allows and becomes the peer's user id. The policies here are such
callables; combine them with :func:`all_of` and :func:`any_of`::

    from triomq import auth

    policy = auth.all_of(
        auth.allow_addresses("127.0.0.1", "10.0.0.0/8"),
        auth.curve_key_directory("/etc/myservice/clients"),
    )
    async with triomq.open_socket(triomq.REP, curve_server=True, curve_secretkey=secret,
                                  authenticator=policy) as rep:
        ...

As in libzmq 4.3: a PLAIN server with no authenticator refuses every client; a
CURVE server with no authenticator accepts any client that holds its public key.

Key files
---------
The format of czmq's zcert and pyzmq's ``zmq.auth`` (each side reads the
other's files). ``NAME.key`` holds the public key and may be handed around;
``NAME.key_secret`` holds both keys and stays private::

    #   ZeroMQ CURVE Public Certificate
    metadata
    curve
        public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

Readers take the ``public-key = "..."`` and ``secret-key = "..."`` lines (Z85, 40
characters, quotes optional) wherever they are, skip ``#`` comments, and also
accept a file whose only content is the Z85 public key on a line.
:func:`create_certificates` writes a pair; :func:`curve_key_directory` allows the
public keys of every ``*.key`` file in a directory, with the file's name (``alice``
for ``alice.key``) as the user id.
"""

from __future__ import annotations

import datetime
import hmac
import inspect
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import trio

from ._auth import AuthRequest, Deny
from ._mechanisms._z85 import curve_keypair, normalize_key, z85_encode

__all__ = [
    "AuthRequest",
    "Authenticator",
    "Deny",
    "all_of",
    "allow_addresses",
    "any_of",
    "create_certificates",
    "curve_key_directory",
    "curve_keys",
    "deny_addresses",
    "load_certificate",
    "load_certificates",
    "passwords",
]

logger = logging.getLogger("triomq")

#: what the ``authenticator`` option takes
Authenticator = Callable[[AuthRequest], Awaitable[Any]]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


async def _ask(policy: Callable[[AuthRequest], Any], request: AuthRequest) -> Any:
    answer = policy(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


def _reason(answer: Any) -> str:
    return answer.reason if isinstance(answer, Deny) else "denied"


# ---------------------------------------------------------------- addresses


def _networks(addresses: Iterable[str]) -> list[_Network]:
    nets = []
    for text in addresses:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
    return nets


def _matches(address: str, networks: list[_Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c in net for c in candidates for net in networks if c.version == net.version)


def allow_addresses(*addresses: str) -> Authenticator:
    """Allow peers whose IP address is one of *addresses* (``"10.1.2.3"``, ``"10.0.0.0/8"``,
    ``"::1"``); deny the rest, including ipc peers, which have no address.

    Raises:
        ValueError: something in *addresses* is not an IP address or network.
    """
    networks = _networks(addresses)

    async def allow(request: AuthRequest) -> bool | Deny:
        await trio.lowlevel.checkpoint()
        if not request.address:
            return Deny("address not allowed: the peer has no IP address")
        if _matches(request.address, networks):
            return True
        return Deny(f"address not allowed: {request.address}")

    return allow


def deny_addresses(*addresses: str) -> Authenticator:
    """Deny peers whose IP address is one of *addresses*; allow the rest.

    Raises:
        ValueError: something in *addresses* is not an IP address or network.
    """
    networks = _networks(addresses)

    async def deny(request: AuthRequest) -> bool | Deny:
        await trio.lowlevel.checkpoint()
        if request.address and _matches(request.address, networks):
            return Deny(f"address denied: {request.address}")
        return True

    return deny


# ---------------------------------------------------------------- PLAIN


def _raw(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def passwords(table: Mapping[str, str] | Mapping[bytes, bytes]) -> Authenticator:
    """PLAIN: allow a username whose password matches *table*; the username is the user id.

    The table is copied: later changes to the mapping are not seen.
    """
    users = {_raw(name): _raw(password) for name, password in table.items()}

    async def check(request: AuthRequest) -> str | Deny:
        await trio.lowlevel.checkpoint()
        if request.mechanism != "PLAIN" or request.username is None:
            return Deny(f"a password table judges PLAIN handshakes, not {request.mechanism}")
        name = request.username.decode("utf-8", "replace")
        expected = users.get(request.username)
        if expected is None:
            return Deny(f"unknown user {name!r}")
        if not hmac.compare_digest(expected, request.password or b""):
            return Deny(f"wrong password for user {name!r}")
        return name

    return check


# ---------------------------------------------------------------- CURVE


def _user_ids(keys: Iterable[bytes | str] | Mapping[bytes | str, str]) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for key in keys:
        try:
            raw = normalize_key(key)
        except ValueError as exc:
            raise ValueError(f"not a CURVE public key: {key!r} ({exc})") from None
        out[raw] = keys[key] if isinstance(keys, Mapping) else z85_encode(raw).decode("ascii")
    return out


def _judge_key(request: AuthRequest, allowed: Mapping[bytes, str], what: str) -> str | Deny:
    if request.mechanism != "CURVE" or request.public_key is None:
        return Deny(f"{what} judges CURVE handshakes, not {request.mechanism}")
    user_id = allowed.get(request.public_key)
    if user_id is None:
        return Deny(f"CURVE key not allowed: {z85_encode(request.public_key).decode('ascii')}")
    return user_id


def curve_keys(keys: Iterable[bytes | str] | Mapping[bytes | str, str]) -> Authenticator:
    """CURVE: allow clients whose long-term public key is in *keys* (32 raw bytes or
    40 Z85 characters each).

    The user id is the key in Z85 (as pyzmq's ``zmq.auth``), or, if *keys* is a
    mapping, the key's value (``{alice_public: "alice"}``). The keys are copied.

    Raises:
        ValueError: a malformed key.
    """
    allowed = _user_ids(keys)

    async def check(request: AuthRequest) -> str | Deny:
        await trio.lowlevel.checkpoint()
        return _judge_key(request, allowed, "a key set")

    return check


class _KeyDirectory:
    """The public keys of a directory of ``*.key`` files, reread when it changes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._signature: object = None
        self._keys: dict[bytes, str] = {}
        self._lock = trio.Lock()

    def _scan(self) -> tuple[object, dict[bytes, str] | None]:
        try:
            entries = sorted(
                (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                for entry in os.scandir(self.directory)
                if entry.name.endswith(".key") and entry.is_file()
            )
        except OSError as exc:
            logger.warning("CURVE key directory %s: %s", self.directory, exc)
            return None, {}
        if entries == self._signature:
            return entries, None
        keys: dict[bytes, str] = {}
        for name, _, _ in entries:
            path = self.directory / name
            try:
                public, _secret = load_certificate(path)
                keys.setdefault(normalize_key(public), _user_id(name))
            except (OSError, ValueError) as exc:
                logger.warning("skipping CURVE key file %s: %s", path, exc)
        return entries, keys

    async def __call__(self, request: AuthRequest) -> str | Deny:
        if request.mechanism != "CURVE":
            await trio.lowlevel.checkpoint()
            return Deny(f"a key directory judges CURVE handshakes, not {request.mechanism}")
        async with self._lock:
            signature, keys = await trio.to_thread.run_sync(self._scan)
            if keys is not None:
                self._signature, self._keys = signature, keys
        return _judge_key(request, self._keys, "a key directory")


def curve_key_directory(directory: str | os.PathLike[str]) -> Authenticator:
    """CURVE: allow clients whose public key is in a ``*.key`` file of *directory*.

    The user id is the file's name without ``.key``. The directory is read again
    whenever its files change, so adding or removing a file takes effect at the
    next handshake. Unreadable or malformed files are skipped (and logged); a
    missing directory allows no one.
    """
    return _KeyDirectory(directory)


# ---------------------------------------------------------------- combining


def all_of(*policies: Callable[[AuthRequest], Any]) -> Authenticator:
    """Allow only if every policy allows (asked in order, stopping at the first
    refusal, whose reason is kept). The user id is the first ``str`` answer."""

    async def check(request: AuthRequest) -> Any:
        user_id: str | None = None
        for policy in policies:
            answer = await _ask(policy, request)
            if not answer:
                return answer if isinstance(answer, Deny) else Deny(_reason(answer))
            if user_id is None and isinstance(answer, str):
                user_id = answer
        await trio.lowlevel.checkpoint()
        return user_id if user_id is not None else True

    return check


def any_of(*policies: Callable[[AuthRequest], Any]) -> Authenticator:
    """Allow if some policy allows (asked in order, stopping at the first that
    does, whose answer is kept); otherwise deny with every policy's reason."""

    async def check(request: AuthRequest) -> Any:
        reasons = []
        for policy in policies:
            answer = await _ask(policy, request)
            if answer:
                return answer
            reasons.append(_reason(answer))
        await trio.lowlevel.checkpoint()
        return Deny("; ".join(reasons) or "no policy")

    return check


# ---------------------------------------------------------------- key files

_PUBLIC_BANNER = """\
#   ****  Generated on {now} by triomq  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange.

"""
_SECRET_BANNER = """\
#   ****  Generated on {now} by triomq  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


def _certificate_text(
    banner: str, public: bytes, secret: bytes | None, metadata: Mapping[str, str]
) -> str:
    lines = [banner.format(now=datetime.datetime.now().isoformat(timespec="seconds")), "metadata\n"]
    for name, value in metadata.items():
        lines.append(f'    {name} = "{value}"\n')
    lines.append("curve\n")
    lines.append(f'    public-key = "{public.decode("ascii")}"\n')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"\n')
    return "".join(lines)


def create_certificates(
    directory: str | os.PathLike[str], name: str, metadata: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Make a new CURVE key pair and write it as ``NAME.key`` (public) and
    ``NAME.key_secret`` (both keys, readable by the owner only) in *directory*.

    Returns the two paths. Blocks briefly on file I/O (call it at setup, or in
    ``trio.to_thread.run_sync``).
    """
    folder = Path(directory)
    public, secret = curve_keypair()
    public_path = folder / f"{name}.key"
    secret_path = folder / f"{name}.key_secret"
    public_path.write_text(_certificate_text(_PUBLIC_BANNER, public, None, metadata or {}))
    _write_private(secret_path, _certificate_text(_SECRET_BANNER, public, secret, metadata or {}))
    return public_path, secret_path


def _write_private(path: Path, text: str) -> None:
    """Write *path* readable by its owner only, whatever was there before.

    Opening *path* itself would keep an existing file's mode (0644, say) and
    follow a symlink planted there. A fresh file in the same directory, made
    with mode 0600 and never through a link, then renamed over *path*, has
    neither problem (and a reader never sees it half written).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _key_value(line: str) -> bytes:
    value = line.split("=", 1)[1].strip().strip("'\"")
    normalize_key(value)  # raises ValueError if it is not a key
    return value.encode("ascii")


def load_certificate(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` from a key file, each as 40 bytes of Z85; *secret* is
    None for a public-only file. Blocks briefly on file I/O.

    Raises:
        OSError: the file cannot be read.
        ValueError: it holds no valid public key.
    """
    public: bytes | None = None
    secret: bytes | None = None
    bare: list[str] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("public-key"):
                public = _key_value(line)
            elif line.startswith("secret-key"):
                secret = _key_value(line)
            else:
                bare.append(line)
        except ValueError as exc:
            raise ValueError(f"{path}: bad key: {exc}") from None
    if public is None and len(bare) == 1 and len(bare[0]) == 40:
        try:
            normalize_key(bare[0])
            public = bare[0].encode("ascii")
        except ValueError:
            pass
    if public is None:
        raise ValueError(f"{path}: no public key found")
    return public, secret


def _user_id(file_name: str) -> str:
    """A key file's name without ``.key``, as a user id that is valid UTF-8.

    A name that is not UTF-8 on disk (say Latin-1 ``caf\xe9.key``) comes from
    the OS with lone surrogates, which no user id can carry; its undecodable
    bytes become U+FFFD instead.
    """
    return os.fsencode(file_name[: -len(".key")]).decode("utf-8", "replace")


def load_certificates(directory: str | os.PathLike[str]) -> dict[bytes, str]:
    """The public keys (Z85) of every ``*.key`` file in *directory*, each mapped to
    its file's name without ``.key``; ready for :func:`curve_keys`. Blocks briefly.

    Raises:
        OSError: the directory cannot be read.
        ValueError: a file holds no valid public key.
    """
    keys: dict[bytes, str] = {}
    for path in sorted(Path(directory).glob("*.key")):
        public, _ = load_certificate(path)
        keys.setdefault(public, _user_id(path.name))
    return keys

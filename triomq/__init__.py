"""triomq: ZeroMQ for Trio, in pure Python, wire-compatible with libzmq (ZMTP 3.1).

This module only re-exports; the implementation lives in private modules.
"""

from . import auth as auth
from ._auth import AuthRequest as AuthRequest, Deny as Deny
from ._engine._monitor import (
    Accepted as Accepted,
    BindFailed as BindFailed,
    Closed as Closed,
    Connected as Connected,
    ConnectRetried as ConnectRetried,
    Disconnected as Disconnected,
    FailureKind as FailureKind,
    HandshakeFailed as HandshakeFailed,
    HandshakeSucceeded as HandshakeSucceeded,
    Listening as Listening,
    MessagesDropped as MessagesDropped,
    MonitorEvent as MonitorEvent,
    SwapCorrupted as SwapCorrupted,
)
from ._engine._monitor import MulticastLoss as MulticastLoss
from ._errors import (
    AuthenticationError as AuthenticationError,
    EndpointError as EndpointError,
    HandshakeError as HandshakeError,
    HostUnreachable as HostUnreachable,
    LocalProtocolError as LocalProtocolError,
    ProtocolError as ProtocolError,
    RemoteProtocolError as RemoteProtocolError,
    RequestFailed as RequestFailed,
    StateError as StateError,
    TriomqError as TriomqError,
)
from ._mechanisms._z85 import (
    curve_keypair as curve_keypair,
    curve_public as curve_public,
    z85_decode as z85_decode,
    z85_encode as z85_encode,
)
from ._options import SocketOptions as SocketOptions
from ._proxy import ProxyControl as ProxyControl, proxy as proxy
from ._rpc import (
    RetryPolicy as RetryPolicy,
    RpcClient as RpcClient,
    open_rpc_client as open_rpc_client,
    serve as serve,
)
from ._socket import (
    PeerInfo as PeerInfo,
    PeerStatistics as PeerStatistics,
    Socket as Socket,
    SocketStatistics as SocketStatistics,
    open_socket as open_socket,
)
from ._socket_type import SocketType as SocketType

PAIR = SocketType.PAIR
PUB = SocketType.PUB
SUB = SocketType.SUB
REQ = SocketType.REQ
REP = SocketType.REP
DEALER = SocketType.DEALER
ROUTER = SocketType.ROUTER
PULL = SocketType.PULL
PUSH = SocketType.PUSH
XPUB = SocketType.XPUB
XSUB = SocketType.XSUB

__version__ = "0.1.0"

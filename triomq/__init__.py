"""triomq: ZeroMQ for Trio, in pure Python, wire-compatible with libzmq (ZMTP 3.1).

This module only re-exports; the implementation lives in private modules.
"""

from . import auth as auth
from ._auth import AuthRequest as AuthRequest
from ._auth import Deny as Deny
from ._engine._monitor import (
    Accepted as Accepted,
)
from ._engine._monitor import (
    BindFailed as BindFailed,
)
from ._engine._monitor import (
    Closed as Closed,
)
from ._engine._monitor import (
    Connected as Connected,
)
from ._engine._monitor import (
    ConnectRetried as ConnectRetried,
)
from ._engine._monitor import (
    Disconnected as Disconnected,
)
from ._engine._monitor import (
    FailureKind as FailureKind,
)
from ._engine._monitor import (
    HandshakeFailed as HandshakeFailed,
)
from ._engine._monitor import (
    HandshakeSucceeded as HandshakeSucceeded,
)
from ._engine._monitor import (
    Listening as Listening,
)
from ._engine._monitor import (
    MessagesDropped as MessagesDropped,
)
from ._engine._monitor import (
    MonitorEvent as MonitorEvent,
)
from ._engine._monitor import MulticastLoss as MulticastLoss
from ._engine._monitor import (
    SwapCorrupted as SwapCorrupted,
)
from ._engine._monitor import (
    SwapFailed as SwapFailed,
)
from ._errors import (
    AuthenticationError as AuthenticationError,
)
from ._errors import (
    EndpointError as EndpointError,
)
from ._errors import (
    HandshakeError as HandshakeError,
)
from ._errors import (
    HostUnreachable as HostUnreachable,
)
from ._errors import (
    LocalProtocolError as LocalProtocolError,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    RemoteProtocolError as RemoteProtocolError,
)
from ._errors import (
    RequestFailed as RequestFailed,
)
from ._errors import (
    StateError as StateError,
)
from ._errors import (
    TriomqError as TriomqError,
)
from ._mechanisms._z85 import (
    curve_keypair as curve_keypair,
)
from ._mechanisms._z85 import (
    curve_public as curve_public,
)
from ._mechanisms._z85 import (
    z85_decode as z85_decode,
)
from ._mechanisms._z85 import (
    z85_encode as z85_encode,
)
from ._options import SocketOptions as SocketOptions
from ._proxy import ProxyControl as ProxyControl
from ._proxy import proxy as proxy
from ._rpc import (
    RetryPolicy as RetryPolicy,
)
from ._rpc import (
    RpcClient as RpcClient,
)
from ._rpc import (
    open_rpc_client as open_rpc_client,
)
from ._rpc import (
    serve as serve,
)
from ._socket import (
    PeerInfo as PeerInfo,
)
from ._socket import (
    PeerStatistics as PeerStatistics,
)
from ._socket import (
    Socket as Socket,
)
from ._socket import (
    SocketStatistics as SocketStatistics,
)
from ._socket import (
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

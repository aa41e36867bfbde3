"""Sans-I/O core of the ``epgm://`` transport: PGM (RFC 3208) over UDP.

OpenPGM's UDP encapsulation, as libzmq uses it: every PGM packet is one UDP
datagram to the endpoint's port -- downstream packets (ODATA, RDATA, NCF, SPM)
to the multicast group, upstream ones (NAK, SPMR) unicast to the source's
address.  ZeroMQ messages ride in the APDUs with libzmq's framing (a 2-byte
offset to the first message, then ZMTP 1.0 frames).

No trio and no sockets here: callers pass ``now`` and a ``random.Random``, feed
datagrams in and send what comes out.
"""

from ._faults import DelayLine as DelayLine
from ._faults import FaultInjector as FaultInjector
from ._framing import MessageDecoder as MessageDecoder
from ._framing import MessageEncoder as MessageEncoder
from ._packets import BadPacket as BadPacket
from ._packets import Fragment as Fragment
from ._packets import Nak as Nak
from ._packets import Ncf as Ncf
from ._packets import Odata as Odata
from ._packets import Packet as Packet
from ._packets import PacketType as PacketType
from ._packets import Rdata as Rdata
from ._packets import Spm as Spm
from ._packets import Spmr as Spmr
from ._packets import UnsupportedPacket as UnsupportedPacket
from ._packets import decode_packet_untrusted as decode_packet_untrusted
from ._packets import encode_packet as encode_packet
from ._rate import TokenBucket as TokenBucket
from ._receiver import Loss as Loss
from ._receiver import Outgoing as Outgoing
from ._receiver import PgmReceiver as PgmReceiver
from ._receiver import ReceiverOutput as ReceiverOutput
from ._receiver import ReceiverStats as ReceiverStats
from ._receiver import Tsi as Tsi
from ._sender import PgmSender as PgmSender
from ._sender import SenderStats as SenderStats
from ._sender import max_tsdu as max_tsdu
from ._window import ReceiveWindow as ReceiveWindow
from ._window import TransmitWindow as TransmitWindow
from ._window import sqn_add as sqn_add
from ._window import sqn_diff as sqn_diff
from ._window import sqn_gt as sqn_gt
from ._window import sqn_gte as sqn_gte
from ._window import sqn_lt as sqn_lt
from ._window import sqn_lte as sqn_lte
from ._window import window_sqns as window_sqns

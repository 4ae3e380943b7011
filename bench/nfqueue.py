"""Delay packets in user space: a pure-Python NFQUEUE client and the delay line that times releases.

The kernel hands every packet an ``NFQUEUE`` rule matches to the netlink socket bound to that queue
and holds it until the socket sends a verdict for its id. Verdicts may come in any order, so
accepting each packet ``d`` seconds after it arrived delays it by ``d``. This module speaks
nfnetlink_queue's netlink protocol directly (a stable kernel ABI since Linux 2.6.14) with the
standard library's ``socket`` and ``struct``: nothing to compile, no ``libnetfilter_queue``.

Only the first :data:`COPY_RANGE` bytes of each packet are copied to user space (enough for the IP
and transport headers that name a TCP flow), and GSO packets are queued whole, so one verdict
releases a whole loopback TCP burst.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

NETLINK_NETFILTER: Final = 12
SOL_NETLINK: Final = 270
NETLINK_NO_ENOBUFS: Final = 5
SO_RCVBUFFORCE: Final = 33

NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4

NFNL_SUBSYS_QUEUE: Final = 3
NFQNL_MSG_PACKET: Final = 0
NFQNL_MSG_VERDICT: Final = 1
NFQNL_MSG_CONFIG: Final = 2

NFQA_PACKET_HDR: Final = 1
NFQA_VERDICT_HDR: Final = 2
NFQA_PAYLOAD: Final = 10
NFQA_CFG_CMD: Final = 1
NFQA_CFG_PARAMS: Final = 2
NFQA_CFG_QUEUE_MAXLEN: Final = 3
NFQA_CFG_MASK: Final = 4
NFQA_CFG_FLAGS: Final = 5
NFQNL_CFG_CMD_BIND: Final = 1
NFQNL_COPY_PACKET: Final = 2
NFQA_CFG_F_GSO: Final = 4

NF_ACCEPT: Final = 1

COPY_RANGE: Final = 64
"""Bytes of each packet copied to user space: an IPv6 header (40) plus TCP ports, with room."""
QUEUE_MAXLEN: Final = 16384
"""Packets the kernel holds for the queue before it drops new ones (its default is 1024)."""
RECEIVE_BUFFER: Final = 8 * 1024 * 1024
"""The socket's buffer: a packet message lost to a full buffer would never get its verdict."""

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
_VERDICT = struct.Struct("!II")
_PACKET_HDR = struct.Struct("!IHB")
_ERRNO = struct.Struct("=i")
_IPPROTO_TCP: Final = 6
_IPPROTO_UDP: Final = 17


class NfQueueError(OSError):
    """The kernel refused a queue command (the errno says why), or the queue is unavailable."""


@dataclass(frozen=True, slots=True)
class QueuedPacket:
    """A packet the kernel holds until its verdict: its id and, for TCP, the flow it belongs to."""

    packet_id: int
    tcp_flow: bytes | None
    datagram_flow: bytes | None = None
    """For a UDP datagram, the bytes naming its flow (addresses and ports), else ``None``."""
    """Source and destination address and port of a TCP segment; ``None`` for anything else."""


def _flow_of(header: bytes, protocol: int) -> bytes | None:
    """Source and destination addresses and ports of an IP packet of ``protocol``, else ``None``.

    Args:
        header: The start of the packet, from its IPv4 or IPv6 header on.
        protocol: The transport protocol's number (6 TCP, 17 UDP; both start with the two ports).
    """
    if not header:
        return None
    version = header[0] >> 4
    if version == 4 and len(header) >= 20 and header[9] == protocol:
        transport = (header[0] & 0x0F) * 4
        return header[12:20] + header[transport : transport + 4]
    if version == 6 and len(header) >= 44 and header[6] == protocol:
        return header[8:44]
    return None


def udp_flow_of(header: bytes) -> bytes | None:
    """Return the bytes naming the UDP flow (addresses and ports, one direction) of an IP packet, or ``None``."""
    return _flow_of(header, _IPPROTO_UDP)


def tcp_flow_of(header: bytes) -> bytes | None:
    """Return the bytes naming the TCP flow (one direction of a connection) of an IP packet, or ``None``."""
    return _flow_of(header, _IPPROTO_TCP)


def _attribute(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            return
        yield kind & 0x3FFF, data[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3


class NfQueue:
    """A netlink socket bound to one NFQUEUE queue of the network namespace it was created in.

    Args:
        queue_num: The queue the ``NFQUEUE --queue-num`` rule sends packets to.

    Raises:
        NfQueueError: The queue is taken by another socket, or the kernel lacks nfnetlink_queue.
    """

    def __init__(self, queue_num: int) -> None:
        self.queue_num = queue_num
        self._sequence = itertools.count(1)
        try:
            self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NfQueueError(exc.errno, f"no netfilter netlink socket: {exc.strerror}") from exc
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            self._socket.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self._socket.bind((0, 0))
            self._configure(_attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
            self._configure(_attribute(NFQA_CFG_PARAMS, struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET)))
            self._configure(_attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))
            flags = struct.pack("!I", NFQA_CFG_F_GSO)
            self._configure(_attribute(NFQA_CFG_FLAGS, flags) + _attribute(NFQA_CFG_MASK, flags))
        except BaseException:
            self._socket.close()
            raise
        self._socket.setblocking(False)

    def fileno(self) -> int:
        """The socket's file descriptor, for ``select``."""
        return self._socket.fileno()

    def close(self) -> None:
        """Close the socket: the kernel drops the packets still waiting for a verdict."""
        self._socket.close()

    def _header(self, kind: int, flags: int, length: int) -> bytes:
        message_type = (NFNL_SUBSYS_QUEUE << 8) | kind
        total = _NLMSG.size + _NFGEN.size + length
        return _NLMSG.pack(total, message_type, flags, next(self._sequence), 0) + _NFGEN.pack(
            socket.AF_UNSPEC, 0, socket.htons(self.queue_num)
        )

    def _configure(self, attributes: bytes) -> None:
        self._socket.sendto(
            self._header(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, len(attributes)) + attributes, (0, 0)
        )
        reply = self._socket.recv(65536)
        _, kind, *_ = _NLMSG.unpack_from(reply)
        if kind == NLMSG_ERROR:
            (error,) = _ERRNO.unpack_from(reply, _NLMSG.size)
            if error:
                raise NfQueueError(-error, f"NFQUEUE {self.queue_num} configuration refused: {os.strerror(-error)}")

    def receive(self) -> list[QueuedPacket]:
        """Return the packets queued since the last call (empty when none wait)."""
        packets: list[QueuedPacket] = []
        while True:
            try:
                data = self._socket.recv(1 << 20)
            except BlockingIOError:
                return packets
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind, *_ = _NLMSG.unpack_from(data, offset)
                if length < _NLMSG.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    packets.append(self._parse(data[offset + _NLMSG.size + _NFGEN.size : offset + length]))
                offset += (length + 3) & ~3

    @staticmethod
    def _parse(attributes: bytes) -> QueuedPacket:
        packet_id = 0
        payload = b""
        for kind, value in _attributes(attributes):
            if kind == NFQA_PACKET_HDR:
                packet_id = _PACKET_HDR.unpack_from(value)[0]
            elif kind == NFQA_PAYLOAD:
                payload = value
        return QueuedPacket(packet_id, tcp_flow_of(payload), udp_flow_of(payload))

    def accept(self, packet_ids: list[int]) -> None:
        """Let the packets go on their way, in one send."""
        if not packet_ids:
            return
        verdicts = b"".join(
            self._header(NFQNL_MSG_VERDICT, NLM_F_REQUEST, _NLATTR.size + _VERDICT.size)
            + _attribute(NFQA_VERDICT_HDR, _VERDICT.pack(NF_ACCEPT, packet_id))
            for packet_id in packet_ids
        )
        self._socket.sendto(verdicts, (0, 0))


@dataclass
class DelayLine:
    """When each queued packet leaves: ``delay`` plus a uniform draw in ``[-jitter, +jitter]`` seconds.

    Each packet's delay is drawn on its own, so datagrams (UDP, ICMP) may leave in another order than
    they came, as they do on a path whose queues vary. A TCP segment never leaves before the segment
    that came before it in the same direction of the same connection: its delay is the larger of its
    own draw and what it takes to follow that segment. Jitter on a real path comes mostly from queues,
    which keep a flow's order; reordering every TCP stream would instead measure TCP's fast
    retransmit, which real paths rarely trigger.

    With ``reorder=False`` a UDP flow keeps its order too (a path whose jitter is all queueing, as
    on most access networks; netem-style independent draws reorder datagrams far more often than real
    paths do, and a receiver's jitter buffer may count each overtaken packet as lost).

    Args:
        delay: Mean one-way delay, seconds.
        jitter: Half-width of the uniform spread around ``delay``, seconds (clamped at zero delay).
        rng: The source of the draws (seed it for a reproducible run).
        reorder: Whether datagrams of one UDP flow may overtake one another.
    """

    delay: float
    jitter: float
    rng: random.Random = field(default_factory=random.Random)
    reorder: bool = True
    _heap: list[tuple[float, int, int]] = field(default_factory=list, init=False)
    _order: Iterator[int] = field(default_factory=itertools.count, init=False)
    _flow_release: dict[bytes, float] = field(default_factory=dict, init=False)

    def add(self, packet: QueuedPacket, now: float) -> float:
        """Schedule a packet that arrived at ``now`` and return when it leaves."""
        leave = now + max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
        flow = packet.tcp_flow if packet.tcp_flow is not None or self.reorder else packet.datagram_flow
        if flow is not None:
            leave = max(leave, self._flow_release.get(flow, leave))
            self._flow_release[flow] = leave
            if len(self._flow_release) > 4096:
                self._flow_release = {flow: t for flow, t in self._flow_release.items() if t > now}
        heapq.heappush(self._heap, (leave, next(self._order), packet.packet_id))
        return leave

    def next_release(self) -> float | None:
        """When the next packet leaves, or ``None`` when none waits."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[int]:
        """Remove and return the ids of the packets whose time has come by ``now``, in leaving order."""
        ids: list[int] = []
        while self._heap and self._heap[0][0] <= now:
            ids.append(heapq.heappop(self._heap)[2])
        return ids

    def __len__(self) -> int:
        return len(self._heap)

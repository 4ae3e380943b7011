"""Measure a network namespace's loss and delay: UDP (a paced sender, an echoing receiver) and TCP.

Run as two processes inside the namespace (``python -m tests.network_probe echo|send`` or
``tcp-serve|tcp-ping``), so each has its own interpreter; both read ``time.monotonic()``, one clock for
the whole machine, so the receiver can time each datagram's one-way trip from the send time it carries.
The TCP probe times the handshake and small request/response exchanges on one connection and reads
both ends' retransmissions and smoothed round trip from ``TCP_INFO``.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 40000
TCP_PORT = 40100
_DATAGRAM = struct.Struct("!Id")
_TCP_INFO_RTT = 68
"""Offsets in ``struct tcp_info``: ``tcpi_rtt`` (microseconds) and ``tcpi_total_retrans``."""
_TCP_INFO_TOTAL_RETRANS = 100


@dataclass(frozen=True)
class UdpMeasurement:
    """What the sender and the receiver saw."""

    sent: int
    received: int
    """Datagrams that reached the receiver (each one echoed back)."""
    echoed: int
    """Echoes that reached the sender."""
    one_way_ms: list[float]
    rtt_ms: list[float]
    out_of_order: int
    """Datagrams the receiver got after one sent later."""


def _echo(port: int, idle: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("ready", flush=True)
    one_way: list[float] = []
    highest = -1
    out_of_order = 0
    while select.select([sock], [], [], idle if one_way else 30)[0]:
        data, peer = sock.recvfrom(2048)
        arrived = time.monotonic()
        seq, sent = _DATAGRAM.unpack_from(data)
        one_way.append((arrived - sent) * 1000)
        out_of_order += seq < highest
        highest = max(highest, seq)
        sock.sendto(data, peer)
    print(json.dumps({"received": len(one_way), "one_way_ms": one_way, "out_of_order": out_of_order}))


def _send(port: int, count: int, rate: float, linger: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    rtt: list[float] = []
    start = finished = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent / rate:
            sock.send(_DATAGRAM.pack(sent, now) + bytes(152))
            sent += 1
            finished = now
            continue
        wake = start + sent / rate if sent < count else finished + linger
        if now >= wake and sent >= count:
            break
        if select.select([sock], [], [], max(0.0, wake - now))[0]:
            data = sock.recv(2048)
            rtt.append((time.monotonic() - _DATAGRAM.unpack_from(data)[1]) * 1000)
    print(json.dumps({"sent": sent, "rtt_ms": rtt}))


@dataclass(frozen=True)
class TcpMeasurement:
    """What both ends of one TCP connection saw."""

    connect_ms: float
    """The handshake as the client sees it: SYN out, SYN-ACK back."""
    exchange_ms: list[float]
    """Each request's round trip to the server's answer."""
    client_retransmits: int
    server_retransmits: int
    client_srtt_ms: float
    """The kernel's smoothed round-trip estimate at the client."""


def _tcp_info(sock: socket.socket) -> tuple[float, int]:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    rtt_us = struct.unpack_from("I", info, _TCP_INFO_RTT)[0]
    return rtt_us / 1000, struct.unpack_from("I", info, _TCP_INFO_TOTAL_RETRANS)[0]


def _tcp_serve(port: int) -> None:
    server = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with connection, connection.makefile("rb") as lines:
        for line in lines:
            if line == b"stats\n":
                _, retransmits = _tcp_info(connection)
                connection.sendall(json.dumps({"retransmits": retransmits}).encode() + b"\n")
                break
            connection.sendall(line)


def _tcp_ping(port: int, count: int) -> None:
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    connect_ms = (time.monotonic() - start) * 1000
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    exchanges = []
    with sock, sock.makefile("rb") as lines:
        for i in range(count):
            start = time.monotonic()
            sock.sendall(b"%d %s\n" % (i, b"x" * 100))
            lines.readline()
            exchanges.append((time.monotonic() - start) * 1000)
        srtt_ms, retransmits = _tcp_info(sock)
        sock.sendall(b"stats\n")
        server = json.loads(lines.readline())
    print(json.dumps({
        "connect_ms": connect_ms, "exchange_ms": exchanges, "client_retransmits": retransmits,
        "server_retransmits": server["retransmits"], "client_srtt_ms": srtt_ms,
    }))  # fmt: skip


def measure_tcp(
    prefix: Sequence[str], *, count: int = 50, port: int = TCP_PORT, client_prefix: Sequence[str] | None = None
) -> TcpMeasurement:
    """Open one connection and make ``count`` small request/response exchanges on it.

    Args:
        prefix: The command that runs the server (and the client, unless ``client_prefix``).
        count: Exchanges.
        port: The server's port on 127.0.0.1.
        client_prefix: The command that runs the client, e.g. as the caller.
    """
    probe = ["-m", "tests.network_probe", "--port", str(port)]
    server = subprocess.Popen(
        [*prefix, sys.executable, *probe, "tcp-serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    try:
        if server.stdout.readline() != "ready\n":
            raise RuntimeError("the TCP probe server did not start")
        client = subprocess.run(
            [*(prefix if client_prefix is None else client_prefix), sys.executable, *probe, "tcp-ping",
             "--count", str(count)],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=count * 2 + 30,
        )  # fmt: skip
    finally:
        server.kill()
        server.wait()
    return TcpMeasurement(**json.loads(client.stdout))


def measure_udp(
    prefix: Sequence[str],
    *,
    count: int = 500,
    rate: float = 50.0,
    port: int = PORT,
    sender_prefix: Sequence[str] | None = None,
) -> UdpMeasurement:
    """Send ``count`` datagrams at ``rate`` per second between two processes started with ``prefix``.

    Args:
        prefix: The command that runs a program in the network to measure (``ip netns exec NAME``).
        count: Datagrams to send.
        rate: Datagrams per second (one every 20 ms at 50/s, as audio frames go).
        port: The echo's port on 127.0.0.1.
        sender_prefix: The command that runs the sender, if not ``prefix`` (e.g. as the caller).
    """
    probe = [sys.executable, "-m", "tests.network_probe", "--port", str(port)]
    echo = subprocess.Popen([*prefix, *probe, "echo"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None
    try:
        if echo.stdout.readline() != "ready\n":
            raise RuntimeError("the echo probe did not start")
        timeout = count / rate + 30
        sender = subprocess.run(
            [
                *(prefix if sender_prefix is None else sender_prefix),
                *probe,
                "send",
                "--count",
                str(count),
                "--rate",
                str(rate),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )
        received = json.loads(echo.communicate(timeout=timeout)[0])
    finally:
        echo.kill()
        echo.wait()
    sent = json.loads(sender.stdout)
    return UdpMeasurement(
        sent=sent["sent"],
        received=received["received"],
        echoed=len(sent["rtt_ms"]),
        one_way_ms=received["one_way_ms"],
        rtt_ms=sent["rtt_ms"],
        out_of_order=received["out_of_order"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.network_probe")
    parser.add_argument("role", choices=("echo", "send", "tcp-serve", "tcp-ping"))
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=1.5, help="echo: exit after this long without a datagram")
    args = parser.parse_args(argv)
    if args.role == "echo":
        _echo(args.port, args.idle)
    elif args.role == "tcp-serve":
        _tcp_serve(args.port)
    elif args.role == "tcp-ping":
        _tcp_ping(args.port, args.count)
    else:
        _send(args.port, args.count, args.rate, linger=1.0)


if __name__ == "__main__":
    main()

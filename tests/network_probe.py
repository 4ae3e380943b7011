"""Measure a network namespace's loss and delay: a paced UDP sender and an echoing receiver.

Run as two processes inside the namespace (``python -m tests.network_probe echo|send``), so each has
its own interpreter; both read ``time.monotonic()``, one clock for the whole machine, so the receiver
can time each datagram's one-way trip from the send time it carries.
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
_DATAGRAM = struct.Struct("!Id")


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


def measure_udp(prefix: Sequence[str], *, count: int = 500, rate: float = 50.0) -> UdpMeasurement:
    """Send ``count`` datagrams at ``rate`` per second between two processes started with ``prefix``.

    Args:
        prefix: The command that runs a program in the network to measure (``ip netns exec NAME``).
        count: Datagrams to send.
        rate: Datagrams per second (one every 20 ms at 50/s, as audio frames go).
    """
    probe = [*prefix, sys.executable, "-m", "tests.network_probe"]
    echo = subprocess.Popen([*probe, "echo"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None
    try:
        if echo.stdout.readline() != "ready\n":
            raise RuntimeError("the echo probe did not start")
        timeout = count / rate + 30
        sender = subprocess.run(
            [*probe, "send", "--count", str(count), "--rate", str(rate)],
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
    parser.add_argument("role", choices=("echo", "send"))
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=1.5, help="echo: exit after this long without a datagram")
    args = parser.parse_args(argv)
    if args.role == "echo":
        _echo(args.port, args.idle)
    else:
        _send(args.port, args.count, args.rate, linger=1.0)


if __name__ == "__main__":
    main()

"""Latency injection, round trips and concurrency of the emulator."""

from __future__ import annotations

import http.client
import itertools
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from local.kvs_emulator import KvsEmulator
from tests.kvs_emulator.support import (
    new_channels,
)

# --------------------------------------------------------------------------- latency and performance


def _timed_calls(call: Callable[[], object], count: int) -> list[float]:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def test_round_trip_without_latency_is_small(emu: KvsEmulator, signaling: Any) -> None:
    """Guards against the Nagle/delayed-ACK stall (~40 ms per keep-alive request)."""
    arns = new_channels(emu, 25)
    cycle = itertools.cycle(arns)
    signaling.get_ice_server_config(ChannelARN=next(cycle))  # warm the connection pool
    durations = _timed_calls(lambda: signaling.get_ice_server_config(ChannelARN=next(cycle)), 50)
    median = statistics.median(durations)
    print(f"\nboto3 GetIceServerConfig round trip: median {median:.2f} ms, max {max(durations):.2f} ms")
    assert median < 20
    assert emu.stats()["operations"]["GetIceServerConfig"]["throttled"] == 0


def test_latency_injection_adds_measurable_delay(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    emu.set_latency(80)
    slow = _timed_calls(lambda: kvs.get_signaling_channel_endpoint(ChannelARN=arn), 4)
    emu.set_latency(0)
    fast = _timed_calls(lambda: kvs.get_signaling_channel_endpoint(ChannelARN=arn), 4)
    assert min(slow) >= 80
    assert statistics.median(fast) < 20


def test_concurrent_clients_are_served_in_parallel(emu: KvsEmulator, session: boto3.session.Session) -> None:
    """64 concurrent calls with 100 ms latency finish in far less than 6.4 s: no lock held while sleeping."""
    arns = new_channels(emu, 64)
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=64)
    client = session.client("kinesis-video-signaling", endpoint_url=emu.url, config=config)
    emu.set_latency(100)
    # Every caller waits for the others, so thread start-up on a busy machine cannot spread the 64
    # arrivals over more than one window: what is measured is the emulator, not the client.
    ready = threading.Barrier(64)

    def call(arn: str) -> Any:
        ready.wait(timeout=30)
        return client.get_ice_server_config(ChannelARN=arn)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(call, arns))
    elapsed = time.perf_counter() - started
    assert all(len(result["IceServerList"]) == 2 for result in results)
    assert elapsed < 2.0
    operation = emu.stats()["operations"]["GetIceServerConfig"]
    assert operation["served"] == 64
    assert operation["max_calls_in_window"] == 64


def test_many_open_connections_at_once(emu: KvsEmulator) -> None:
    port = emu.port
    barrier = threading.Barrier(96)

    def hold_connection_and_ask() -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.connect()
        barrier.wait()
        statuses = []
        for _ in range(3):  # keep-alive: three requests on one connection
            connection.request("GET", "/_emulator/health")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        connection.close()
        return statuses

    with ThreadPoolExecutor(max_workers=96) as pool:
        results = list(pool.map(lambda _: hold_connection_and_ask(), range(96)))
    assert results == [[200, 200, 200]] * 96

"""Concurrency and multi-instance load on loopback: bounded in time, stopping by themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.core import IceBroker
from broker.sizing import predicted_throttle_rate, recommended_channel_count
from local.kvs_emulator import KvsEmulator
from tests.emulator_stats import channel_op, operation_total

ICE = "GetIceServerConfig"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def busiest_window(arrivals: list[float], window: float = 1.0) -> int:
    """Most arrivals in any half-open window (t - window, t], computed here, not by the emulator."""
    arrivals = sorted(arrivals)
    best, start = 0, 0
    for end, t in enumerate(arrivals):
        while arrivals[start] <= t - window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_64_concurrent_callers_over_3_channels_are_never_throttled(
    emulator: KvsEmulator, make_broker: Callable[..., IceBroker]
) -> None:
    arns = emulator.create_channels(3)
    broker = make_broker(arns, max_wait_seconds=30.0)
    stop_at = time.monotonic() + 4.0
    served = [0] * 64
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        try:
            while time.monotonic() < stop_at:
                broker.get_ice_servers()
                served[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    total = sum(served)
    assert total >= 3 * 5 * 4  # the pool was kept busy: about 5 calls/s per channel for 4 s
    assert operation_total(emulator, ICE, "throttled") == 0
    assert operation_total(emulator, ICE, "served") == total
    arrivals = emulator.calls()["channels"]
    for arn in arns:
        assert channel_op(emulator, arn, ICE)["max_calls_in_window"] <= 5
        assert busiest_window(arrivals[arn][ICE]) <= 5


def run_worker_processes(
    arns: list[str], *, processes: int, rate: float, duration: float, start_at: float | None = None
) -> list[dict[str, Any]]:
    """Run ``processes`` broker processes (``tests.broker_load_worker``) at once; return their reports."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "tests.broker_load_worker",
        f"--arns={','.join(arns)}",
        f"--rate={rate}",
        f"--duration={duration}",
    ]
    if start_at is not None:
        command.append(f"--start-at={start_at}")
    workers = [
        subprocess.Popen(
            [*command, f"--seed={seed}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(processes)
    ]
    reports = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=60 + duration)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return reports


def test_four_broker_processes_at_80_percent_of_the_pool_absorb_their_throttles(emulator: KvsEmulator) -> None:
    """Four uncoordinated brokers at 80 % of a 3-channel pool: far past what a pool is sized for.

    The model predicts 0.71 throttles per call here. Every throttle is counted and answered by a
    failover; a request that still finds no channel within ``TURN_MAX_WAIT_SECONDS`` fails as a typed
    ``PoolExhaustedError``, never anything else. Such requests are rare but not impossible: in
    ``bench.fleet`` 96 of 12,126 requests (0.8 %) at 80 % of a 5-channel pool. Zero failures is the
    recommended pool's promise, tested by the ten-process test below.
    """
    arns = emulator.create_channels(3)
    capacity = 3 * 5.0
    processes = 4
    rate = 0.8 * capacity / processes
    reports = run_worker_processes(arns, processes=processes, rate=rate, duration=6)
    failures = [failure for report in reports for failure in report["failures"]]
    assert all(failure.startswith("PoolExhaustedError: ") for failure in failures), failures
    ok = sum(report["ok"] for report in reports)
    assert ok > 0.5 * rate * processes * 6  # Poisson load actually ran
    assert len(failures) <= 0.1 * (ok + len(failures)), failures
    throttles = operation_total(emulator, ICE, "throttled")
    assert throttles == sum(report["throttles"] for report in reports)  # every throttle was absorbed
    assert operation_total(emulator, ICE, "served") == ok
    print(
        f"\n4 brokers x {rate:g} calls/s over 3 channels: {ok} served, {throttles} throttles absorbed, "
        f"{len(failures)} pool exhausted"
    )


FLEET_PROCESSES = 10
FLEET_PEAK_SESSIONS_PER_SEC = 10.0
FLEET_LOAD_SECONDS = 8.0
FLEET_START_DELAY_SECONDS = 8.0
"""Time for ten interpreters to import boto3 and build their brokers: 2-9 s here on two busy cores."""
FLEET_MAX_THROTTLES_PER_CALL = 0.06
"""What one run may show when the pool holds its 1 % target.

The run serves about 160 calls, so about one throttle is expected (the model gives 0.60 % for these
independent calls over the 17 recommended channels), and throttles come in clusters. In a
Monte-Carlo of this load over the emulator's limiter (8 s windows, at 0.97 %, the previous 15-channel
pool), a correct pool showed 4 or more throttles (0.025 per call: a 0.02 bound would fail one run in
eight by chance) in 12 % of runs, and 10 or more (over 0.06 per call) in 0.08 %. The minimum pool
(5 channels) would give 0.71 per call.
"""


def test_a_fleet_of_uncoordinated_brokers_on_the_recommended_pool(
    start_emulator: Callable[..., KvsEmulator],
) -> None:
    """Ten broker processes, like Lambda instances, share the pool sized for 10 sessions/s.

    Each process limits only its own calls, so together they place calls at random over the pool:
    the case :func:`broker.sizing.recommended_channel_count` sizes for.
    """
    emulator = start_emulator(latency_ms=20.0)
    channels = recommended_channel_count(FLEET_PEAK_SESSIONS_PER_SEC)
    arns = emulator.create_channels(channels)
    calls_per_sec = FLEET_PEAK_SESSIONS_PER_SEC * 2  # the browser's and the agent's credentials
    start_at = time.time() + FLEET_START_DELAY_SECONDS
    reports = run_worker_processes(
        arns,
        processes=FLEET_PROCESSES,
        rate=calls_per_sec / FLEET_PROCESSES,
        duration=FLEET_LOAD_SECONDS,
        start_at=start_at,
    )
    slowest_start = max(r["ready_at"] for r in reports) - (start_at - FLEET_START_DELAY_SECONDS)
    # A worker ready after start_at begins at once, so the processes still overlap for most of the run.
    overlap = min(r["load_ended"] for r in reports) - max(r["load_started"] for r in reports)
    assert overlap >= 6.0, (
        f"the workers' load overlapped for {overlap:.1f} s only (slowest ready {slowest_start:.1f} s)"
    )

    assert [failure for report in reports for failure in report["failures"]] == []
    served = operation_total(emulator, ICE, "served")
    throttles = operation_total(emulator, ICE, "throttled")
    assert served == sum(report["ok"] for report in reports)
    assert throttles == sum(report["throttles"] for report in reports)  # each one absorbed by a failover
    assert served > 0.7 * calls_per_sec * FLEET_LOAD_SECONDS  # the Poisson load ran
    throttles_per_call = throttles / served
    # The workers' calls are independent Poisson streams, not sessions' pairs of calls.
    predicted = predicted_throttle_rate(calls_per_sec, channels, calls_per_session=1)
    print(
        f"\n{FLEET_PROCESSES} brokers, {calls_per_sec:g} calls/s over {channels} channels for {overlap:.1f} s:"
        f" {served} served, {throttles} throttles, {throttles_per_call:.4f} per call"
        f" ({'below' if throttles_per_call < 0.02 else 'NOT below'} 0.02; model {predicted:.4f});"
        f" slowest call {max(r['max_ms'] for r in reports):.0f} ms; slowest worker ready after {slowest_start:.1f} s"
    )
    assert throttles_per_call < FLEET_MAX_THROTTLES_PER_CALL

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

import pytest

from broker.core import IceBroker
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


def test_four_broker_processes_at_80_percent_of_the_pool_see_no_failures(emulator: KvsEmulator) -> None:
    arns = emulator.create_channels(3)
    capacity = 3 * 5.0
    processes = 4
    rate = 0.8 * capacity / processes
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.broker_load_worker",
                f"--arns={','.join(arns)}",
                f"--rate={rate}",
                "--duration=6",
                f"--seed={seed}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(processes)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    failures = [failure for report in reports for failure in report["failures"]]
    assert failures == []
    ok = sum(report["ok"] for report in reports)
    assert ok > 0.5 * rate * processes * 6  # Poisson load actually ran
    throttles = operation_total(emulator, ICE, "throttled")
    assert throttles == sum(report["throttles"] for report in reports)  # every throttle was absorbed
    assert operation_total(emulator, ICE, "served") == ok
    print(f"\n4 brokers x {rate:g} calls/s over 3 channels: {ok} served, {throttles} throttles absorbed")

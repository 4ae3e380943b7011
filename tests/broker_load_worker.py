"""One broker process of the multi-instance load test: open-loop Poisson load, JSON result on stdout.

Run by ``tests/test_broker_load.py`` as ``python -m tests.broker_load_worker``; the environment
points boto3 at the KVS emulator. Each process is a fresh interpreter with its own broker and
limiter, as a Lambda instance or an agent's microVM is. ``--start-at`` makes processes that start at
different speeds load the pool at the same time.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import BrokerError


def main() -> None:
    """Send ``--rate`` calls per second for ``--duration`` seconds and report what happened."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--arns", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start-at",
        type=float,
        default=None,
        help="wall-clock time (time.time()) at which to begin the load; default: at once",
    )
    args = parser.parse_args()
    broker = IceBroker(BrokerConfig(channel_arns=tuple(args.arns.split(",")), region="us-east-1"))
    rng = random.Random(args.seed)
    lock = threading.Lock()
    failures: list[str] = []
    latencies: list[float] = []

    def call() -> None:
        start = time.monotonic()
        try:
            broker.get_ice_servers()
        except BrokerError as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            latencies.append(time.monotonic() - start)

    ready_at = time.time()
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    load_started = time.time()
    with ThreadPoolExecutor(max_workers=32) as pool:
        end = time.monotonic() + args.duration
        next_at = time.monotonic()
        while True:
            next_at += rng.expovariate(args.rate)
            if next_at >= end:
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
            pool.submit(call)
        # The Poisson load lasts until `end` even though no call falls in its last gap.
        time.sleep(max(0.0, end - time.monotonic()))
        load_ended = time.time()  # the pool's shutdown then waits for the last answers
    latencies.sort()
    stats = broker.stats()
    print(
        json.dumps(
            {
                "ok": len(latencies),
                "failures": failures,
                "throttles": stats.throttles,
                "kvs_calls": stats.kvs_calls,
                "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
                "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
                "ready_at": ready_at,
                "load_started": load_started,
                "load_ended": load_ended,
            }
        )
    )


if __name__ == "__main__":
    main()

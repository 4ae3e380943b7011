"""Benchmark: TURN credentials per session, three ways, against the KVS emulator with added latency.

(a) ``naive``: the per-connection flow of public samples: new boto3 clients, then
    ``DescribeSignalingChannel``, ``GetSignalingChannelEndpoint`` and ``GetIceServerConfig`` every time;
(b) ``per_session``: the broker, fresh credentials per call (endpoints cached, clients reused);
(c) ``shared``: the broker reusing one credential set per channel until it nears expiry.

Per mode: p50/p99 latency of single calls paced well under the pool's capacity, and the sustained
rate under saturation (many concurrent callers) with the throttles the emulator returned. The
sustained rate is measured at the server from the emulator's arrival times (see
:func:`server_side_rate`).

    python -m bench.broker --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.emulator_process import emulator_process
from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import BrokerError

ICE = "GetIceServerConfig"
LIMIT = 5
NAIVE_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})


def percentile(samples: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return round(ordered[index] * 1000, 3)


def admin(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the emulator's admin API."""
    data = None if body is None else json.dumps(body).encode()
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark only talks to a loopback emulator, not {url}")
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(f"{url}/_emulator/{path}", data=data, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (checked above)
        return json.loads(response.read() or b"null")


def naive_flow(arn: str) -> None:
    """Mint TURN credentials the way per-connection samples do: everything from scratch."""
    session = boto3.session.Session()
    control = session.client("kinesisvideo", config=NAIVE_CONFIG)
    control.describe_signaling_channel(ChannelARN=arn)
    endpoints = control.get_signaling_channel_endpoint(
        ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS"], "Role": "MASTER"}
    )["ResourceEndpointList"]
    https = next(e["ResourceEndpoint"] for e in endpoints if e["Protocol"] == "HTTPS")
    signaling = session.client("kinesis-video-signaling", endpoint_url=https, config=NAIVE_CONFIG)
    signaling.get_ice_server_config(ChannelARN=arn, Service="TURN")


def paced_latencies(call: Callable[[int], object], samples: int, interval: float) -> tuple[list[float], int]:
    """Time ``samples`` single calls, one every ``interval`` seconds. Returns (latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    next_at = time.monotonic()
    for index in range(samples):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        start = time.monotonic()
        try:
            call(index)
        except (ClientError, BrokerError):
            failures += 1
            continue
        latencies.append(time.monotonic() - start)
    return latencies, failures


def saturate(call: Callable[[int], object], threads: int, seconds: float) -> tuple[int, int]:
    """Run ``threads`` callers back to back for ``seconds``. Returns (successes, failures)."""
    stop_at = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def loop(index: int) -> None:
        while time.monotonic() < stop_at:
            try:
                call(index)
                outcome = 0
            except (ClientError, BrokerError):
                outcome = 1
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts[0], counts[1]


def server_side_rate(url: str, arns: tuple[str, ...]) -> float:
    """Sustained ``GetIceServerConfig`` rate seen by the emulator, summed over channels.

    Per channel, ``LIMIT / mean(arrival[i + LIMIT] - arrival[i])``: the time it takes for a slot of
    the window to be used again. Unlike a count over the phase, it is not biased by the free burst
    at the start or by a partial burst of callers still waiting when the phase ends.
    """
    channels = admin(url, "calls")["channels"]
    rate = 0.0
    for arn in arns:
        arrivals = sorted(channels.get(arn, {}).get(ICE, []))
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[LIMIT:], strict=False)]
        if gaps and statistics.fmean(gaps) > 0:
            rate += LIMIT / statistics.fmean(gaps)
    return rate


def throttles(url: str) -> int:
    """``ClientLimitExceededException`` answers the emulator gave, all operations together."""
    return sum(op.get("throttled", 0) for op in admin(url, "stats")["operations"].values())


def measure(
    name: str,
    call: Callable[[int], object],
    url: str,
    arns: tuple[str, ...],
    *,
    samples: int,
    interval: float,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """Latency phase then saturation phase for one mode, counters reset around each."""
    print(f"[bench] {name}: {samples} paced calls...", file=sys.stderr)
    admin(url, "reset", {})
    latencies, paced_failures = paced_latencies(call, samples, interval)
    paced_throttles = throttles(url)
    print(f"[bench] {name}: {threads} callers for {seconds:g} s...", file=sys.stderr)
    time.sleep(1.1)  # let the rate windows of the paced phase pass
    admin(url, "reset", {})
    ok, failed = saturate(call, threads, seconds)
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "samples": len(latencies),
        "paced_failures": paced_failures,
        "paced_throttles": paced_throttles,
        "sustained_calls_per_sec": round(server_side_rate(url, arns), 2),
        "saturation_successes": ok,
        "saturation_failures": failed,
        "saturation_throttles": throttles(url),
    }


def run(channels: int, latency_ms: float, samples: int, seconds: float, threads: int) -> dict[str, Any]:
    """Run all three modes in one emulator and return the report."""
    with emulator_process(["--channels", str(channels), "--latency-ms", str(latency_ms)]) as emulator:
        arns, url = emulator.channel_arns, emulator.url
        capacity = LIMIT * channels
        interval = 2.0 / capacity  # half the pool's capacity: latency, not queueing, is measured

        signaling = boto3.session.Session().client("kinesis-video-signaling", endpoint_url=url, config=NAIVE_CONFIG)
        admin(url, "reset", {})
        rtt, _ = paced_latencies(
            lambda i: signaling.get_ice_server_config(ChannelARN=arns[i % channels], Service="TURN"),
            samples,
            interval,
        )
        time.sleep(1.1)

        per_session = IceBroker(BrokerConfig(channel_arns=arns, region="us-east-1", max_wait_seconds=30))
        shared = IceBroker(BrokerConfig(channel_arns=arns, region="us-east-1", credential_reuse="shared"))
        per_session.get_ice_servers()  # warm: endpoint lookups and clients, as in a warm Lambda
        shared.get_ice_servers()
        time.sleep(1.1)

        modes = {
            "naive": measure(
                "naive", lambda i: naive_flow(arns[i % channels]), url, arns,
                samples=samples, interval=interval, threads=min(threads, 16), seconds=seconds,
            ),
            "per_session": measure(
                "per_session", lambda _: per_session.get_ice_servers(), url, arns,
                samples=samples, interval=interval, threads=threads, seconds=seconds,
            ),
            "shared": measure(
                "shared", lambda _: shared.get_ice_servers(), url, arns,
                samples=samples, interval=interval / 10, threads=threads, seconds=seconds,
            ),
        }  # fmt: skip
    naive, b, c = modes["naive"], modes["per_session"], modes["shared"]
    rtt_p50 = percentile(rtt, 0.5)
    for mode in (b, c):
        mode["p50_speedup_vs_naive"] = round(naive["p50_ms"] / mode["p50_ms"], 2) if mode["p50_ms"] else None
        mode["p99_speedup_vs_naive"] = round(naive["p99_ms"] / mode["p99_ms"], 2) if mode["p99_ms"] else None
    b["sustained_fraction_of_capacity"] = round(b["sustained_calls_per_sec"] / capacity, 4)
    return {
        "benchmark": "broker",
        "channels": channels,
        "capacity_calls_per_sec": capacity,
        "emulator_latency_ms": latency_ms,
        "emulator_round_trip_p50_ms": rtt_p50,
        "modes": modes,
        "targets": {
            "per_session_p50_within_round_trip_plus_5ms": b["p50_ms"] <= rtt_p50 + 5,
            "per_session_at_least_3x_faster_than_naive": b["p50_speedup_vs_naive"] >= 3,
            "shared_p99_under_2ms": c["p99_ms"] < 2,
            "per_session_sustained_at_least_95pct_of_capacity": b["sustained_fraction_of_capacity"] >= 0.95,
            "per_session_zero_throttles": b["saturation_throttles"] == 0 and b["paced_throttles"] == 0,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the report. Exit 1 with ``--check`` if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON (the default is also JSON)")
    parser.add_argument("--channels", type=int, default=4, help="channels in the pool (default %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="latency the emulator adds (default 30)")
    parser.add_argument("--samples", type=int, default=60, help="paced calls per mode (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="saturation phase length (default 6)")
    parser.add_argument("--threads", type=int, default=64, help="concurrent callers (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.channels < 1 or args.samples < 2 or args.seconds <= 1 or args.threads < 1 or args.latency_ms < 0:
        parser.exit(2, "error: --channels >= 1, --samples >= 2, --seconds > 1, --threads >= 1, --latency-ms >= 0\n")
    report = run(args.channels, args.latency_ms, args.samples, args.seconds, args.threads)
    print(json.dumps(report, indent=2))
    return 1 if args.check and not all(report["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

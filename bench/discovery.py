"""Benchmark: what finding the pool costs a cold start, by pool size, both ways.

- ``TURN_CHANNEL_PREFIX`` alone: one ``ListSignalingChannels`` call for up to 10,000 channels. Per
  pool size, against the KVS emulator in its own process with added latency, this times that call
  through the broker's own code (a warm botocore client, as at the end of the Lambda's init) and
  reports it with the added latency taken off, which leaves what the pool's size costs: the
  response's bytes and botocore's parsing. Each channel's endpoint is then still to be looked up.
- ``TURN_POOL_MANIFEST_SECRET_ARN`` (the deployed stack): one ``GetSecretValue`` round trip on the
  Secrets Manager client the broker already has, then parsing the manifest and pinning every
  endpoint, timed here (the round trip is not: no Secrets Manager runs here to time).

    python -m bench.discovery --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import botocore.session

from bench.emulator_process import emulator_process
from broker.kvs import KvsSignaling
from broker.pool_manifest import PoolManifest

PREFIX = "Stack-turn"
LIST_TPS = 50
"""ListSignalingChannels allows 50 calls per second per account: the samples are paced under it."""


def measure(channels: int, *, latency_ms: float, samples: int) -> dict[str, Any]:
    """Time ``samples`` listings of a pool of ``channels``."""
    args = ["--channels", str(channels), "--channel-prefix", PREFIX, "--latency-ms", str(latency_ms)]
    with emulator_process(args):
        kvs = KvsSignaling(region="us-east-1", session=botocore.session.Session())
        found = kvs.list_channel_arns(f"{PREFIX}-")  # warms the connection
        if len(found) != channels:
            raise RuntimeError(f"listed {len(found)} channels of {channels}")
        times: list[float] = []
        for _ in range(samples):
            time.sleep(1 / LIST_TPS)
            started = time.perf_counter()
            kvs.list_channel_arns(f"{PREFIX}-")
            times.append((time.perf_counter() - started) * 1000)
        manifest = PoolManifest(endpoints={arn: kvs.endpoint(arn) for arn in found}).to_json()
    reads: list[float] = []
    for _ in range(samples):
        fresh = KvsSignaling(region="us-east-1", session=botocore.session.Session())  # made at init anyway
        started = time.perf_counter()
        fresh.pin_endpoints(PoolManifest.from_json(manifest).endpoints)
        reads.append((time.perf_counter() - started) * 1000)
    times.sort()
    p50 = statistics.median(times)
    return {
        "channels": channels,
        "list_ms": {"p50": round(p50, 2), "max": round(times[-1], 2)},
        "beyond_latency_ms": round(p50 - latency_ms, 2),
        "manifest_bytes": len(manifest.encode()),
        "manifest_parse_ms": {"p50": round(statistics.median(reads), 2), "max": round(max(reads), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; JSON on stdout with ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="15,300,1500", help="pool sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="emulator latency (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=15, help="listings per size (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    results = [measure(size, latency_ms=args.latency_ms, samples=args.samples) for size in sizes]
    report = {"latency_ms": args.latency_ms, "pools": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for result in results:
            print(
                f"{result['channels']:>6} channels: ListSignalingChannels p50 {result['list_ms']['p50']} ms "
                f"({result['beyond_latency_ms']} ms beyond the {args.latency_ms:g} ms latency); manifest "
                f"{result['manifest_bytes']} bytes, parsed and pinned in {result['manifest_parse_ms']['p50']} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

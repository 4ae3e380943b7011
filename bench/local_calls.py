"""Benchmark: how fast local calls come up through the coturn relay (``make local``'s whole system).

Starts ``python -m local`` on free loopback ports, then makes calls one after another with the aiortc
client (relay candidates only, as in the tests): ``/start`` latency, offer to connected, and offer to
the first audible frame of the agent's greeting; then the same with several calls at once.

    python -m bench.local_calls --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.emulator_process import ROOT
from local.call_client import Call
from local.coturn import free_port


@contextmanager
def local_system(channels: int) -> Iterator[str]:
    """Run ``python -m local`` until the block ends; yield its URL."""
    ports = [free_port() for _ in range(4)]
    with tempfile.TemporaryDirectory(prefix="bench-local-") as logs:
        process = subprocess.Popen(
            [sys.executable, "-m", "local", f"--port={ports[0]}", f"--kvs-port={ports[1]}", f"--turn-port={ports[2]}",
             f"--agent-port={ports[3]}", f"--channels={channels}", f"--log-dir={logs}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            for line in process.stdout or ():
                if line.startswith("Ctrl-C"):
                    break
            if process.poll() is not None:
                raise RuntimeError(f"python -m local failed: {process.stderr.read() if process.stderr else ''}")
            yield f"http://127.0.0.1:{ports[0]}"
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


async def one_call(url: str, hold: float) -> dict[str, float]:
    """One call: timings in milliseconds."""
    call = Call(url, relay_only=True)
    try:
        times = await call.connect(timeout=60)
        if times.selected_pair != ("relay", "relay"):
            raise RuntimeError(f"the call did not go through the relay: {times.selected_pair}")
        peer = call.peer
        if peer is None:
            raise RuntimeError("no peer")
        await peer.wait_for(lambda: peer.first_speech_after(call.offered_at) is not None, 30, "the greeting")
        first = peer.first_speech_after(call.offered_at) or 0.0
        await asyncio.sleep(hold)
        return {
            "start_ms": times.start_seconds * 1000,
            "connect_ms": times.connect_seconds * 1000,
            "first_audio_ms": (first - call.offered_at) * 1000,
        }
    finally:
        await call.close()


def summary(samples: list[float]) -> dict[str, float]:
    """p50/p95/max of millisecond samples."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "max": round(ordered[-1], 1)}


async def measure(url: str, sequential: int, concurrent: int) -> dict[str, Any]:
    """Sequential calls, then ``concurrent`` at once."""
    alone = [await one_call(url, hold=0.5) for _ in range(sequential)]
    together = await asyncio.gather(*(one_call(url, hold=1.0) for _ in range(concurrent)))
    report: dict[str, Any] = {}
    for name, runs in (("sequential", alone), ("concurrent", list(together))):
        report[name] = {"calls": len(runs), **{key: summary([r[key] for r in runs]) for key in runs[0]}}
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.local_calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--calls", type=int, default=10, help="sequential calls (default %(default)s)")
    parser.add_argument("--concurrent", type=int, default=10, help="calls at once (default %(default)s)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrent < 1:
        parser.exit(2, "error: --calls and --concurrent must be >= 1\n")
    channels = max(2, -(-2 * args.concurrent // 5))  # two GetIceServerConfig calls per call, 5/s per channel
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.monotonic()
    with local_system(channels) as url:
        report = asyncio.run(measure(url, args.calls, args.concurrent))
    print(json.dumps({"benchmark": "local_calls", "channels": channels, **report,
                      "seconds": round(time.monotonic() - started, 1)}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the broker Lambda's cold-start import time and its warm per-request overhead.

- ``import``: a fresh interpreter imports ``broker.lambda_handler`` (Powertools, botocore, the
  botocore clients, the resolver) from a Lambda-like directory: only ``broker/requirements-lambda.txt``
  (this machine's wheels of the same versions) and ``broker/``, compiled and trimmed as the CDK
  bundle is, with no site-packages. Variants: as deployed (no active tracing), with X-Ray active
  tracing, without bytecode (what a bundle without ``.pyc`` would cost on Lambda's read-only
  filesystem), with the garbage collector left on during initialisation, and with all of botocore's
  data. Samples of all variants are interleaved, so the machine's drift hits them alike, and each
  variant is also reported as a ratio to the deployed one. Each sample is timed inside the
  interpreter around the import alone. Target: under 300 ms (the deployed variant's median).
- ``warm``: ``handler(event, context)`` for ``/start``, the offer and the candidates, with KVS and the
  agent replaced by instant in-process stand-ins, so what is timed is the API's own work: routing,
  validation, session binding, logging and metrics. Target: under 2 ms.

    python -m bench.api --json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.emulator_process import DUMMY_AWS_ENV, ROOT
from broker.ice import IceServer, IceServerSet

ARNS = ",".join(
    f"arn:aws:kinesisvideo:us-east-1:123456789012:channel/turn-pool-{i}/17000000000{i:02d}" for i in range(4)
)
LAMBDA_ENV = {
    **DUMMY_AWS_ENV,
    "TURN_CHANNEL_ARNS": ARNS,
    "AGENT_INVOKER": "agentcore",
    "AGENT_RUNTIME_ARN": "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/voice_agent-AbCdEf1234",
    "SESSION_SIGNING_KEY": "bench-session-signing-key-0123456789abcdef",
    "AWS_LAMBDA_FUNCTION_NAME": "broker",
    "POWERTOOLS_METRICS_NAMESPACE": "bench",
}
IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import broker.lambda_handler; print((time.perf_counter() - t) * 1000)"
)
# The entry point pauses the garbage collector during initialisation; this variant makes that a no-op.
COLLECTOR_ON_PROBE = "import gc; gc.disable = lambda: None; " + IMPORT_PROBE
OFFER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=setup:actpass\r\n"
)


def lambda_like_directory(*, compiled: bool, trimmed: bool = True) -> Path:
    """The handler's code as Lambda sees it: pinned Lambda requirements and ``broker/``, nothing else.

    ``compiled`` and ``trimmed`` (botocore's data for the broker's services only) are what the CDK
    bundle does. Dependencies are installed once per requirements file under ``.make/bench-lambda/``.
    """
    from stacks.lambda_bundle import compile_bytecode, keep_botocore_services  # noqa: PLC0415 (the bundler's steps)

    requirements = ROOT / "broker" / "requirements-lambda.txt"
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    cache = ROOT / ".make" / "bench-lambda" / key
    if not cache.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="installing-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(staging),
             "-r", str(requirements)],
            check=True,
        )  # fmt: skip
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging, cache)
    target = Path(tempfile.mkdtemp(prefix="lambda-like-"))
    shutil.copytree(cache, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "broker", target / "broker", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if trimmed:
        keep_botocore_services(target)
    if compiled:
        compile_bytecode(target)
    return target


@dataclass(frozen=True)
class Variant:
    """One way to import the handler: from which directory, with which probe, traced or not."""

    code: Path
    probe: str = IMPORT_PROBE
    tracing: bool = False


def import_once(variant: Variant) -> float:
    """Milliseconds to import the handler module in a fresh interpreter."""
    env = {**LAMBDA_ENV, "PYTHONPATH": str(variant.code), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]}
    if variant.tracing:
        env["AWS_XRAY_DAEMON_ADDRESS"] = "127.0.0.1:2000"  # what Lambda sets with active tracing
    run = subprocess.run(
        [sys.executable, "-S", "-c", variant.probe],
        cwd=variant.code,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(run.stdout.strip().splitlines()[-1])


def import_times(variants: Mapping[str, Variant], samples: int) -> dict[str, list[float]]:
    """``samples`` import times per variant, taken round-robin so the machine's drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(samples):
        for name, variant in variants.items():
            times[name].append(import_once(variant))
    return times


class InstantIce:
    """ICE servers with no KVS call, to time the API alone."""

    def get_ice_servers(self) -> IceServerSet:
        """Return a fixed set at once."""
        server = IceServer(urls=("turn:127.0.0.1:3478?transport=udp",), username="1:u", credential="c")
        return IceServerSet(servers=(server, server), expires_at=time.time() + 300, channel_arn="arn", kvs_calls=1)


class InstantAgent:
    """An agent that answers at once, to time the API alone."""

    def invoke(self, session_id: str, payload: Mapping[str, Any], *, timeout: float) -> Iterator[dict[str, Any]]:
        """Yield the answer (or the candidates' acknowledgement) at once."""
        if payload["type"] == "offer":
            yield {"type": "answer", "data": {"sdp": OFFER_SDP, "type": "answer", "pc_id": "pc-1"}}
        else:
            yield {"type": "ice-candidates", "data": {"status": "success"}}


def warm_overhead(iterations: int) -> dict[str, dict[str, float]]:
    """p50/p99 milliseconds of ``handler`` per route with instant KVS and agent."""
    os.environ.update(LAMBDA_ENV)
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    sink = io.StringIO()
    with redirect_stdout(sink):
        import broker.lambda_app as module  # noqa: PLC0415 (after the environment is set)
    from local.broker_api import http_api_event  # noqa: PLC0415

    module.service.ice = InstantIce()
    module.service.agent = InstantAgent()

    class Context:
        function_name = "broker"
        memory_limit_in_mb = 1024
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:broker"
        aws_request_id = "bench"

    def event(method: str, path: str, body: object) -> dict[str, Any]:
        return http_api_event(
            method, path, headers={"content-type": "application/json"}, body=json.dumps(body).encode(),
            claims={"sub": "bench-user"}, source_ip="198.51.100.7",
        )  # fmt: skip

    def timed(make: Any) -> dict[str, float]:
        samples = []
        for _ in range(iterations):
            request = make()
            with redirect_stdout(sink):
                start = time.perf_counter()
                response = module.handler(request, Context())
                samples.append((time.perf_counter() - start) * 1000)
            if response["statusCode"] != 200:
                raise RuntimeError(f"benchmark request failed: {response['body']}")
            sink.seek(0)
            sink.truncate()
        samples.sort()
        return {"p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(0.99 * len(samples))], 3)}

    with redirect_stdout(sink):
        session = json.loads(module.handler(event("POST", "/start", {}), Context())["body"])["sessionId"]
    path = f"/sessions/{session}/api/offer"
    candidates = {"pc_id": "pc-1", "candidates": [{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}] * 4}
    return {
        "start": timed(lambda: event("POST", "/start", {"transport": "webrtc"})),
        "offer": timed(lambda: event("POST", path, {"sdp": OFFER_SDP, "type": "offer", "pc_id": None})),
        "candidates": timed(lambda: event("PATCH", path, candidates)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print the report as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--import-samples", type=int, default=7, help="fresh interpreters per variant (7)")
    parser.add_argument("--iterations", type=int, default=2000, help="warm requests per route (2000)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.import_samples < 1 or args.iterations < 10:
        parser.exit(2, "error: --import-samples >= 1 and --iterations >= 10\n")
    deployed = lambda_like_directory(compiled=True)
    sources = lambda_like_directory(compiled=False)
    untrimmed = lambda_like_directory(compiled=True, trimmed=False)
    variants = {
        "as_deployed": Variant(deployed),
        "with_xray_active_tracing": Variant(deployed, tracing=True),
        "without_bytecode": Variant(sources),
        "collector_on_during_init": Variant(deployed, probe=COLLECTOR_ON_PROBE),
        "all_botocore_data": Variant(untrimmed),
    }
    try:
        times = import_times(variants, args.import_samples)
    finally:
        for directory in (deployed, sources, untrimmed):
            shutil.rmtree(directory)
    warm = warm_overhead(args.iterations)

    deployed_p50 = statistics.median(times["as_deployed"])

    def summary(samples: list[float]) -> dict[str, float]:
        p50 = statistics.median(samples)
        return {"p50": round(p50, 1), "min": round(min(samples), 1), "max": round(max(samples), 1),
                "ratio_to_deployed": round(p50 / deployed_p50, 3)}  # fmt: skip

    targets = {
        "import_under_300ms": deployed_p50 < 300,
        "warm_overhead_under_2ms": all(route["p50_ms"] < 2 for route in warm.values()),
    }
    report = {
        "benchmark": "api",
        "import_samples": args.import_samples,
        "import_ms": {name: summary(samples) for name, samples in times.items()},
        "warm_overhead_ms": warm,
        "targets": targets,
    }
    print(json.dumps(report, indent=2))
    return 1 if args.check and not all(targets.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

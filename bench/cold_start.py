"""Benchmark: the agent's cold start, from process start to ``/ping``, the first answer and the first word.

In AWS every session starts a fresh agent process in its own microVM, so the agent's start-up is part
of every caller's first word. Each run starts ``python -m agent`` in a fresh interpreter on a free
loopback port, with the environment local mode gives it (``AGENT_ICE_SERVERS=none``, loopback host
candidates, offline AWS settings), polls ``GET /ping`` until it answers, then POSTs a real aiortc SDP
offer to ``/invocations`` as the broker does, and times from just before the process was spawned:

- ``ping_ms``: ``/ping`` answers;
- ``agent_cold_start_ms``: the answer to the offer arrives (the figure the broker waits for);
- ``pipeline_ready_ms``: the agent logs that the first call's pipeline is built;
- ``first_audio_ms`` (``local`` only): the peer, connected with the answer, hears the greeting.

``nova-sonic`` runs with static fake credentials and its model endpoint on a closed loopback port,
so nothing reaches AWS (and it cannot speak). The agent's code (``agent/`` and ``broker/``) is copied
into a temporary tree, as the image copies it, twice: as sources alone (compiled at every start, as
with ``PYTHONDONTWRITEBYTECODE=1``) and with the bytecode the image's build compiles; runs alternate
between the trees, so their ratio compares like with like (``bytecode.compile_all_ms``, compiling
every source here, is the most the bytecode can save a start). ``--baseline`` adds an older checkout's
agent to the rotation. One more run per pipeline under ``-X importtime`` gives the import breakdown,
before the answer and in all (that option's own overhead inflates it a little).

    python -m bench.cold_start --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from agent.ice import gather_loopback_host_candidates_only
from bench.emulator_process import ROOT
from local import OFFLINE_AWS_ENV
from local.call_client import Peer
from local.coturn import free_port

PIPELINES: Final = ("nova-sonic", "local")
SPEAKING: Final = frozenset({"local"})
"""Pipelines that greet the caller offline, so that their first word can be timed."""
PACKAGES: Final = ("agent", "broker")
"""What the image copies of this repository (see agent/Dockerfile)."""
COMPILE: Final = ("-m", "compileall", "-q", "--invalidation-mode", "checked-hash")
"""The Dockerfile's compile step, between the interpreter and the directories."""
FIGURES: Final = ("ping_ms", "agent_cold_start_ms", "pipeline_ready_ms", "first_audio_ms")
WATCHED_IMPORTS: Final = (
    "agent.server",
    "bedrock_agentcore",
    "boto3",
    "aiortc",
    "av",
    "agent.bot",
    "pipecat.pipeline.worker",
    "onnxruntime",
    "agent.pipelines.local",
    "agent.local_speech",
    "agent.pipelines.nova_sonic",
    "aws_sdk_bedrock_runtime.client",
)
"""Modules whose cumulative import time the breakdown reports, when the process imports them."""
TARGET_MS: Final = 500.0
TIMEOUT: Final = 60.0
POLL_SECONDS: Final = 0.002
LOG_POLL_SECONDS: Final = 0.01
"""The log is read more lazily than ``/ping`` is polled: this process shares the agent's CPUs."""


@dataclass(frozen=True)
class ColdStart:
    """One fresh agent process, timed in milliseconds from just before it was spawned."""

    ping_ms: float
    agent_cold_start_ms: float
    pipeline_ready_ms: float | None
    first_audio_ms: float | None
    answer_candidates: int
    log_offset_at_answer: int


def agent_tree(source: Path, destination: Path, *, compiled: bool) -> Path:
    """Copy ``agent/`` and ``broker/`` of ``source`` without bytecode; compile them as the image does."""
    for package in PACKAGES:
        shutil.copytree(source / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    if compiled:
        subprocess.run([sys.executable, *COMPILE, *PACKAGES], cwd=destination, check=True)
    return destination


def ephemeral_ports_start() -> int:
    """Where this machine's ephemeral (client) ports begin (Linux's default when it cannot tell)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def quiet_port() -> int:
    """A free loopback port below the ephemeral range.

    The bench polls the agent's port before the agent listens: a port in the ephemeral range can be
    taken by one of those very connections (the agent then cannot bind it) or connect a socket to
    itself. ``local.coturn.free_port`` draws up to 40000, which is inside Linux's default range.
    """
    start = ephemeral_ports_start()
    for _ in range(200):
        if (port := free_port()) < start:
            return port
    raise RuntimeError(f"no free loopback port below the ephemeral range, which starts at {start}")


def agent_env(pipeline: str, port: int) -> dict[str, str]:
    """The agent's environment: local mode's settings, offline AWS, and nothing of this shell's."""
    from agent.pipelines.nova_sonic import ENDPOINT_VARIABLE  # noqa: PLC0415 - Pipecat: not for --help

    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AGENT_", "AWS_", "TURN_")) and name not in ("PYTHONPATH", "PYTHONSTARTUP")
    }
    return {
        **inherited,
        **OFFLINE_AWS_ENV,
        "PYTHONDONTWRITEBYTECODE": "1",  # as in the image: nothing a run compiles helps the next one
        "AWS_REGION": "us-east-1",
        "AGENT_PIPELINE": pipeline,
        "AGENT_HOST": "127.0.0.1",
        "AGENT_PORT": str(port),
        "AGENT_ICE_SERVERS": "none",
        "AGENT_ICE_HOST_CANDIDATES": "loopback",
        # Nova Sonic opens its model session as its call starts: a closed loopback port refuses it.
        ENDPOINT_VARIABLE: f"https://127.0.0.1:{quiet_port()}",
    }


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _log_tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


def _wait_for_ping(port: int, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited with {process.returncode}: {_log_tail(log)}")
        try:
            status, body = _request(port, "GET", "/ping")
        except OSError:  # not listening yet
            time.sleep(POLL_SECONDS)
            continue
        if status == 200 and json.loads(body)["status"] in ("Healthy", "HealthyBusy"):
            return
        raise RuntimeError(f"/ping answered {status}: {body[:200]!r}")
    raise RuntimeError(f"the agent did not answer /ping within {TIMEOUT:g} s")


def _wait_for_log(path: Path, marker: bytes, process: subprocess.Popen[bytes]) -> float:
    """Wait until the log at ``path`` holds ``marker``; return when it was seen (``perf_counter``)."""
    deadline = time.monotonic() + TIMEOUT
    with path.open("rb") as log:
        seen = b""
        while marker not in seen:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent never logged {marker.decode()!r}: {_log_tail(log)}")
            chunk = log.read()
            if chunk:
                seen = seen[-len(marker) :] + chunk
            else:
                time.sleep(LOG_POLL_SECONDS)
    return time.perf_counter()


async def _nothing() -> None:
    return None


def _answer(events_text: str, pipeline: str) -> dict[str, Any]:
    """The answer event's data, after checking the stream is a started call of ``pipeline``."""
    events = [json.loads(line[len("data: ") :]) for line in events_text.splitlines() if line.startswith("data: ")]
    if [event["type"] for event in events] != ["status", "answer", "progress"]:
        raise RuntimeError(f"the offer was not answered: {events}")
    answer: dict[str, Any] = events[1]["data"]
    progress = events[2]["data"]
    if progress != {"state": "call-started", "pc_id": answer["pc_id"], "pipeline": pipeline}:
        raise RuntimeError(f"unexpected progress event: {progress}")
    return answer


async def cold_start(
    tree: Path, pipeline: str, log_path: Path, *, python_options: Sequence[str] = (), logs_ready: bool = True
) -> ColdStart:
    """Start one agent from ``tree``; time ``/ping``, the answer, its pipeline and its greeting; stop it.

    ``logs_ready`` is false for an agent older than its :data:`~agent.server.PIPELINE_READY` line.
    """
    from agent.server import PIPELINE_READY  # noqa: PLC0415 - Pipecat: not for --help

    peer = Peer()
    port = quiet_port()
    env = agent_env(pipeline, port)
    try:
        offer = await peer.offer(trickle=False)  # its candidates in the SDP: the answer alone connects
        body = json.dumps({"type": "offer", "data": offer}).encode()
        with log_path.open("w+b") as log:
            spawned, spawned_monotonic = time.perf_counter(), time.monotonic()
            process = subprocess.Popen(
                [sys.executable, *python_options, "-m", "agent"], cwd=tree, env=env, stdout=log, stderr=log
            )
            marker = (PIPELINE_READY % pipeline).encode()
            ready: asyncio.Future[float | None] = asyncio.ensure_future(
                asyncio.to_thread(_wait_for_log, log_path, marker, process) if logs_ready else _nothing()
            )
            try:
                await asyncio.to_thread(_wait_for_ping, port, process, log)
                pinged = time.perf_counter()
                status, events = await asyncio.to_thread(_request, port, "POST", "/invocations", body)
                answered = time.perf_counter()
                offset = os.fstat(log.fileno()).st_size
                if status != 200:
                    raise RuntimeError(f"/invocations answered {status}")
                answer = _answer(events.decode(), pipeline)
                await peer.accept(answer)  # aiortc refuses an answer that does not match its offer
                built = await ready
                first_audio = None
                if pipeline in SPEAKING:
                    await peer.wait_for(lambda: peer.first_speech_after(0) is not None, TIMEOUT, "the greeting")
                    first_audio = ((peer.first_speech_after(0) or 0.0) - spawned_monotonic) * 1000
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                with contextlib.suppress(RuntimeError):  # it gives up once the process has exited
                    await ready
    finally:
        await peer.close()
    return ColdStart(
        ping_ms=(pinged - spawned) * 1000,
        agent_cold_start_ms=(answered - spawned) * 1000,
        pipeline_ready_ms=(built - spawned) * 1000 if built is not None else None,
        first_audio_ms=first_audio,
        answer_candidates=sum(1 for line in answer["sdp"].splitlines() if line.startswith("a=candidate:")),
        log_offset_at_answer=offset,
    )


def summary(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95 of millisecond samples."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def import_breakdown(log_text: str, answer_offset: int, *, top: int) -> dict[str, Any]:
    """Parse ``-X importtime`` lines: totals before the answer and in all, watched modules, top packages."""
    cumulative: dict[str, float] = {}
    by_package: Counter[str] = Counter()
    before_answer_us = 0
    position = 0
    for line in log_text.splitlines(keepends=True):
        position += len(line.encode())
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        module = name.strip()
        by_package[module.split(".")[0]] += int(self_us)
        cumulative.setdefault(module, int(cumulative_us) / 1000)
        if position <= answer_offset:
            before_answer_us += int(self_us)
    return {
        "before_answer_ms": round(before_answer_us / 1000, 1),
        "total_ms": round(sum(by_package.values()) / 1000, 1),
        "modules_ms": {module: round(cumulative[module], 1) for module in WATCHED_IMPORTS if module in cumulative},
        "self_ms_by_package": {package: round(us / 1000, 1) for package, us in by_package.most_common(top)},
    }


def compile_cost(tree: Path) -> dict[str, float]:
    """What the image's bytecode can save a start at most: compiling every source of ``tree``, here."""
    sources = sorted(tree.rglob("*.py"))
    started = time.perf_counter()
    for source in sources:
        compile(source.read_bytes(), str(source), "exec")
    return {"sources": len(sources), "compile_all_ms": round((time.perf_counter() - started) * 1000, 1)}


def figures(runs: Sequence[ColdStart]) -> dict[str, dict[str, float]]:
    """p50/p95 of every figure the runs have."""
    report = {}
    for name in FIGURES:
        samples = [value for run in runs if (value := getattr(run, name)) is not None]
        if samples:
            report[name] = summary(samples)
    return report


def ratios(slower: Mapping[str, Any], faster: Mapping[str, Any]) -> dict[str, float]:
    """p50 over p50 of every figure both have."""
    both = [name for name in FIGURES if name in slower and name in faster]
    return {name: round(slower[name]["p50"] / faster[name]["p50"], 3) for name in both}


async def measure(pipelines: Sequence[str], runs: int, *, baseline: Path | None, top: int) -> dict[str, Any]:
    """Alternate the trees' cold starts for every pipeline, then one ``-X importtime`` run each."""
    gather_loopback_host_candidates_only()  # the bench's own peers offer 127.0.0.1, as the agent does
    with tempfile.TemporaryDirectory(prefix="bench-cold-start-") as work:
        trees = {
            "sources": agent_tree(ROOT, Path(work) / "sources", compiled=False),
            "bytecode": agent_tree(ROOT, Path(work) / "bytecode", compiled=True),
        }
        report: dict[str, Any] = {"bytecode": compile_cost(trees["sources"]), "pipelines": {}}
        if baseline is not None:
            trees["baseline"] = agent_tree(baseline, Path(work) / "baseline", compiled=True)
        log = Path(work) / "agent.log"
        for pipeline in pipelines:
            modes = [mode for mode in trees if mode != "baseline" or pipeline == "local"]
            samples: dict[str, list[ColdStart]] = {mode: [] for mode in modes}
            for _ in range(runs):
                for mode in modes:
                    samples[mode].append(await cold_start(trees[mode], pipeline, log, logs_ready=mode != "baseline"))
            traced = await cold_start(trees["bytecode"], pipeline, log, python_options=("-X", "importtime"))
            imports = import_breakdown(log.read_text(errors="replace"), traced.log_offset_at_answer, top=top)
            report["pipelines"][pipeline] = pipeline_report(samples, imports)
    return report


def pipeline_report(samples: Mapping[str, Sequence[ColdStart]], imports: Mapping[str, Any]) -> dict[str, Any]:
    """One pipeline's figures: the image's (bytecode) first, each tree's and their ratios after."""
    modes = {mode: figures(runs) for mode, runs in samples.items()}
    every_run = [run for runs in samples.values() for run in runs]
    report: dict[str, Any] = {
        **modes["bytecode"],
        "answered_offers": len(every_run),
        "answer_candidates_min": min(run.answer_candidates for run in every_run),
        "modes": modes,
        "sources_over_bytecode": ratios(modes["sources"], modes["bytecode"]),
    }
    if "baseline" in modes:
        report["baseline_over_bytecode"] = ratios(modes["baseline"], modes["bytecode"])
    report["imports"] = dict(imports)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.cold_start",
        description=__doc__.split("\n\n")[0],
        epilog="The top-level agent_cold_start_ms and ping_ms are the first pipeline's, with the image's "
        "bytecode; per pipeline, modes holds every tree's figures (p50/p95, ms from process start).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--runs", type=int, default=10, help="cold starts per pipeline and tree (default %(default)s)")
    parser.add_argument(
        "--pipelines", default=",".join(PIPELINES), help="comma-separated pipelines to start (default %(default)s)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of this repository (e.g. a git worktree of an older commit) whose agent is "
        "timed alongside, compiled the same way; local pipeline only, since an older nova-sonic agent may "
        "not honour AWS_ENDPOINT_URL_BEDROCK_RUNTIME and would reach AWS",
    )
    parser.add_argument("--top", type=int, default=12, help="packages in the import breakdown (default %(default)s)")
    args = parser.parse_args(argv)
    pipelines = [name for name in args.pipelines.split(",") if name]
    if args.runs < 1 or args.top < 1:
        parser.exit(2, "error: --runs and --top must be >= 1\n")
    if not pipelines or set(pipelines) - set(PIPELINES):
        parser.exit(2, f"error: --pipelines takes some of {', '.join(PIPELINES)}\n")
    if args.baseline is not None and not (args.baseline / "agent" / "__main__.py").is_file():
        parser.exit(2, f"error: --baseline {args.baseline} holds no agent/__main__.py\n")
    started = time.monotonic()
    report = asyncio.run(measure(pipelines, args.runs, baseline=args.baseline, top=args.top))
    headline = report["pipelines"][pipelines[0]]
    p50 = headline["agent_cold_start_ms"]["p50"]
    target = {"bound_ms": TARGET_MS, "value_ms": p50, "met": p50 < TARGET_MS}
    print(json.dumps({
        "benchmark": "cold_start",
        "pipeline": pipelines[0],
        "agent_cold_start_ms": headline["agent_cold_start_ms"],
        "ping_ms": headline["ping_ms"],
        "targets": {"agent_cold_start_p50_under_500ms": target},
        "runs": args.runs,
        **report,
        "seconds": round(time.monotonic() - started, 1),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

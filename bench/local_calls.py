"""Benchmark: how fast local calls come up and answer, over WebRTC (the coturn relay) and the WebSocket.

Starts ``python -m local`` on free loopback ports, then calls it with four clients, the terminal and
the browser clients over each transport:

- ``aiortc``: the terminal client (:mod:`local.call_client`, relay candidates only). Times count
  from sending ``POST /start`` (a browser's click): connected, and the greeting's first audible frame;
  then it says "how are you" and measures voice to voice, from its last loud frame sent to the
  answer's first loud frame received.
- ``websocket``: the terminal WebSocket client (:mod:`local.websocket_client`): ``/start`` with
  ``transport: "websocket"``, the presigned ``ws_url`` through local mode's AgentCore stand-in, then the
  same greeting and "how are you" as the aiortc client;
- ``browser_websocket``: the page over the WebSocket transport (``?transport=websocket``);
- ``browser``: Debian's Chromium on the offline call page with a fake microphone
  (:mod:`bench.browser_calls`): click to connected, click to the greeting's first audible sound at the
  page (an AudioWorklet on the agent's track), a phase breakdown, and voice to voice measured on the
  page's microphone and the agent's track.

Each client makes calls one after another, then several at once. Voice to voice is split into
stages with the agent's own turn measurement (VAD stop, STT, response, TTS, transport). While the
calls at once run, the cores each part of the system uses are measured (``concurrent.cpu``: the agent,
the Chromium pages, coturn, ...): on one machine the callers share the cores with what they call. Then
``changes`` measures, in the same run, what each latency fix gave (a ratio per change), and
``transports`` each client's WebSocket figures against its WebRTC ones.

    python -m bench.local_calls --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.call_figures import agent_turn_metrics, summarize, voice_stages
from bench.cpu_use import measured_cpu
from bench.emulator_process import ROOT
from local.call_client import Call
from local.call_common import Exchange, Heard
from local.coturn import free_port

CLIENTS = ("aiortc", "websocket", "browser", "browser_websocket")
"""The terminal clients over WebRTC (aiortc) and the WebSocket, then the page over each."""
PHRASE = "how are you"


@contextmanager
def local_system(channels: int) -> Iterator[str]:
    """Run ``python -m local`` until the block ends; yield its URL."""
    ports = [free_port() for _ in range(5)]
    with tempfile.TemporaryDirectory(prefix="bench-local-") as logs:
        process = subprocess.Popen(
            [sys.executable, "-m", "local", f"--port={ports[0]}", f"--kvs-port={ports[1]}", f"--turn-port={ports[2]}",
             f"--agent-port={ports[3]}", f"--agentcore-port={ports[4]}", f"--channels={channels}",
             f"--log-dir={logs}"],
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


def turn_figures(exchange: Exchange, heard: Heard) -> dict[str, float]:
    """Voice to voice of one turn, split into stages by the agent's own turn metrics that followed it.

    Raises:
        RuntimeError: The agent heard something else than :data:`PHRASE`.
    """
    if exchange.heard != PHRASE:
        raise RuntimeError(f"the agent heard {exchange.heard!r}, not {PHRASE!r}")
    total = exchange.voice_to_voice_seconds * 1000
    later = [m for (at, _), m in zip(heard.events, heard.messages, strict=True) if at >= exchange.spoken_until]
    return {"voice_to_voice_ms": total, **voice_stages(total, agent_turn_metrics(later))}


async def aiortc_call(url: str, *, speak: bool = True, trickle: bool = False) -> dict[str, float]:
    """One aiortc call: timings in milliseconds from sending ``/start``."""
    call = Call(url, relay_only=True, trickle=trickle)
    try:
        times = await call.connect(timeout=60)
        if times.selected_pair != ("relay", "relay"):
            raise RuntimeError(f"the call did not go through the relay: {times.selected_pair}")
        peer = call.peer
        if peer is None:
            raise RuntimeError("no peer")
        await peer.wait_for(lambda: peer.first_speech_after(call.started_at) is not None, 30, "the greeting")
        first = peer.first_speech_after(call.started_at) or 0.0
        figures = {
            "start_ms": times.start_seconds * 1000,
            "connect_ms": (call.offered_at - call.started_at + times.connect_seconds) * 1000,
            "first_audio_ms": (first - call.started_at) * 1000,
        }
        if speak:
            figures |= turn_figures(await call.say(PHRASE, timeout=60), peer)
        return {key: round(value, 1) for key, value in figures.items()}
    finally:
        await call.close()


async def websocket_call(url: str, *, speak: bool = True) -> dict[str, float]:
    """One call over the agent's WebSocket (the presigned ``ws_url``): timings in ms from ``/start``."""
    from local.websocket_client import WebSocketCall  # noqa: PLC0415 - Pipecat's protobufs only here

    call = WebSocketCall(url)
    try:
        times = await call.connect(timeout=60)
        heard = call.heard
        await heard.wait_for(lambda: heard.first_speech_after(call.started_at) is not None, 30, "the greeting")
        first = heard.first_speech_after(call.started_at) or 0.0
        figures = {
            "start_ms": times.start_seconds * 1000,
            "connect_ms": (times.start_seconds + times.connect_seconds) * 1000,
            "first_audio_ms": (first - call.started_at) * 1000,
        }
        if speak:
            figures |= turn_figures(await call.say(PHRASE, timeout=60), heard)
        return {key: round(value, 1) for key, value in figures.items()}
    finally:
        await call.close()


async def websocket_calls(url: str, *, sequential: int, concurrent: int) -> dict[str, Any]:
    """``sequential`` WebSocket calls one after another, then ``concurrent`` at once (each speaks)."""
    alone = [await outcome(websocket_call(url)) for _ in range(sequential)]
    if not concurrent:
        return {"sequential": alone, "concurrent": []}
    with measured_cpu() as cpu:
        together = await asyncio.gather(*(outcome(websocket_call(url)) for _ in range(concurrent)))
    return {"sequential": alone, "concurrent": list(together), "concurrent_cpu": cpu.report()}


async def aiortc_calls(url: str, *, sequential: int, concurrent: int, trickle: bool = False) -> dict[str, Any]:
    """``sequential`` calls one after another, then ``concurrent`` at once; a failed call is its error.

    The calls at once only connect and hear the greeting: ten aiortc peers in one Python process
    cannot keep their own media in real time on two cores (their received audio is stamped seconds
    late while the agent's own turn measure says 1-3 s), so voice to voice at once is the browser's.
    """
    alone = [await outcome(aiortc_call(url, trickle=trickle)) for _ in range(sequential)]
    if not concurrent:
        return {"sequential": alone, "concurrent": []}
    with measured_cpu() as cpu:
        together = await asyncio.gather(
            *(outcome(aiortc_call(url, speak=False, trickle=trickle)) for _ in range(concurrent))
        )
    return {"sequential": alone, "concurrent": list(together), "concurrent_cpu": cpu.report()}


async def outcome(call: Awaitable[dict[str, float]]) -> dict[str, float] | Exception:
    """The call's figures, or the exception that ended it (counted, not fatal to the run)."""
    try:
        return await call
    except Exception as exc:  # a failed call is a result of the benchmark
        return exc


def summarized(runs: Mapping[str, Any]) -> dict[str, Any]:
    """Each mode's runs as percentiles, with the calls that failed counted and the first error named.

    The cores used during the calls at once (``concurrent_cpu``) go with them, as ``cpu``.
    """
    report: dict[str, Any] = {}
    for mode in ("sequential", "concurrent"):
        calls = runs.get(mode)
        if not calls:
            continue
        done = [call for call in calls if not isinstance(call, Exception)]
        failed = [call for call in calls if isinstance(call, Exception)]
        if not done:
            raise RuntimeError(f"every {mode} call failed: {failed[0]!r}")
        report[mode] = summarize(done) | {"failed": len(failed)}
        if failed:
            report[mode]["first_error"] = f"{type(failed[0]).__name__}: {failed[0]}"[:300]
    if "concurrent" in report and runs.get("concurrent_cpu"):
        report["concurrent"]["cpu"] = runs["concurrent_cpu"]
    return report


def ratio(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> dict[str, float]:
    """``after / before`` of two modes' p50 of ``key``."""
    was, now = before[key]["p50"], after[key]["p50"]
    return {"before_p50": was, "after_p50": now, "ratio": round(now / was, 3) if was else float("nan")}


def run(url: str, clients: tuple[str, ...], calls: int, concurrent: int, variant_calls: int) -> dict[str, Any]:
    """Every client's calls, then the change comparisons; returns the report."""
    report: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if "aiortc" in clients:
        aiortc = summarized(asyncio.run(aiortc_calls(url, sequential=calls, concurrent=concurrent)))
        report["aiortc"] = aiortc
        if variant_calls:
            trickled = summarized(asyncio.run(aiortc_calls(url, sequential=variant_calls, concurrent=0, trickle=True)))
            changes["aiortc_candidates_in_offer_instead_of_trickle"] = {
                "calls": variant_calls,
                "first_audio_ms": ratio(trickled["sequential"], aiortc["sequential"], "first_audio_ms"),
                "connect_ms": ratio(trickled["sequential"], aiortc["sequential"], "connect_ms"),
            }
    if "websocket" in clients:
        report["websocket"] = summarized(asyncio.run(websocket_calls(url, sequential=calls, concurrent=concurrent)))
    if "browser" in clients or "browser_websocket" in clients:
        from bench.browser_calls import browser_calls, write_microphone_wav  # noqa: PLC0415 - Playwright only here

        with tempfile.TemporaryDirectory(prefix="bench-browser-") as media:
            wav = write_microphone_wav(Path(media) / "microphone.wav", PHRASE)
            if "browser_websocket" in clients:
                report["browser_websocket"] = summarized(asyncio.run(
                    browser_calls(url, wav, sequential=calls, concurrent=concurrent, query="?transport=websocket")
                ))  # fmt: skip
            if "browser" not in clients:
                return finish(report, changes)
            browser = summarized(asyncio.run(browser_calls(url, wav, sequential=calls, concurrent=concurrent)))
            report["browser"] = browser
            if variant_calls:
                waiting = summarized(
                    asyncio.run(browser_calls(url, wav, sequential=variant_calls, concurrent=0, query="?ice=gather"))
                )
                changes["browser_trickle_instead_of_waiting_for_ice_gathering"] = {
                    "calls": variant_calls,
                    "first_audio_ms": ratio(waiting["sequential"], browser["sequential"], "first_audio_ms"),
                    "connect_ms": ratio(waiting["sequential"], browser["sequential"], "connect_ms"),
                }
    return finish(report, changes)


TRANSPORT_PAIRS = (("aiortc", "websocket"), ("browser", "browser_websocket"))
"""The same client over WebRTC and over the WebSocket."""


def finish(report: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Add the changes compared, WebSocket against WebRTC for each client, and the targets."""
    if changes:
        report["changes"] = dict(changes)
    transports = {}
    for webrtc, websocket in TRANSPORT_PAIRS:
        if webrtc in report and websocket in report:
            before, after = report[webrtc]["sequential"], report[websocket]["sequential"]
            transports[f"{websocket}_against_{webrtc}"] = {
                key: ratio(before, after, key)
                for key in ("connect_ms", "first_audio_ms", "voice_to_voice_ms")
                if key in before and key in after
            }
    if transports:
        report["transports"] = transports
    report["targets"] = targets(report)
    return report


def targets(report: Mapping[str, Any]) -> dict[str, bool]:
    """The issue's targets on this machine, met or not."""
    met: dict[str, bool] = {}
    if "aiortc" in report:
        met["aiortc_first_audio_p50_at_most_600_ms"] = report["aiortc"]["sequential"]["first_audio_ms"]["p50"] <= 600
    if "browser" in report:
        browser = report["browser"]
        met["browser_sequential_first_audio_p50_under_1000_ms"] = browser["sequential"]["first_audio_ms"]["p50"] < 1000
        if "concurrent" in browser:
            met["browser_concurrent_first_audio_p50_under_1500_ms"] = (
                browser["concurrent"]["first_audio_ms"]["p50"] < 1500
            )
    return met


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.local_calls",
        description=__doc__.split("\n\n")[0],
        epilog="Needs coturn, espeak-ng and (for the browser) chromium and `make web`. Takes 3-4 minutes "
        "with the defaults.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--calls", type=int, default=10, help="sequential calls per client (default %(default)s)")
    parser.add_argument("--concurrent", type=int, default=10, help="calls at once per client (default %(default)s)")
    parser.add_argument(
        "--variant-calls", type=int, default=3, help="calls per variant of the changes compared; 0 skips (%(default)s)"
    )
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"comma-separated, of {', '.join(CLIENTS)} (default: all)"
    )
    args = parser.parse_args(argv)
    clients = tuple(name.strip() for name in args.clients.split(",") if name.strip())
    if args.calls < 1 or args.concurrent < 0 or args.variant_calls < 0:
        parser.exit(2, "error: --calls must be >= 1, --concurrent and --variant-calls >= 0\n")
    if not clients or set(clients) - set(CLIENTS):
        parser.exit(2, f"error: --clients takes {', '.join(CLIENTS)}\n")
    if {"browser", "browser_websocket"} & set(clients) and not (ROOT / ".make" / "web" / "app.js").is_file():
        parser.exit(2, "error: the call page is not built: run `make web` first\n")
    channels = max(2, -(-2 * args.concurrent // 5))  # two GetIceServerConfig calls per call, 5/s per channel
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.monotonic()
    with local_system(channels) as url:
        report = run(url, clients, args.calls, args.concurrent, args.variant_calls)
    print(json.dumps({"benchmark": "local_calls", "channels": channels, **report,
                      "seconds": round(time.monotonic() - started, 1)}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

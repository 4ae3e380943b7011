"""One caller's calls over each transport, with how the agent's audio arrived.

This is the caller's side of :mod:`bench.transports` (run inside an impaired network, as the caller).

Each call connects, hears the greeting, says "how are you" and hears the answer. Besides connect,
first audio and voice to voice, it measures the agent's audio as it arrived, in 20 ms units:

- only the agent's speech counts: the greeting and the answer, each from its first loud chunk to its
  last (see :func:`spoken`);
- each received chunk sits at a known place on the agent's media clock: WebRTC's 20 ms RTP packets,
  taken as they arrive (before aiortc's jitter buffer: :func:`rtp_spoken`), carry their RTP
  timestamp; the WebSocket's 40 ms chunks are counted from the start of their utterance (TCP keeps
  them in order);
- its *delay* is its arrival minus its place, less the smallest such difference in its stream: how
  long after the best-placed chunk it came, which is what a playout buffer must absorb;
- it is *late* when that delay exceeds :data:`PLAYOUT_BUDGET_MS`, and audio that *never* arrived is
  the RTP packets that never came (a TCP stream loses nothing: it is late instead).

    python -m bench.transport_calls --url http://127.0.0.1:7860 --calls 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from bench.call_figures import summarize
from local.call_common import SPEECH_RMS, Heard, rms

TRANSPORTS: Final = ("webrtc", "websocket")
PHRASE: Final = "how are you"
PLAYOUT_BUDGET_MS: Final = 100.0
"""A chunk this much later than the best-placed one misses its turn at the speaker (a playout buffer of
this depth; browsers adapt theirs between about 40 and 200 ms)."""
UNIT_SECONDS: Final = 0.02
"""Audio is counted in 20 ms frames whatever size each transport's chunks are."""


def arrival_figures(arrivals: Sequence[tuple[float, float, float]]) -> dict[str, Any]:
    """Delays, late and missing audio of one stream of ``(arrived at, media position, duration)`` (seconds).

    Returns ``frames`` (20 ms of audio expected), ``late`` and ``lost`` (20 ms frames) and ``delays_ms``
    (each chunk's delay after the best-placed one).
    """
    if not arrivals:
        return {"frames": 0, "late": 0.0, "lost": 0.0, "delays_ms": []}
    base = min(arrived - position for arrived, position, _ in arrivals)
    delays = [(arrived - position - base) * 1000 for arrived, position, _ in arrivals]
    received = sum(duration for _, _, duration in arrivals) / UNIT_SECONDS
    span = (max(p + d for _, p, d in arrivals) - min(p for _, p, _ in arrivals)) / UNIT_SECONDS
    late = sum(duration / UNIT_SECONDS for (_, _, duration), delay in zip(arrivals, delays, strict=True)
               if delay > PLAYOUT_BUDGET_MS)  # fmt: skip
    return {
        "frames": round(max(span, received)),
        "late": round(late, 1),
        "lost": round(max(0.0, span - received), 1),
        "delays_ms": [round(delay, 1) for delay in delays],
    }


def spoken(
    received: Sequence[tuple[float, np.ndarray]], positions: Sequence[float | None], split_at: float, rate: int
) -> list[list[tuple[float, float, float]]]:
    """The agent's two utterances as ``(arrived at, media position, duration)`` streams.

    They are the greeting, then the answer after ``split_at``, each from its first loud chunk to its last.

    ``positions`` places each chunk on the sender's media clock (WebRTC's RTP timestamps); where it
    is None (the WebSocket's chunks carry none) chunks are placed by counting from their utterance's
    first, which TCP's ordering makes exact. Only speech is compared, so the agent's own pauses (its
    recognizer holding the GIL between the caller's words and its answer) count for neither transport.
    """
    streams: list[list[tuple[float, float, float]]] = []
    for part in (0, 1):
        chunks = [(at, samples, position) for (at, samples), position in zip(received, positions, strict=True)
                  if (at >= split_at) == bool(part)]  # fmt: skip
        loud = [index for index, (_, samples, _) in enumerate(chunks) if rms(samples) > SPEECH_RMS]
        if not loud:
            continue
        stream: list[tuple[float, float, float]] = []
        counted = 0.0
        for at, samples, position in chunks[loud[0] : loud[-1] + 1]:
            duration = len(samples) / rate
            stream.append((at, counted if position is None else position, duration))
            counted += duration
        streams.append(stream)
    return streams


RTP_RATE: Final = 48000
"""Opus's RTP clock."""


def rtp_spoken(peer: Any, split_at: float) -> list[list[tuple[float, float, float]]]:
    """The agent's two utterances as the network delivered them to a WebRTC caller: RTP packets.

    The loud frames aiortc decoded say which stretch of the RTP clock each utterance covers; the
    packets whose timestamps fall in it, as they arrived (before aiortc's jitter buffer, whose own
    waiting and dropping are not the network's), are its stream, 20 ms each.
    """
    if not peer.rtp_arrivals:
        return []
    # aiortc counts decoded frames' times from the first packet out of its jitter buffer (its
    # TimestampMapper): the earliest of the first packets to arrive.
    origin = min(peer.rtp_arrivals[:10], key=lambda arrival: arrival[1])[2]

    def clock(timestamp: float) -> float:
        return float((round(timestamp) - int(origin)) % 2**32) / RTP_RATE  # RTP timestamps wrap at 32 bits

    streams: list[list[tuple[float, float, float]]] = []
    for part in (False, True):
        loud = [position for (at, samples), position in
                zip(peer.received, peer.media_positions, strict=True)
                if position is not None and (at >= split_at) == part and rms(samples) > SPEECH_RMS]  # fmt: skip
        if not loud:
            continue
        first, last = min(loud), max(loud)
        seen: set[int] = set()
        stream = []
        for at, sequence, timestamp in peer.rtp_arrivals:
            position = clock(timestamp)
            if first <= position <= last and sequence not in seen:
                seen.add(sequence)
                stream.append((at, position, UNIT_SECONDS))
        streams.append(stream)
    return streams


def combined(streams: Sequence[Sequence[tuple[float, float, float]]]) -> dict[str, Any]:
    """The figures of several streams added up."""
    parts = [arrival_figures(stream) for stream in streams if stream]
    return {
        "frames": sum(part["frames"] for part in parts),
        "late": round(sum(part["late"] for part in parts), 1),
        "lost": round(sum(part["lost"] for part in parts), 1),
        "delays_ms": [delay for part in parts for delay in part["delays_ms"]],
    }


async def measured_call(url: str, transport: str, *, timeout: float = 60) -> dict[str, Any]:
    """One call over ``transport``: its timings (ms from ``/start``) and how its audio arrived."""
    from local.call_client import Call  # noqa: PLC0415 - aiortc only here
    from local.websocket_client import PLAYER_RATE, WebSocketCall  # noqa: PLC0415

    call: Call | WebSocketCall = Call(url, relay_only=True) if transport == "webrtc" else WebSocketCall(url)
    try:
        await call.connect(timeout=timeout)
        heard: Heard | None = call.heard if isinstance(call, WebSocketCall) else call.peer
        assert heard is not None  # noqa: S101 (connect() made the peer)
        await heard.wait_for(lambda: heard.first_speech_after(call.started_at) is not None, timeout, "the greeting")
        first = heard.first_speech_after(call.started_at) or 0.0
        exchange = await call.say(PHRASE, timeout=timeout)
        await asyncio.sleep(0.5)  # the answer's last chunks
        if isinstance(call, WebSocketCall):
            positions: list[float | None] = [None] * len(call.heard.received)
            audio = combined(spoken(call.heard.received, positions, exchange.spoken_until, PLAYER_RATE))
        else:
            audio = combined(rtp_spoken(call.peer, exchange.spoken_until))
        return {
            "transport": transport,
            "first_audio_ms": round((first - call.started_at) * 1000, 1),
            "voice_to_voice_ms": round(exchange.voice_to_voice_seconds * 1000, 1),
            "heard": exchange.heard,
            **audio,
        }
    finally:
        await call.close()


async def calls(url: str, transports: Sequence[str], count: int) -> list[dict[str, Any]]:
    """``count`` calls over each transport, alternating; a call that fails is its error."""
    results: list[dict[str, Any]] = []
    for _ in range(count):
        for transport in transports:
            try:
                results.append(await asyncio.wait_for(measured_call(url, transport), 120))
            except Exception as exc:  # a dropped call is a result
                results.append({"transport": transport, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return results


def report(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per transport: calls up and failed, percentiles, and the share of audio late or never heard."""
    figures: dict[str, Any] = {}
    for transport in sorted({result["transport"] for result in results}):
        mine = [result for result in results if result["transport"] == transport]
        done = [result for result in mine if "error" not in result]
        failed = [result for result in mine if "error" in result]
        frames = sum(result["frames"] for result in done)
        late, lost = sum(result["late"] for result in done), sum(result["lost"] for result in done)
        timings = summarize([{key: result[key] for key in ("first_audio_ms", "voice_to_voice_ms")} for result in done])
        figures[transport] = {
            **timings,  # first, so that its own count of the calls that made it is not taken for all calls
            "calls": len(mine),
            "calls_up": len(done),
            "failed": len(failed),
            **({"first_error": failed[0]["error"]} if failed else {}),
            "audio_delay_ms": summarize([{"delay": delay} for result in done for delay in result["delays_ms"]]).get(
                "delay", {}
            ),
            "frames": frames,
            "late_share": round(late / frames, 4) if frames else None,
            "lost_share": round(lost / frames, 4) if frames else None,
            "late_or_lost_share": round((late + lost) / frames, 4) if frames else None,
        }
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Make the calls and print the report (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.transport_calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the broker API, e.g. http://127.0.0.1:7860")
    parser.add_argument("--calls", type=int, default=3, help="calls per transport (%(default)s)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    args = parser.parse_args(argv)
    transports = [name.strip() for name in args.transports.split(",") if name.strip()]
    if args.calls < 1 or not transports or set(transports) - set(TRANSPORTS):
        parser.exit(2, f"error: --calls must be >= 1 and --transports of {', '.join(TRANSPORTS)}\n")
    results = asyncio.run(calls(args.url, transports, args.calls))
    calls_made = [{key: value for key, value in result.items() if key != "delays_ms"} for result in results]
    print(json.dumps({"calls": calls_made, "transports": report(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

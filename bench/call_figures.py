"""Figures the call benchmarks share: percentiles, and a turn's latency split into named stages."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def summary(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/max of millisecond samples."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "max": round(ordered[-1], 1)}


def summarize(runs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """``{"calls": n, key: summary, ...}`` over every key any run measured."""
    keys = sorted({key for run in runs for key in run})
    return {"calls": len(runs), **{key: summary([run[key] for run in runs if key in run]) for key in keys}}


def agent_turn_metrics(messages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The agent's own measurement of a turn: the first RTVI ``turn-metrics`` server message given."""
    for message in messages:
        data = message.get("data")
        if message.get("type") == "server-message" and isinstance(data, Mapping) and "TurnLatencyMs" in data:
            return data
    return None


def voice_stages(total_ms: float, agent: Mapping[str, Any] | None) -> dict[str, float]:
    """Split a voice-to-voice latency into named stages with the agent's own turn measurement.

    The agent measures from the moment its VAD heard the caller stop to its first audio out
    (``TurnLatencyMs``, from Pipecat's ``UserBotLatencyObserver``), broken down into the VAD's
    endpointing wait, transcription and the rest, with each service's time to first byte; the caller
    measures from its last sound to the first sound it hears. What the caller measured beyond the
    agent is the media path, both ways (packetization, network, jitter buffers).

    Returns:
        ``stage_vad_stop_ms``, ``stage_stt_ms``, ``stage_response_ms``, ``stage_tts_ms`` and
        ``stage_transport_ms``; nothing when the agent sent no measurement.
    """
    if not agent:
        return {}
    breakdown = agent.get("breakdownMs") or {}
    ttfb = agent.get("ttfbMs") or {}
    tts = float(sum(value for name, value in ttfb.items() if name.endswith("TTSService")))
    agent_total = float(agent["TurnLatencyMs"])
    endpointing = float(breakdown.get("endpointing_wait", 0.0))
    transcription = float(breakdown.get("transcription", 0.0))
    return {
        "stage_vad_stop_ms": round(endpointing, 1),
        "stage_stt_ms": round(transcription, 1),
        "stage_response_ms": round(max(0.0, agent_total - endpointing - transcription - tts), 1),
        "stage_tts_ms": round(tts, 1),
        "stage_transport_ms": round(total_ms - agent_total, 1),
    }

"""Per-turn latency: Pipecat's observers measure real frames, the agent logs and publishes CloudWatch EMF.

Two tiers: the observers fed the frames a turn produces, through a real Pipecat pipeline (fast and
exact about the figures); and a whole call of the local pipeline over WebRTC, where the figures reach
stdout as EMF, the agent's log as one line per turn, and the browser as RTVI messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ClientConnectedFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.tests.utils import SleepFrame, run_test

from agent.config import AgentConfig
from agent.telemetry import (
    METRICS_NAMESPACE,
    PIPELINE_DIMENSION,
    SERVICE_DIMENSION,
    SERVICE_DIMENSION_SETS,
    TRANSPORT_DIMENSION,
    TURN_DIMENSION_SETS,
    MetricName,
)
from agent.turn_metrics import SERVICE_RECORD, TURN_RECORD, TurnMetrics, emf_document, service_name
from tests.agent_support import (
    PEER_RATE,
    AgentServer,
    Peer,
    captured_logs,
    espeak_pcm,
    loopback_media,
    running_agent,
)

SECRET = "the password is swordfish"
"""What the user says in the observer tests: it must appear in no document, line or message."""
STOP_SECS = 0.3
REPLY_DELAY = 0.4


def check_emf(document: dict[str, Any]) -> list[str]:
    """Assert ``document`` is valid EMF (the CloudWatch specification); return its metric names."""
    metadata = document["_aws"]
    assert set(metadata) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(metadata["Timestamp"], int)
    assert abs(metadata["Timestamp"] / 1000 - time.time()) < 300
    names: list[str] = []
    for directive in metadata["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert directive["Namespace"] == METRICS_NAMESPACE
        assert directive["Dimensions"] and all(1 <= len(dims) <= 30 for dims in directive["Dimensions"])
        for dimension in {name for dims in directive["Dimensions"] for name in dims}:
            assert isinstance(document[dimension], str) and document[dimension], dimension
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) == {"Name", "Unit"}
            assert metric["Unit"] == "Milliseconds"
            value = document[metric["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            names.append(metric["Name"])
    return names


def parse_emf(lines: list[str]) -> list[dict[str, Any]]:
    """Every line must be one JSON object (CloudWatch reads a log event as EMF only if it is whole)."""
    documents = [json.loads(line) for line in lines]
    assert all(isinstance(document, dict) for document in documents)
    return documents


def turns(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [document for document in documents if document["type"] == TURN_RECORD]


def services(documents: list[dict[str, Any]], metric: str) -> dict[str, float]:
    return {
        document[SERVICE_DIMENSION]: document[metric]
        for document in documents
        if document["type"] == SERVICE_RECORD and metric in document
    }


# --- The observers, fed the frames of a greeting and a turn ------------------------------------


def greeting_then_turn() -> list[Any]:
    """What a pipeline pushes: the client connects, the bot greets, the user speaks, the bot answers."""
    greeting, speech = 0.2, 0.3
    return [
        ClientConnectedFrame(),
        SleepFrame(sleep=greeting),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
        VADUserStartedSpeakingFrame(),
        SleepFrame(sleep=speech),
        # The VAD stamps its decision with the wall clock: the moment this frame is pushed.
        VADUserStoppedSpeakingFrame(stop_secs=STOP_SECS, timestamp=time.time() + greeting + speech),
        TranscriptionFrame(text=SECRET, user_id="user", timestamp="2026-01-01T00:00:00Z", finalized=True),
        MetricsFrame(data=[TTFBMetricsData(processor="PocketsphinxSTTService#7", value=0.04)]),
        MetricsFrame(data=[ProcessingMetricsData(processor="PocketsphinxSTTService#7", value=0.03)]),
        SleepFrame(sleep=REPLY_DELAY),
        MetricsFrame(data=[TTFBMetricsData(processor="EspeakTTSService#7", model="espeak-ng", value=0.12)]),
        BotStartedSpeakingFrame(),
        MetricsFrame(data=[ProcessingMetricsData(processor="EspeakTTSService#7", model="espeak-ng", value=0.25)]),
        BotStoppedSpeakingFrame(),
    ]


@pytest.fixture
def observed() -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Run the frames through a real pipeline with the call's observers; EMF lines, client messages, log."""
    lines: list[str] = []
    told: list[dict[str, Any]] = []

    async def tell(figures: dict[str, Any]) -> None:
        told.append(figures)

    metrics = TurnMetrics(pipeline="local", transport="webrtc", write=lines.append, on_turn=tell)

    async def scenario() -> None:
        # The VAD's timestamp is the wall clock when it decided: build the frames as the turn starts.
        frames = greeting_then_turn()
        await run_test(IdentityFilter(), frames_to_send=frames, observers=metrics.observers)
        await asyncio.sleep(0.1)  # event handlers run in tasks of their own

    with captured_logs() as logs:
        asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    return lines, told, [line for line in logs if line.startswith("agent.turn_metrics:")]


def test_the_greeting_and_the_turn_are_published_as_valid_emf(
    observed: tuple[list[str], list[dict[str, Any]], list[str]],
) -> None:
    lines, _, _ = observed
    documents = parse_emf(lines)
    for document in documents:
        check_emf(document)
    greeting, turn = turns(documents)
    assert check_emf(greeting) == [MetricName.TIME_TO_FIRST_WORD]
    assert check_emf(turn) == [MetricName.TURN_LATENCY]
    for document in (greeting, turn):
        assert document[PIPELINE_DIMENSION] == "local" and document[TRANSPORT_DIMENSION] == "webrtc"
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [list(s) for s in TURN_DIMENSION_SETS]
    assert 150 <= greeting[MetricName.TIME_TO_FIRST_WORD] < 1500
    # From the user's last word (the VAD's decision minus its stop_secs) to the bot's first audio.
    assert 1000 * (STOP_SECS + REPLY_DELAY) - 50 <= turn[MetricName.TURN_LATENCY] < 3000
    assert turn["breakdownMs"]["endpointing_wait"] == pytest.approx(1000 * STOP_SECS, abs=5)
    assert sum(turn["breakdownMs"].values()) == pytest.approx(turn[MetricName.TURN_LATENCY], abs=20)
    assert turn["ttfbMs"] == {"PocketsphinxSTTService": 40.0, "EspeakTTSService": 120.0}


def test_each_service_measurement_is_its_own_series_per_service(
    observed: tuple[list[str], list[dict[str, Any]], list[str]],
) -> None:
    documents = parse_emf(observed[0])
    # The class name, not Pipecat's per-instance "#7": one series per service, however many calls.
    assert services(documents, MetricName.SERVICE_TTFB) == {"PocketsphinxSTTService": 40.0, "EspeakTTSService": 120.0}
    assert services(documents, MetricName.SERVICE_PROCESSING) == {
        "PocketsphinxSTTService": 30.0,
        "EspeakTTSService": 250.0,
    }
    for document in documents:
        if document["type"] == SERVICE_RECORD:
            directive = document["_aws"]["CloudWatchMetrics"][0]
            assert directive["Dimensions"] == [list(s) for s in SERVICE_DIMENSION_SETS]
    assert {document.get("model") for document in documents if document.get("service") == "EspeakTTSService"} == {
        "espeak-ng"
    }


def test_the_log_has_one_readable_line_per_turn_with_the_same_figures(
    observed: tuple[list[str], list[dict[str, Any]], list[str]],
) -> None:
    documents, logs = parse_emf(observed[0]), observed[2]
    greeting, turn = turns(documents)
    turn_lines = [line for line in logs if "turn latency" in line]
    assert len(turn_lines) == 1 and len([line for line in logs if "time to first word" in line]) == 1
    line = turn_lines[0]
    assert f"turn latency {turn[MetricName.TURN_LATENCY]:.0f} ms (local over webrtc)" in line
    assert f"endpointing wait {1000 * STOP_SECS:.0f}" in line
    assert "TTFB PocketsphinxSTTService 40, EspeakTTSService 120" in line
    assert any("EspeakTTSService processing 250 ms (local over webrtc)" in line for line in logs)
    assert any(f"time to first word {greeting[MetricName.TIME_TO_FIRST_WORD]:.0f} ms" in line for line in logs)


def test_the_client_is_told_the_turns_figures_without_the_emf_metadata(
    observed: tuple[list[str], list[dict[str, Any]], list[str]],
) -> None:
    lines, told, _ = observed
    expected = [{k: v for k, v in document.items() if k != "_aws"} for document in turns(parse_emf(lines))]
    assert told == expected
    assert [message["type"] for message in told] == [TURN_RECORD, TURN_RECORD]


def test_nothing_anyone_said_is_in_a_metric_a_log_line_or_a_message(
    observed: tuple[list[str], list[dict[str, Any]], list[str]],
) -> None:
    lines, told, logs = observed
    everything = "\n".join([*lines, json.dumps(told), *logs]).lower()
    for word in SECRET.split():
        if len(word) > 3:
            assert word not in everything


def test_log_mode_writes_no_emf() -> None:
    lines: list[str] = []
    metrics = TurnMetrics(pipeline="local", transport="webrtc", output="log", write=lines.append)
    frames = [VADUserStoppedSpeakingFrame(stop_secs=0.2), BotStartedSpeakingFrame()]
    with captured_logs() as logs:
        asyncio.run(run_test(IdentityFilter(), frames_to_send=frames, observers=metrics.observers))
    assert lines == []
    assert any("turn latency" in line for line in logs)


def test_emf_documents_refuse_what_cloudwatch_would_reject() -> None:
    base: dict[str, Any] = {
        "dimensions": {"pipeline": "local"},
        "metrics": {"TurnLatencyMs": 1.0},
        "properties": {},
        "timestamp": 0,
    }
    with pytest.raises(ValueError, match="needs a value"):
        emf_document(**base, dimension_sets=[["pipeline", "transport"]])
    with pytest.raises(ValueError, match="distinct"):
        emf_document(**{**base, "properties": {"pipeline": "x"}}, dimension_sets=[["pipeline"]])
    assert service_name("AWSNovaSonicLLMService#12") == "AWSNovaSonicLLMService"


# --- A whole call of the local pipeline over WebRTC --------------------------------------------


@pytest.fixture(scope="module")
def _loopback() -> Iterator[None]:
    with loopback_media():
        yield


def test_a_local_call_publishes_its_turns_and_the_browser_receives_them(
    _loopback: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = AgentConfig(pipeline="local", ice_servers="none", greeting="Hello.")

    async def scenario(peer: Peer) -> None:
        await connect(server, peer)
        await peer.wait_for(lambda: any(m.get("type") == "bot-stopped-speaking" for m in peer.messages), 20, "greeting")
        peer.track.play(espeak_pcm("how are you", PEER_RATE))
        await peer.wait_for(lambda: len(figures(peer)) >= 2, 30, "the turn's figures over the data channel")
        await peer.wait_for(lambda: bool(rtvi(peer, "metrics")), 10, "RTVI metrics")
        await peer.close()

    with captured_logs() as logs, running_agent(config) as server:
        peer = Peer()
        asyncio.run(asyncio.wait_for(scenario(peer), timeout=60))
        time.sleep(0.5)
    out = capsys.readouterr().out
    documents = parse_emf([line for line in out.splitlines() if line.startswith('{"_aws"')])
    for document in documents:
        check_emf(document)
    greeting, turn = turns(documents)[:2]
    assert MetricName.TIME_TO_FIRST_WORD in greeting and MetricName.TURN_LATENCY in turn
    assert turn[PIPELINE_DIMENSION] == "local" and turn[TRANSPORT_DIMENSION] == "webrtc"
    assert turn["breakdownMs"]["endpointing_wait"] > 0
    assert "EspeakTTSService" in services(documents, MetricName.SERVICE_TTFB)
    assert "PocketsphinxSTTService" in services(documents, MetricName.SERVICE_PROCESSING)
    assert "how are you" not in out.lower()
    turn_lines = [line for line in logs if line.startswith("agent.turn_metrics:") and "turn latency" in line]
    assert any(
        f"turn latency {turn[MetricName.TURN_LATENCY]:.0f} ms (local over webrtc)" in line for line in turn_lines
    )

    # What the browser receives: the same figures as a server-message, and RTVI's own metrics.
    assert figures(peer)[:2] == [{k: v for k, v in d.items() if k != "_aws"} for d in (greeting, turn)]
    shapes = {"ttfb": {"value"}, "processing": {"value"}, "ttfa": {"ttfa", "ttfb", "leading_silence"}}
    metrics = rtvi(peer, "metrics")
    assert {key for message in metrics for key in message["data"]} == set(shapes)
    for message in metrics:
        for kind, entries in message["data"].items():
            for entry in entries:
                assert {"processor", *shapes[kind]} <= set(entry) <= {"processor", "model", *shapes[kind]}
    # The worker's first metrics message lists the services with zeros; those are no measurement.
    assert all(
        document[name] > 0
        for document in documents
        for name in (MetricName.SERVICE_TTFB, MetricName.SERVICE_PROCESSING)
        if name in document
    )


async def connect(agent: AgentServer, peer: Peer) -> None:
    """Offer, answer and trickle, as the broker API does for a browser."""
    offer = await peer.offer()
    events = await asyncio.to_thread(agent.invoke, {"type": "offer", "data": offer})
    answer = events[1]["data"]
    await peer.accept(answer)
    candidates = {"pc_id": answer["pc_id"], "candidates": peer.candidates}
    await asyncio.to_thread(agent.invoke, {"type": "ice-candidates", "data": candidates})
    await peer.wait_for(lambda: peer.pc.connectionState == "connected", 10, "the peer to connect")


def rtvi(peer: Peer, kind: str) -> list[dict[str, Any]]:
    return [m for m in peer.messages if m.get("label") == "rtvi-ai" and m.get("type") == kind]


def figures(peer: Peer) -> list[dict[str, Any]]:
    return [m["data"] for m in rtvi(peer, "server-message") if m["data"].get("type") == TURN_RECORD]

"""The agent's cold start: it answers before its pipeline is built, shares what calls can share, ships
its bytecode, and ``bench.cold_start`` measures all of it (the figures are checked by people, not here).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer

from agent.bot import BotPipeline
from agent.config import AgentConfig
from agent.pipelines import pipeline_builder
from agent.pipelines.common import silero_vad
from agent.pipelines.nova_sonic import ENDPOINT_VARIABLE, build_nova_sonic
from agent.server import create_app
from bench.cold_start import COMPILE, PACKAGES
from tests.agent_support import AgentServer, Peer, espeak_pcm, loopback_media, rms, serving

ROOT = Path(__file__).resolve().parent.parent


def run[T](coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run a coroutine on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def test_offers_are_answered_while_the_first_pipeline_is_still_being_built() -> None:
    config = AgentConfig(pipeline="local", ice_servers="none", greeting="Hello from the agent.")
    local = pipeline_builder(config)
    release = threading.Event()
    built: list[BotPipeline] = []

    def slow_local(config: AgentConfig) -> BotPipeline:
        release.wait(30)
        bot = local(config)
        built.append(bot)
        return bot

    async def call(agent: AgentServer, *, release_before_connecting: bool) -> Peer:
        peer = Peer()
        events = await asyncio.to_thread(agent.invoke, {"type": "offer", "data": await peer.offer(trickle=False)})
        assert [event["type"] for event in events] == ["status", "answer", "progress"], events
        assert events[2]["data"]["pipeline"] == "local"
        if release_before_connecting:
            assert built == [], "the answer came before any pipeline was built"
            assert await asyncio.to_thread(agent.ping) == "HealthyBusy"
            release.set()
        await peer.accept(events[1]["data"])
        await peer.wait_for(lambda: rms(peer.audio_since(0)) > 200, 20, "the greeting's audio")
        return peer

    async def scenario(agent: AgentServer) -> None:
        first = await call(agent, release_before_connecting=True)
        assert len(built) == 1  # the first call ran the pipeline built as the server started
        second = await call(agent, release_before_connecting=False)
        assert len(built) == 2  # a later call builds its own
        for peer in (first, second):
            await peer.close()
        await asyncio.to_thread(agent.wait_ping, "Healthy", 10)

    with loopback_media(), serving(create_app(config, builder=slow_local), lifespan="on") as agent:
        run(scenario(agent))


def test_a_pipeline_that_cannot_be_built_still_stops_the_agent_with_status_2() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AGENT_", "TURN_"))}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = subprocess.run(
        [sys.executable, "-m", "agent"],
        # espeak-ng is not on this PATH: the local pipeline cannot be built.
        env={**env, "PYTHONPATH": str(ROOT), "PATH": "/nonexistent", "AGENT_PIPELINE": "local", "AGENT_PORT": port},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "configuration error: the local pipeline cannot be built" in result.stderr
    assert "apt-get install espeak-ng" in result.stderr


def test_calls_share_one_silero_session_but_each_keeps_its_own_state() -> None:
    ours, other = silero_vad(), silero_vad()
    assert ours._model.session is other._model.session  # loaded once per process
    reference = SileroVADAnalyzer()  # Pipecat's own, with a session of its own
    for analyzer in (ours, other, reference):
        analyzer.set_sample_rate(16000)
    speech = espeak_pcm("hello, how are you today", 16000).tobytes()
    silence = np.zeros(len(speech) // 2, dtype=np.int16).tobytes()
    window = 2 * ours.num_frames_required()

    def confidence(analyzer: SileroVADAnalyzer, audio: bytes, start: int) -> float:
        return float(np.asarray(analyzer.voice_confidence(audio[start : start + window])).reshape(-1)[0])

    ours_heard, reference_heard = [], []
    for start in range(0, len(speech) - window, window):
        ours_heard.append(confidence(ours, speech, start))
        confidence(other, silence, start)  # another call, interleaved, on the same session
        reference_heard.append(confidence(reference, speech, start))
    assert max(reference_heard) > 0.5  # the reference hears the speech
    assert ours_heard == pytest.approx(reference_heard, abs=1e-6)


def test_the_bench_nova_sonic_agent_sends_its_model_sessions_where_it_is_told(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = AgentConfig(pipeline="nova-sonic", region="us-east-1")
    public = build_nova_sonic(config).processors[-1].create_client()  # type: ignore[attr-defined]
    assert public._config.endpoint_uri == "https://bedrock-runtime.us-east-1.amazonaws.com"
    monkeypatch.setenv(ENDPOINT_VARIABLE, "https://127.0.0.1:9")
    local = build_nova_sonic(config).processors[-1].create_client()  # type: ignore[attr-defined]
    assert local._config.endpoint_uri == "https://127.0.0.1:9"


def test_the_image_compiles_its_code_as_the_bench_does() -> None:
    dockerfile = (ROOT / "agent" / "Dockerfile").read_text()
    compile_step = f"RUN python {' '.join(COMPILE)} {' '.join(f'/app/{package}' for package in PACKAGES)}"
    assert compile_step in dockerfile.splitlines()
    copies = [m.start() for m in re.finditer(r"^COPY .* /app/(agent|broker)/$", dockerfile, flags=re.MULTILINE)]
    assert len(copies) == len(PACKAGES) and max(copies) < dockerfile.index(compile_step)  # compiled as copied
    assert re.search(r"^ENV PYTHONDONTWRITEBYTECODE=1 ", dockerfile, flags=re.MULTILINE)  # runtime writes none


@pytest.mark.slow
def test_bench_cold_start_answers_real_offers_and_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cold_start", "--json", "--runs=1", "--top=5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["benchmark"] == "cold_start" and report["pipeline"] == "nova-sonic"
    assert report["agent_cold_start_ms"] == report["pipelines"]["nova-sonic"]["agent_cold_start_ms"]
    assert report["bytecode"]["sources"] >= 40 and report["bytecode"]["compile_all_ms"] > 0  # agent/, broker/
    target = report["targets"]["agent_cold_start_p50_under_500ms"]
    assert target["bound_ms"] == 500 and target["met"] == (target["value_ms"] < 500)
    for name, pipeline in report["pipelines"].items():
        assert set(pipeline["modes"]) == {"sources", "bytecode"}
        assert pipeline["answered_offers"] == 2  # one run per tree, each offer answered and accepted
        assert pipeline["answer_candidates_min"] >= 1
        expected = {"ping_ms", "agent_cold_start_ms", "pipeline_ready_ms"}
        if name == "local":
            expected.add("first_audio_ms")  # the only pipeline that speaks offline
        for figures in pipeline["modes"].values():
            assert set(figures) == expected
            assert all(figure["p95"] >= figure["p50"] > 0 for figure in figures.values())
            # The offer is sent once /ping answers; the greeting needs the answer.
            assert figures["ping_ms"]["p50"] < figures["agent_cold_start_ms"]["p50"]
            if "first_audio_ms" in figures:
                assert figures["agent_cold_start_ms"]["p50"] < figures["first_audio_ms"]["p50"]
        assert set(pipeline["sources_over_bytecode"]) == expected
        assert all(ratio > 0 for ratio in pipeline["sources_over_bytecode"].values())
        imports = pipeline["imports"]
        assert 0 < imports["before_answer_ms"] < imports["total_ms"]
        assert {"agent.server", "bedrock_agentcore", "aiortc", "agent.bot"} <= set(imports["modules_ms"])
        assert len(imports["self_ms_by_package"]) == 5
    assert "agent.pipelines.nova_sonic" in report["pipelines"]["nova-sonic"]["imports"]["modules_ms"]
    assert "agent.pipelines.local" in report["pipelines"]["local"]["imports"]["modules_ms"]


@pytest.mark.parametrize("argument", ["--runs=0", "--pipelines=cascade", f"--baseline={ROOT / 'bench'}"])
def test_bench_cold_start_rejects_bad_arguments(argument: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cold_start", argument], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "error:" in result.stderr

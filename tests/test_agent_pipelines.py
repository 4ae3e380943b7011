"""Each pipeline builds offline; credentials are bridged and renewed; the local pipeline hears speech."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import boto3
import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.tests.utils import SleepFrame, run_test

from agent.config import AgentConfig
from agent.credentials import AwsCredentials, CredentialBridge, boto3_credential_source
from agent.exceptions import ConfigurationError
from agent.local_speech import EspeakTTSService, LocalResponder, PocketsphinxSTTService, decoder_pool, reply_to
from agent.pipelines import pipeline_builder
from agent.pipelines.local import build_local
from agent.pipelines.nova_sonic import BridgedNovaSonicLLMService, build_nova_sonic
from tests.agent_support import espeak_pcm, rms

HAS_AIOBOTOCORE = importlib.util.find_spec("aiobotocore") is not None


class FakeClock:
    """A settable epoch clock."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RotatingSource:
    """Temporary credentials that last ``ttl`` seconds from each read, numbered by read."""

    def __init__(self, clock: FakeClock, ttl: float = 3600.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.reads = 0

    def __call__(self) -> AwsCredentials:
        self.reads += 1
        return AwsCredentials(
            access_key_id=f"ASIAFAKE{self.reads:04d}",
            secret_access_key=f"secret-{self.reads}",
            session_token=f"token-{self.reads}",
            expires_at=self.clock() + self.ttl,
        )


def test_the_local_pipeline_builds_with_vad_stt_responder_tts() -> None:
    bot = build_local(AgentConfig(pipeline="local", greeting="Hi."))
    kinds = [type(processor).__name__ for processor in bot.processors]
    assert kinds == ["VADProcessor", "PocketsphinxSTTService", "LocalResponder", "EspeakTTSService"]
    assert [frame.text for frame in bot.opening_frames] == ["Hi."]  # type: ignore[attr-defined]
    assert build_local(AgentConfig(pipeline="local", greeting="")).opening_frames == []


def test_the_nova_sonic_pipeline_builds_offline_with_fake_credentials(aws_env: None) -> None:
    config = AgentConfig(pipeline="nova-sonic", region="us-east-1", voice="tiffany", system_prompt="Be brief.")
    bot = pipeline_builder(config)(config)
    assert bot.name == "nova-sonic"
    llm = bot.processors[-1]
    assert isinstance(llm, BridgedNovaSonicLLMService)
    assert llm._settings.model == "amazon.nova-2-sonic-v1:0"
    assert llm._settings.voice == "tiffany"
    assert llm._settings.system_instruction == "Be brief."
    assert type(bot.processors[0]).__name__ == "LLMUserAggregator"
    assert bot.processors[0]._params.vad_analyzer is not None  # Silero VAD drives user turns


def test_nova_sonic_signs_each_new_session_with_renewed_credentials() -> None:
    clock = FakeClock()
    source = RotatingSource(clock, ttl=3600)
    bridge = CredentialBridge(source, refresh_margin=300, clock=clock)
    bot = build_nova_sonic(AgentConfig(pipeline="nova-sonic", region="us-west-2"), bridge=bridge)
    llm = bot.processors[-1]
    assert isinstance(llm, BridgedNovaSonicLLMService)

    async def identity() -> Any:
        client = llm.create_client()  # what Nova Sonic does for every (continued) session
        resolver = client._config.aws_credentials_identity_resolver
        return await resolver.get_identity(properties={})

    first = asyncio.run(identity())
    assert (first.access_key_id, first.session_token) == ("ASIAFAKE0001", "token-1")
    session = llm.create_client()._config.aws_credentials_identity_resolver
    assert session is not None
    before = asyncio.run(session.get_identity(properties={}))
    clock.now += 3000  # 10 minutes left: still outside the 5 minute margin
    assert asyncio.run(identity()).access_key_id == "ASIAFAKE0001"
    clock.now += 301  # inside the margin: a new session must not start with these
    renewed = asyncio.run(identity())
    assert (renewed.access_key_id, renewed.secret_access_key, renewed.session_token) == (
        "ASIAFAKE0002",
        "secret-2",
        "token-2",
    )
    assert renewed.expiration is not None
    assert renewed.expiration.timestamp() == pytest.approx(clock.now + 3600)
    assert source.reads == 2
    assert bridge.refreshes == 1
    # A session's events chain to its request's signature: its client keeps the set it started with.
    assert asyncio.run(session.get_identity(properties={})).access_key_id == before.access_key_id == "ASIAFAKE0001"


def test_the_bridge_renews_before_expiry_across_an_eight_hour_call() -> None:
    clock = FakeClock()
    source = RotatingSource(clock, ttl=3600)
    bridge = CredentialBridge(source, refresh_margin=300, clock=clock)
    start = clock.now
    handed_out = []
    while clock.now - start < 8 * 3600:
        credentials = bridge.current()
        assert credentials.expires_at is not None
        assert credentials.expires_at - clock.now > 300, "never hands out credentials inside the margin"
        handed_out.append(credentials.access_key_id)
        clock.now += 60  # one model session continuation every minute or so
    assert len(set(handed_out)) == 9  # renewed every 55 minutes over 8 hours
    assert "secret" not in repr(bridge.current())


def test_the_bridge_rereads_credentials_of_unknown_expiry(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-1")
    clock = FakeClock()
    bridge = CredentialBridge(boto3_credential_source(boto3.Session()), max_age=60, clock=clock)
    first = bridge.current()
    assert (first.access_key_id, first.session_token, first.expires_at) == (
        "AKIDLOCALTESTING000",
        "session-token-1",
        None,
    )
    clock.now += 61
    bridge.current()
    assert bridge.refreshes == 1


def test_missing_credentials_fail_at_start_with_what_to_set(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigurationError, match="AWS_PROFILE or AWS_ACCESS_KEY_ID"):
        build_nova_sonic(
            AgentConfig(pipeline="nova-sonic", region="us-east-1"),
            bridge=CredentialBridge(boto3_credential_source(boto3.Session())),
        )


@pytest.mark.skipif(not HAS_AIOBOTOCORE, reason="pipecat-ai[aws] (aiobotocore) is not installed")
def test_the_cascade_pipeline_builds_offline_with_fake_credentials(aws_env: None) -> None:
    config = AgentConfig(pipeline="cascade", region="us-east-1", bedrock_model_id="us.amazon.nova-2-lite-v1:0")
    bot = pipeline_builder(config)(config)
    kinds = [type(processor).__name__ for processor in bot.processors]
    assert kinds == ["AWSTranscribeSTTService", "LLMUserAggregator", "AWSBedrockLLMService", "AWSPollyTTSService"]
    assert bot.processors[2]._settings.model == "us.amazon.nova-2-lite-v1:0"
    assert bot.processors[1]._params.vad_analyzer is not None


@pytest.mark.skipif(HAS_AIOBOTOCORE, reason="aiobotocore is installed")
def test_the_cascade_pipeline_names_its_missing_extra(aws_env: None) -> None:
    config = AgentConfig(pipeline="cascade", region="us-east-1", bedrock_model_id="m")
    with pytest.raises(ConfigurationError, match=r"pipecat-ai\[aws\]"):
        pipeline_builder(config)


def test_the_local_pipeline_names_espeak_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigurationError, match="apt-get install espeak-ng"):
        pipeline_builder(AgentConfig(pipeline="local"))


@pytest.mark.parametrize(
    ("heard", "reply"),
    [
        ("how are you", "I am fine, thank you. How are you?"),
        ("HELLO there", "Hello! I am the local test agent. Say something and I will repeat it."),
        ("one two three", "You said: one two three."),
        ("", "Sorry, I did not catch that."),
    ],
)
def test_the_responder_is_deterministic(heard: str, reply: str) -> None:
    assert reply_to(heard) == reply


def test_the_local_pipeline_hears_speech_and_answers_aloud() -> None:
    silence = np.zeros(8000, dtype=np.int16)
    speech = np.concatenate([silence, espeak_pcm("how are you", 16000), silence, silence, silence]).tobytes()
    frames = [
        InputAudioRawFrame(audio=speech[i : i + 640], sample_rate=16000, num_channels=1)
        for i in range(0, len(speech), 640)
    ]
    decoder_pool()  # loaded as the agent starts, not within run_test's one-second start timeout
    pipeline = Pipeline(build_local(AgentConfig(pipeline="local", greeting="")).processors)

    down, _ = asyncio.run(
        asyncio.wait_for(run_test(pipeline, frames_to_send=[*frames, SleepFrame(sleep=1.5)]), timeout=30)
    )
    assert [frame.text for frame in down if isinstance(frame, TranscriptionFrame)] == ["how are you"]
    reply = b"".join(frame.audio for frame in down if isinstance(frame, TTSAudioRawFrame))
    assert len(reply) > 24000 * 2 // 2, "at least half a second of synthesized speech"
    assert rms(np.frombuffer(reply, dtype=np.int16)) > 500


def test_custom_services_are_pipecat_services() -> None:
    assert issubclass(PocketsphinxSTTService, STTService)
    assert issubclass(EspeakTTSService, TTSService)
    assert issubclass(LocalResponder, FrameProcessor)

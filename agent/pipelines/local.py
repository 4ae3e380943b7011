"""The ``local`` pipeline: offline speech recognition, a fixed responder and offline speech synthesis."""

from __future__ import annotations

from pipecat.frames.frames import Frame, TTSSpeakFrame
from pipecat.processors.audio.vad_processor import VADProcessor

from agent.bot import BotPipeline
from agent.config import AgentConfig
from agent.local_speech import EspeakTTSService, LocalResponder, PocketsphinxSTTService
from agent.pipelines.common import silero_vad


def build_local(config: AgentConfig) -> BotPipeline:
    """Silero VAD -> pocketsphinx -> :class:`~agent.local_speech.LocalResponder` -> espeak-ng.

    Args:
        config: ``effective_voice`` is the espeak-ng voice, ``greeting`` the first words.
    """
    tts = EspeakTTSService(voice=config.effective_voice)
    opening: list[Frame] = [TTSSpeakFrame(text=config.greeting, append_to_context=False)] if config.greeting else []
    return BotPipeline(
        name="local",
        processors=[VADProcessor(vad_analyzer=silero_vad()), PocketsphinxSTTService(), LocalResponder(), tts],
        opening_frames=opening,
        audio_out_sample_rate=24000,
    )

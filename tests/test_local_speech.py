"""The local pipeline's streaming recognizer: decoders shared by calls, and given back whatever happens."""

from __future__ import annotations

import asyncio
import queue

import numpy as np
from pipecat.frames.frames import Frame, InputAudioRawFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.tests.utils import SleepFrame, run_test

from agent.local_speech import CHUNK_BYTES, DecoderPool, PocketsphinxSTTService
from agent.pipelines.common import silero_vad
from local.call_client import espeak_pcm

RATE = 16000


def spoken(text: str, *, trailing_seconds: float = 1.5) -> list[Frame]:
    """Half a second of silence, ``text`` spoken, then silence: 20 ms input frames at 16 kHz."""
    silence = np.zeros(RATE // 2, dtype=np.int16)
    tail = np.zeros(int(trailing_seconds * RATE), dtype=np.int16)
    pcm = np.concatenate([silence, espeak_pcm(text, RATE), tail]).tobytes()
    chunks = range(0, len(pcm), 640)
    return [InputAudioRawFrame(audio=pcm[i : i + 640], sample_rate=RATE, num_channels=1) for i in chunks]


async def heard(pool: DecoderPool, frames: list[Frame]) -> list[str]:
    pipeline = Pipeline([VADProcessor(vad_analyzer=silero_vad()), PocketsphinxSTTService(pool=pool)])
    down, _ = await run_test(pipeline, frames_to_send=[*frames, SleepFrame(sleep=0.5)])
    return [frame.text for frame in down if isinstance(frame, TranscriptionFrame)]


def test_calls_beyond_the_pool_wait_their_turn_and_are_all_heard() -> None:
    pool = DecoderPool(size=1)
    pool.preload()

    async def two_calls_at_once() -> list[list[str]]:
        return list(await asyncio.gather(heard(pool, spoken("how are you")), heard(pool, spoken("how are you"))))

    assert asyncio.run(asyncio.wait_for(two_calls_at_once(), 60)) == [["how are you"], ["how are you"]]


def test_a_call_that_ends_mid_sentence_gives_its_decoder_back() -> None:
    pool = DecoderPool(size=1)
    pool.preload()
    cut_short = spoken("how are you doing today", trailing_seconds=0)[:60]  # ends while still speaking

    async def calls() -> tuple[list[str], list[str]]:
        first = await heard(pool, cut_short)
        return first, await heard(pool, spoken("how are you"))  # would wait for ever on a lost decoder

    first, second = asyncio.run(asyncio.wait_for(calls(), 60))
    assert len(first) <= 1 and second == ["how are you"]


def test_the_pool_ends_an_utterance_nobody_finishes() -> None:
    pool = DecoderPool(size=1, abandon_after=0.2)
    chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    chunks.put(bytes(CHUNK_BYTES))
    assert pool.transcribe(chunks).result(timeout=30) == ""  # no end ever came: it ended by itself
    chunks.put(bytes(CHUNK_BYTES))
    chunks.put(None)
    assert pool.transcribe(chunks).result(timeout=30) == ""  # and its decoder serves the next one

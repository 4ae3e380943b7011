"""Offline speech services of the ``local`` pipeline: pocketsphinx in, a fixed responder, espeak-ng out.

Nothing here touches the network, so local mode and the tests hold real voice calls with no account.
pocketsphinx 5.0.4 carries its US English model inside the wheel; espeak-ng is the Debian package.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import shutil
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from agent.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

DECODER_SAMPLE_RATE: Final = 16000
ESPEAK_SAMPLE_RATE: Final = 22050
MAX_TTS_CHARS: Final = 1000

FIXED_REPLIES: Final[Mapping[str, str]] = {
    "how are you": "I am fine, thank you. How are you?",
    "hello": "Hello! I am the local test agent. Say something and I will repeat it.",
    "thank you": "You are welcome.",
    "goodbye": "Goodbye! Thanks for calling.",
}
NOT_HEARD_REPLY: Final = "Sorry, I did not catch that."


@functools.cache
def shared_decoder() -> tuple[Any, threading.Lock]:
    """The process's one pocketsphinx decoder, and the lock that takes turns on it.

    Loading a decoder takes ~0.3 s of CPU and holds the GIL throughout: one per call would freeze
    every other call's media and ICE whenever calls start together (20 at once: ~6 s). Each
    utterance is decoded whole (start, process, end), so calls share one decoder, one at a time.
    """
    return _load_decoder(), threading.Lock()


def _load_decoder() -> Any:
    try:
        from pocketsphinx import Decoder  # noqa: PLC0415 - optional: only the local pipeline needs it
    except ImportError as exc:
        raise ConfigurationError(
            "the local pipeline needs pocketsphinx==5.0.4 (pip install -r agent/requirements.txt)"
        ) from exc
    return Decoder(samprate=DECODER_SAMPLE_RATE, loglevel="FATAL")


class PocketsphinxSTTService(SegmentedSTTService):
    """Offline speech recognition with pocketsphinx's built-in US English model.

    A segmented service: the VAD marks each utterance and the whole utterance is decoded at once in a
    worker thread, off the event loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            settings=STTSettings(model="pocketsphinx-en-us", language=Language.EN_US),
            ttfs_p99_latency=1.0,
            **kwargs,
        )
        self._decoder: tuple[Any, threading.Lock] | None = None
        self._resampler = create_stream_resampler()

    @property
    def wants_wav_segments(self) -> bool:
        """Pocketsphinx reads raw 16-bit PCM."""
        return False

    def can_generate_metrics(self) -> bool:
        """Report processing metrics (decode time)."""
        return True

    async def setup(self, setup: Any) -> None:
        """Get the process's decoder (loaded once, about 0.3 s) before the first utterance needs it."""
        await super().setup(setup)
        self._decoder = await asyncio.to_thread(shared_decoder)

    def _decode(self, pcm: bytes) -> str:
        if self._decoder is None:
            raise RuntimeError("the decoder is not loaded: setup() has not run")
        decoder, lock = self._decoder
        with lock:
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        return str(hypothesis.hypstr).strip() if hypothesis is not None else ""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Decode one utterance of 16-bit mono PCM into a final transcription."""
        if self.sample_rate != DECODER_SAMPLE_RATE:
            audio = await self._resampler.resample(audio, self.sample_rate, DECODER_SAMPLE_RATE)
        await self.start_processing_metrics()
        try:
            text = await asyncio.to_thread(self._decode, audio)
        except Exception as exc:
            yield ErrorFrame(error=f"pocketsphinx failed: {type(exc).__name__}: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        logger.info("heard %d characters", len(text))
        yield TranscriptionFrame(text=text, user_id=self._user_id, timestamp=time_now_iso8601(), finalized=True)


def reply_to(transcript: str) -> str:
    """Answer a transcript deterministically: a fixed phrase when one matches, else repeat it.

    Args:
        transcript: What the user said, as recognized.

    Returns:
        The text to speak.
    """
    words = " ".join(re.findall(r"[a-z']+", transcript.lower()))
    if not words:
        return NOT_HEARD_REPLY
    for phrase, reply in FIXED_REPLIES.items():
        if re.search(rf"\b{phrase}\b", words):
            return reply
    return f"You said: {words}."


class LocalResponder(FrameProcessor):
    """Turns each final transcription into a spoken reply (see :func:`reply_to`).

    Transcriptions pass on downstream (the TTS service does not speak them) and the reply follows
    as a ``TTSSpeakFrame``; every other frame passes through untouched.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Reply to final transcriptions, pass everything on."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction is FrameDirection.DOWNSTREAM:
            await self.push_frame(TTSSpeakFrame(text=reply_to(frame.text), append_to_context=False))


def espeak_binary() -> str:
    """Return the path of espeak-ng.

    Raises:
        ConfigurationError: It is not installed.
    """
    path = shutil.which("espeak-ng")
    if path is None:
        raise ConfigurationError(
            "the local pipeline needs espeak-ng on PATH: install the Debian package (apt-get install espeak-ng)"
        )
    return path


class EspeakTTSService(TTSService):
    """Offline speech synthesis with the espeak-ng command (22.05 kHz WAV, resampled to the output).

    Args:
        voice: espeak-ng voice name (``en-us``).
        words_per_minute: Speaking rate.
        **kwargs: Passed to ``TTSService``.
    """

    def __init__(self, *, voice: str = "en-us", words_per_minute: int = 160, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="espeak-ng", voice=voice, language=None),
            **kwargs,
        )
        self._binary = espeak_binary()
        self._voice = voice
        self._words_per_minute = words_per_minute

    def can_generate_metrics(self) -> bool:
        """Report TTFB and processing metrics."""
        return True

    async def _synthesize(self, text: str) -> AsyncIterator[bytes]:
        # Text goes in on stdin, never as an argument, so it cannot be read as an option.
        process = await asyncio.create_subprocess_exec(
            self._binary,
            "-v",
            self._voice,
            "-s",
            str(self._words_per_minute),
            "--stdout",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        wav, errors = await process.communicate(text[:MAX_TTS_CHARS].encode())
        if process.returncode != 0:
            raise RuntimeError(f"espeak-ng exited {process.returncode}: {errors.decode(errors='replace')[:200]}")
        yield wav

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Synthesize ``text`` and yield it as audio frames at the output sample rate."""
        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                self._synthesize(text), strip_wav_header=True, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as exc:
            yield ErrorFrame(error=f"espeak-ng failed: {type(exc).__name__}: {exc}")
        finally:
            await self.stop_ttfb_metrics()

"""Offline speech services of the ``local`` pipeline: pocketsphinx in, a fixed responder, espeak-ng out.

Nothing here touches the network, so local mode and the tests hold real voice calls with no account.
pocketsphinx 5.0.4 carries its US English model inside the wheel; espeak-ng is the Debian package.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import logging
import queue
import re
import shutil
import subprocess
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final

import numpy as np
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
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


PRE_ROLL_SECONDS: Final = 1.0
"""Audio kept from before the VAD says speech started: it decides after ``start_secs`` (0.2 s) of
speech and its own analysis windows, and a soft first sound ("how") starts earlier still."""
CHUNK_BYTES: Final = DECODER_SAMPLE_RATE * 2 // 50
"""20 ms of decoder audio: the most the decoder is handed at once, so it holds the GIL briefly."""
PRIMING_SENTENCE: Final = "Hello there."
ABANDONED_AFTER_SECONDS: Final = 10.0
MAX_DECODERS: Final = 2
"""Utterances decoded at once, each on its own decoder (about 90 MB and 0.3 s to load). pocketsphinx
holds the GIL while it decodes, so decoders never run in parallel: two let two callers stream at once,
and more callers wait with their audio queued, then catch up. AgentCore runs one call per process."""


class DecoderPool:
    """Pocketsphinx decoders and the threads that drive them: one utterance per decoder at a time.

    pocketsphinx holds the GIL while it decodes, so each utterance is fed to its decoder 20 ms at a
    time as it is spoken (no call's media waits on a long decode) and only the end of the utterance
    is left to decode when the VAD says it is over. At most ``size`` threads run, so at most ``size``
    decoders are ever loaded (lazily, in those threads); an utterance that finds them all busy waits
    with its audio queued, then catches up.

    Args:
        size: Utterances decoded at once.
        abandon_after: Seconds without audio after which an utterance nobody ended is over.
    """

    def __init__(self, size: int = MAX_DECODERS, *, abandon_after: float = ABANDONED_AFTER_SECONDS) -> None:
        self.size = size
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="pocketsphinx")
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._abandon_after = abandon_after

    def preload(self, count: int = 1) -> None:
        """Load ``count`` decoders now (about 0.4 s of CPU each, the GIL held), not during a call."""
        for _ in range(count):
            self._free.put(_load_decoder())

    def _decoder(self) -> Any:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return _load_decoder()

    def _transcribe(self, chunks: queue.SimpleQueue[bytes | None]) -> str:
        decoder = self._decoder()
        try:
            decoder.start_utt()
            while (chunk := self._next(chunks)) is not None:
                decoder.process_raw(chunk, False, False)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            return str(hypothesis.hypstr).strip() if hypothesis is not None else ""
        finally:
            self._free.put(decoder)

    def _next(self, chunks: queue.SimpleQueue[bytes | None]) -> bytes | None:
        # A call sends audio every 20 ms while it lasts: a long silence means it is gone without
        # ending its utterance, and the decoder goes back to the pool rather than wait for ever.
        try:
            return chunks.get(timeout=self._abandon_after)
        except queue.Empty:
            logger.warning("no audio for %.1f s: ending the utterance", self._abandon_after)
            return None

    def transcribe(self, chunks: queue.SimpleQueue[bytes | None]) -> concurrent.futures.Future[str]:
        """Decode the 16 kHz 16-bit PCM chunks put in ``chunks`` until a ``None``; the future gets the text."""
        return self._executor.submit(self._transcribe, chunks)


@functools.cache
def decoder_pool() -> DecoderPool:
    """The process's decoders, all loaded now.

    Loading one holds the GIL for about 0.4 s, which in the middle of calls would stall every call's
    media (the VAD then ends utterances for lack of audio).
    """
    pool = DecoderPool()
    pool.preload(pool.size)
    return pool


def _load_decoder() -> Any:
    try:
        from pocketsphinx import Decoder  # noqa: PLC0415 - optional: only the local pipeline needs it
    except ImportError as exc:
        raise ConfigurationError(
            "the local pipeline needs pocketsphinx==5.0.4 (pip install -r agent/requirements.txt)"
        ) from exc
    decoder = Decoder(samprate=DECODER_SAMPLE_RATE, loglevel="FATAL")
    _prime(decoder)
    return decoder


def _prime(decoder: Any) -> None:
    """Decode one synthesized sentence whole, so the decoder's cepstral mean fits speech.

    Decoding as audio arrives, pocketsphinx normalizes with a running cepstral mean that starts from
    a generic value: a fresh decoder's first utterance loses its first word ("how are you" is heard
    as "are you"). One whole sentence first sets the mean; later utterances keep it up to date.
    """
    import soxr  # noqa: PLC0415 - a Pipecat dependency; needed only with pocketsphinx

    wav = subprocess.run(  # noqa: S603 - fixed program and arguments; the text goes on stdin
        [espeak_binary(), "-v", "en-us", "--stdout"], input=PRIMING_SENTENCE.encode(), capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        rate = reader.getframerate()
    speech = np.asarray(soxr.resample(samples, rate, DECODER_SAMPLE_RATE), dtype=np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(speech, False, True)
    decoder.end_utt()


class PocketsphinxSTTService(STTService):
    """Offline, streaming speech recognition with pocketsphinx's built-in US English model.

    When the VAD says the caller started speaking, an utterance begins on a decoder of the
    :class:`DecoderPool`, with the last :data:`PRE_ROLL_SECONDS` of audio (the VAD decides late); the
    audio is decoded as it arrives, and when the VAD says the caller stopped, the utterance ends and
    its final transcription follows (in order, one utterance after another).
    """

    def __init__(self, *, pool: DecoderPool | None = None, **kwargs: Any) -> None:
        super().__init__(
            settings=STTSettings(model="pocketsphinx-en-us", language=Language.EN_US),
            ttfs_p99_latency=0.3,
            **kwargs,
        )
        self._pool = pool
        self._resampler = create_stream_resampler()
        self._pre_roll = bytearray()
        self._chunks: queue.SimpleQueue[bytes | None] | None = None
        self._results: asyncio.Queue[asyncio.Future[str] | None] = asyncio.Queue()
        self._results_task: asyncio.Task[None] | None = None

    def can_generate_metrics(self) -> bool:
        """Report processing metrics (the decode left after the caller stopped)."""
        return True

    async def setup(self, setup: Any) -> None:
        """Get the process's decoders (the first call loads one, off the event loop)."""
        await super().setup(setup)
        if self._pool is None:
            self._pool = await asyncio.to_thread(decoder_pool)

    async def start(self, frame: StartFrame) -> None:
        """Start the task that delivers transcriptions in order."""
        await super().start(frame)
        self._results_task = self.create_task(self._deliver_results(), name="pocketsphinx-results")

    async def stop(self, frame: EndFrame) -> None:
        """Finish the utterance in progress and deliver what is queued, then stop."""
        await self._end_utterance()
        if self._results_task is not None:
            await self._results.put(None)
            await self._results_task
            self._results_task = None
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop at once: the utterance in progress ends (its decoder goes back), its text is dropped."""
        if self._chunks is not None:
            self._chunks.put(None)
            self._chunks = None
        if self._results_task is not None:
            await self.cancel_task(self._results_task)
            self._results_task = None
        await super().cancel(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Begin an utterance when the VAD hears speech, end it when the VAD hears it stop."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._end_utterance()  # never two at once
            self._chunks = queue.SimpleQueue()
            for start in range(0, len(self._pre_roll), CHUNK_BYTES):
                self._chunks.put(bytes(self._pre_roll[start : start + CHUNK_BYTES]))
            self._pre_roll.clear()
            if self._pool is None:
                raise RuntimeError("the decoders are not loaded: setup() has not run")
            await self._results.put(asyncio.wrap_future(self._pool.transcribe(self._chunks)))
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.start_processing_metrics()
            await self._end_utterance()

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection) -> None:
        """Feed the utterance in progress, or keep the pre-roll while nobody speaks."""
        self._user_id = getattr(frame, "user_id", "")
        audio = frame.audio
        if self.sample_rate != DECODER_SAMPLE_RATE:
            audio = await self._resampler.resample(audio, self.sample_rate, DECODER_SAMPLE_RATE)
        if self._chunks is not None:
            self._chunks.put(audio)
            return
        self._pre_roll += audio
        excess = len(self._pre_roll) - int(PRE_ROLL_SECONDS * DECODER_SAMPLE_RATE) * 2
        if excess > 0:
            del self._pre_roll[:excess]

    async def _end_utterance(self) -> None:
        if self._chunks is not None:
            self._chunks.put(None)
            self._chunks = None

    async def _deliver_results(self) -> None:
        while (result := await self._results.get()) is not None:
            try:
                text = await result
            except Exception as exc:
                await self.push_error(f"pocketsphinx failed: {type(exc).__name__}: {exc}", exception=exc)
                continue
            finally:
                await self.stop_processing_metrics()
            logger.info("heard %d characters", len(text))
            frame = TranscriptionFrame(text=text, user_id=self._user_id, timestamp=time_now_iso8601(), finalized=True)
            await self.push_frame(frame)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Unused: audio reaches the decoder through :meth:`process_audio_frame`."""
        yield None


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


async def espeak_wav(text: str, *, voice: str = "en-us", words_per_minute: int = 160) -> bytes:
    """espeak-ng saying ``text``: a 22.05 kHz mono WAV file's bytes.

    Raises:
        ConfigurationError: espeak-ng is not installed.
        RuntimeError: espeak-ng failed.
    """
    process = await asyncio.create_subprocess_exec(
        espeak_binary(),
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        "--stdout",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Text goes in on stdin, never as an argument, so it cannot be read as an option.
    wav, errors = await process.communicate(text.encode())
    if process.returncode != 0:
        raise RuntimeError(f"espeak-ng exited {process.returncode}: {errors.decode(errors='replace')[:200]}")
    return wav


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
        espeak_binary()  # no espeak-ng: refuse to build the pipeline, rather than fail mid-call
        self._voice = voice
        self._words_per_minute = words_per_minute

    def can_generate_metrics(self) -> bool:
        """Report TTFB and processing metrics."""
        return True

    async def _synthesize(self, text: str) -> AsyncIterator[bytes]:
        yield await espeak_wav(text[:MAX_TTS_CHARS], voice=self._voice, words_per_minute=self._words_per_minute)

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

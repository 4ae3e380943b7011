"""What the call clients share, whatever carries the call.

The WebRTC client (:mod:`local.call_client`) and the WebSocket client (:mod:`local.websocket_client`)
both:

- :class:`Microphone` plays queued samples in real time, 20 ms at a time, silence in between, and
  knows when the last loud frame of what it said left;
- :class:`Heard` keeps the agent's audio as it arrived and its RTVI messages, and answers the
  questions a test asks of them (first speech after a moment, the transcript, the replies);
- :func:`converse` says a phrase once the agent is listening and waits for the spoken answer;
- :func:`api_request` calls the broker API (:class:`ApiError` when it refuses).
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

PEER_RATE = 48000
"""WebRTC's audio rate (Opus), at which the WebRTC client speaks."""
FRAME_SECONDS = 0.02
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
SPEECH_RMS = 200.0
"""Audio louder than this (int16 RMS) is speech, not silence or comfort noise."""
SPEAKING_EVENTS = ("bot-started-speaking", "bot-stopped-speaking")
RTVI_VERSION = "1.0.0"
"""The RTVI protocol version the client announces in its ``client-ready``."""


def espeak_pcm(text: str, rate: int) -> np.ndarray:
    """Return espeak-ng saying ``text`` as mono int16 samples at ``rate`` Hz."""
    wav = subprocess.run(  # noqa: S603 (fixed program, the text is an argument)
        ["espeak-ng", "-v", "en-us", "--stdout", text],  # noqa: S607
        capture_output=True,
        check=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        source_rate = reader.getframerate()
    return np.asarray(soxr.resample(samples, source_rate, rate), dtype=np.int16)


def rms(samples: np.ndarray) -> float:
    """Root mean square of int16 samples."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


def client_ready() -> dict[str, Any]:
    """The RTVI ``client-ready`` message the Pipecat client sends once its transport is up.

    The agent answers ``bot-ready`` once its pipeline runs.
    """
    ready = {"version": RTVI_VERSION, "about": {"library": "local.call_client"}}
    return {"label": "rtvi-ai", "type": "client-ready", "id": uuid.uuid4().hex, "data": ready}


class Microphone:
    """Plays queued mono samples at ``rate`` in real time, 20 ms frames, silence in between.

    Args:
        rate: The sample rate of the frames it makes.
    """

    def __init__(self, rate: int = PEER_RATE) -> None:
        self.rate = rate
        self.frame_samples = round(rate * FRAME_SECONDS)
        self._pending = np.zeros(0, dtype=np.int16)
        self.position = 0
        """Samples sent so far (the next frame's first sample)."""
        self._start: float | None = None
        self._speech_end: int | None = None
        self.speech_ended_at: float | None = None
        """When the last loud 20 ms frame of the latest clip left (monotonic seconds): the end of the
        utterance as the far end can first know it."""

    def play(self, samples: np.ndarray) -> None:
        """Queue samples to play after what is already queued."""
        size = self.frame_samples
        starts_at = self.position + len(self._pending)
        frames = samples[: len(samples) // size * size].reshape(-1, size)
        loud = [index for index, frame in enumerate(frames) if rms(frame) > SPEECH_RMS]
        if loud:
            self._speech_end = starts_at + (loud[-1] + 1) * size
            self.speech_ended_at = None
        self._pending = np.concatenate([self._pending, samples])

    async def next_frame(self) -> np.ndarray:
        """The next 20 ms of samples (silence when nothing is queued), when it is due."""
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.position / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        size = self.frame_samples
        chunk, self._pending = self._pending[:size], self._pending[size:]
        self.position += size
        if self._speech_end is not None and self.position >= self._speech_end:
            self.speech_ended_at = time.monotonic()
            self._speech_end = None
        return np.pad(chunk, (0, size - len(chunk)))


@dataclass
class Heard:
    """The agent's audio as it arrived and its RTVI messages (with when each arrived)."""

    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """When each RTVI message arrived (monotonic seconds) and its ``type``."""

    def hear_message(self, message: dict[str, Any]) -> None:
        """Record one RTVI message from the agent."""
        self.messages.append(message)
        self.events.append((time.monotonic(), str(message.get("type", ""))))

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``condition()`` holds.

        Raises:
            TimeoutError: It did not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.02)

    def audio_since(self, moment: float) -> np.ndarray:
        """Samples received after ``moment`` (monotonic seconds)."""
        chunks = [samples for at, samples in self.received if at >= moment]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def first_speech_after(self, moment: float) -> float | None:
        """When the first audio frame louder than silence arrived after ``moment``."""
        return next((at for at, samples in self.received if at >= moment and rms(samples) > SPEECH_RMS), None)

    def event_after(self, kind: str, moment: float) -> float | None:
        """When the first RTVI message of type ``kind`` arrived after ``moment``."""
        return next((at for at, event in self.events if event == kind and at >= moment), None)

    def bot_speaking(self) -> bool:
        """Whether the agent's last speaking event says it is speaking."""
        events = [event for _, event in self.events if event in SPEAKING_EVENTS]
        return bool(events) and events[-1] == "bot-started-speaking"

    def bot_replies(self) -> list[str]:
        """What the agent said, sentence by sentence (RTVI ``bot-tts-text``)."""
        return [str(m["data"]["text"]) for m in self.messages if m.get("type") == "bot-tts-text"]

    def transcripts(self) -> list[str]:
        """The final user transcriptions the agent sent (RTVI), in order: one per turn."""
        return [
            str(message["data"]["text"])
            for message in self.messages
            if message.get("type") == "user-transcription" and message.get("data", {}).get("final")
        ]


@dataclass
class Exchange:
    """One thing said and the agent's answer.

    Attributes:
        heard: The agent's transcript of what was said.
        reply: What the agent answered (its TTS text).
        reply_rms: Loudness (int16 RMS) of the reply's audio as received: speech, not silence.
        reply_seconds: From starting to speak to the end of the spoken reply.
        spoken_until: When the utterance's last loud frame left (monotonic seconds).
        reply_audible_at: When the reply's first loud frame arrived (monotonic seconds).
    """

    heard: str | None
    reply: str
    reply_rms: float
    reply_seconds: float
    spoken_until: float
    reply_audible_at: float

    @property
    def voice_to_voice_seconds(self) -> float:
        """From the end of what was said to the first audible word of the answer."""
        return self.reply_audible_at - self.spoken_until


async def converse(heard: Heard, microphone: Microphone, text: str, *, timeout: float = 30) -> Exchange:
    """Wait for the agent to listen and finish speaking, say ``text``, and wait for the spoken answer.

    Raises:
        TimeoutError: The agent did not hear, answer or speak within ``timeout`` seconds.
    """
    # The agent listens once its pipeline runs (bot-ready), which can be after media connects; its
    # greeting starts then.
    await heard.wait_for(lambda: heard.event_after("bot-ready", 0.0) is not None, timeout, "the agent (bot-ready)")
    await asyncio.sleep(0.5)
    await heard.wait_for(lambda: not heard.bot_speaking(), timeout, "the agent to finish speaking")
    replies_before = len(heard.bot_replies())
    transcripts_before = len(heard.transcripts())
    spoke_at = time.monotonic()
    microphone.play(espeak_pcm(text, microphone.rate))
    await heard.wait_for(lambda: microphone.speech_ended_at is not None, timeout, "the utterance to be sent")
    spoken_until = microphone.speech_ended_at or spoke_at
    waits: list[tuple[Callable[[], bool], str]] = [
        (lambda: len(heard.transcripts()) > transcripts_before, "the agent's transcript"),
        # The reply's text comes when its audio has been spoken.
        (lambda: len(heard.bot_replies()) > replies_before, "the agent's reply"),
        (lambda: heard.first_speech_after(spoken_until) is not None, "the spoken reply"),
        (lambda: not heard.bot_speaking(), "the reply to end"),
    ]
    for condition, what in waits:
        await heard.wait_for(condition, timeout, what)
    return Exchange(
        heard=" ".join(heard.transcripts()[transcripts_before:]),
        reply=" ".join(heard.bot_replies()[replies_before:]),
        reply_rms=rms(heard.audio_since(spoken_until)),
        reply_seconds=time.monotonic() - spoke_at,
        spoken_until=spoken_until,
        reply_audible_at=heard.first_speech_after(spoken_until) or spoken_until,
    )


class ApiError(Exception):
    """The broker API answered with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def api_request(url: str, method: str, body: object, token: str | None, timeout: float = 30) -> Any:
    """Send ``body`` as JSON to the broker API and return its decoded JSON answer.

    Raises:
        ApiError: The API answered with an HTTP error (its status and the start of its body).
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 (an http URL the caller chose)
        url, data=json.dumps(body).encode(), method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise ApiError(error.code, error.read().decode(errors="replace")[:500]) from None

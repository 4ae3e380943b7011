"""The offline "model" behind each stream: it hears, answers in speech, yields to barge-in, calls tools.

One :class:`OfflineNovaSonic` per stream. The caller's audio (``audioInput``) goes through Silero VAD
(Nova Sonic detects turns on the server too) and, while speech lasts, to pocketsphinx; when the
caller stops, the transcript goes back as the user's text and the local responder's reply
(:func:`agent.local_speech.reply_to`) is spoken by espeak-ng at the rate ``promptStart`` asked for,
in the documented order of output events::

    completionStart
    contentStart USER TEXT (FINAL)  textOutput <transcript>  contentEnd END_TURN
    contentStart ASSISTANT TEXT (SPECULATIVE)  textOutput <reply>  contentEnd PARTIAL_TURN
    contentStart ASSISTANT AUDIO  audioOutput ...  contentEnd END_TURN
    contentStart ASSISTANT TEXT (FINAL)  textOutput <reply> | {"interrupted": true}  contentEnd END_TURN | INTERRUPTED
    usageEvent  completionEnd

Audio goes out paced a little ahead of real time, so speech from the caller during an answer
(barge-in) cuts it short, as the real model does. Interactive text (Pipecat's opening "Greet me by
saying exactly: ...") is answered like speech. When the caller says (or writes) a declared tool's
name (its words: ``get_weather`` is "get weather"), the model sends ``toolUse`` with the rest of the sentence
as the tool's string arguments, waits for the ``toolResult`` and speaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import queue
import re
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import numpy as np
import soxr
from pipecat.audio.vad.vad_analyzer import VADState

from agent.local_speech import DECODER_SAMPLE_RATE, DecoderPool, espeak_wav, reply_to
from agent.pipelines.common import silero_vad

from . import events, outputs
from .config import NovaSonicConfig
from .events import Completed, Conversation, InputEvent, InvalidEvent
from .outputs import OutputRole, ResponseIds, StopReason, TokenCounts
from .server import Emit, EventRefused, SessionFactory, StreamInfo

logger = logging.getLogger(__name__)

PRE_ROLL_SECONDS: Final = 1.0
"""Audio kept from before the VAD says speech started: it decides after 0.2 s of speech and its own
analysis windows, and a soft first sound ("thank") starts earlier still (as in the local pipeline)."""
AUDIO_CHUNK_SECONDS: Final = 0.1
"""Each ``audioOutput`` event carries this much speech."""
AUDIO_LEAD_SECONDS: Final = 0.4
"""How far ahead of real time the answer's audio is sent: the client buffers this much."""
MAX_SPOKEN_CHARS: Final = 600
_GREETING: Final = re.compile(r"saying exactly:\s*(?P<words>.+)", re.IGNORECASE | re.DOTALL)
_ESPEAK_RATE: Final = 22050


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _spoken(value: Any) -> str:
    """A tool result as words: its strings and numbers in order."""
    if isinstance(value, Mapping):
        return ", ".join(_spoken(item) for item in value.values() if item not in (None, ""))
    if isinstance(value, list):
        return ", ".join(_spoken(item) for item in value)
    return str(value)


def tool_request(transcript: str, tools: list[Mapping[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The tool the caller asked for by name, and its arguments, or None.

    A tool is asked for when its name's words (``get_weather``: "get weather") are in the transcript;
    every string property its input schema requires gets the words after the name (or all of them).

    Args:
        transcript: What the caller said.
        tools: ``toolSpec`` objects from ``promptStart``.
    """
    heard = _words(transcript)
    for spec in tools:
        name = str(spec.get("name", ""))
        phrase = _words(name.replace("_", " ").replace("-", " "))
        if not phrase or not re.search(rf"\b{re.escape(phrase)}\b", heard):
            continue
        rest = heard.split(phrase, 1)[1].strip() or heard
        try:
            schema = json.loads(spec.get("inputSchema", {}).get("json", "{}"))
        except (TypeError, ValueError):
            schema = {}
        properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
        required = schema.get("required", list(properties)) if isinstance(schema, dict) else []
        strings = {key for key, prop in properties.items() if isinstance(prop, dict) and prop.get("type") == "string"}
        arguments = {key: rest for key in required if key in strings}
        return name, arguments
    return None


async def synthesize(text: str, *, sample_rate: int, words_per_minute: int) -> bytes:
    """Speak ``text`` with espeak-ng; 16-bit mono PCM at ``sample_rate``.

    Raises:
        RuntimeError: espeak-ng failed.
    """
    wav = await espeak_wav(text[:MAX_SPOKEN_CHARS], words_per_minute=words_per_minute)
    with wave.open(io.BytesIO(wav)) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        rate = reader.getframerate()
    return np.asarray(soxr.resample(samples, rate, sample_rate), dtype=np.int16).tobytes()


class _ContentIds(ResponseIds):
    content_id: str


class _Turn:
    """The ids one answer's events share."""

    def __init__(self, info: StreamInfo, prompt_name: str) -> None:
        self.ids = ResponseIds(session_id=info.session_id, prompt_name=prompt_name, completion_id=str(uuid.uuid4()))

    def content(self) -> _ContentIds:
        return _ContentIds(**self.ids, content_id=str(uuid.uuid4()))


class OfflineNovaSonic:
    """The model of one stream; see the module's docstring for what it does.

    Args:
        info: The stream's ids.
        emit: Sends one output event's JSON.
        config: Speaking rate.
        pool: pocketsphinx decoders (the process's, shared by every stream).
        clock: Monotonic clock, for the answer's pacing.
    """

    def __init__(
        self,
        info: StreamInfo,
        emit: Emit,
        *,
        config: NovaSonicConfig,
        pool: DecoderPool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._info = info
        self._emit = emit
        self._config = config
        self._pool = pool
        self._clock = clock
        self.conversation = Conversation()
        self._vad = silero_vad()
        self._vad.set_sample_rate(DECODER_SAMPLE_RATE)
        self._input_rate = DECODER_SAMPLE_RATE
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0
        self._utterance: queue.SimpleQueue[bytes | None] | None = None
        self._answer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tool_results: dict[str, asyncio.Future[str]] = {}
        self._closed = False
        self._usage = TokenCounts()
        self.answers: list[str] = []
        self.heard: list[str] = []

    async def receive(self, event: bytes) -> None:
        """Check one input event and act on it.

        Raises:
            EventRefused: It is malformed or out of order.
        """
        try:
            parsed = events.parse_input_event(event)
            completed = self.conversation.accept(parsed)
        except InvalidEvent as exc:
            raise EventRefused(str(exc)) from None
        if parsed.name == "contentStart" and parsed.body.get("type") == "AUDIO":
            self._input_rate = int(parsed.body["audioInputConfiguration"]["sampleRateHertz"])
        elif parsed.name == "audioInput":
            await self._hear(self._decode(parsed))
        elif completed is not None:
            self._completed(completed)

    def _decode(self, event: InputEvent) -> bytes:
        try:
            pcm = events.decode_audio(event)
        except InvalidEvent as exc:
            raise EventRefused(str(exc)) from None
        if self._input_rate != DECODER_SAMPLE_RATE:
            samples = np.frombuffer(pcm, dtype=np.int16)
            pcm = np.asarray(soxr.resample(samples, self._input_rate, DECODER_SAMPLE_RATE), dtype=np.int16).tobytes()
        return pcm

    def _completed(self, completed: Completed) -> None:
        if completed.kind == "TOOL" and completed.tool_use_id is not None:
            waiting = self._tool_results.get(completed.tool_use_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(completed.text)
        elif completed.kind == "TEXT" and completed.interactive and completed.role == "USER":
            greeting = _GREETING.search(completed.text)
            if greeting:
                self._start_answer(transcript=None, reply=greeting["words"].strip())
            else:
                self._answer_words(completed.text, transcript=None)

    async def _hear(self, pcm: bytes) -> None:
        self._pre_roll.append(pcm)
        self._pre_roll_bytes += len(pcm)
        while self._pre_roll_bytes > PRE_ROLL_SECONDS * DECODER_SAMPLE_RATE * 2:
            self._pre_roll_bytes -= len(self._pre_roll.popleft())
        state = await self._vad.analyze_audio(pcm)
        if self._utterance is None and state == VADState.SPEAKING:
            self._utterance = queue.SimpleQueue()
            for chunk in self._pre_roll:
                self._utterance.put(chunk)
            self._barge_in()
            self._spawn(self._transcribe(self._utterance, self._pool.transcribe(self._utterance)))
        elif self._utterance is not None:
            self._utterance.put(pcm)
            if state == VADState.QUIET:
                self._utterance.put(None)
                self._utterance = None

    async def _transcribe(self, chunks: queue.SimpleQueue[bytes | None], decoding: Any) -> None:
        transcript = await asyncio.wrap_future(decoding)
        self.heard.append(transcript)
        logger.info("Nova Sonic stand-in heard %r", transcript)
        if not self._closed:
            self._answer_words(transcript, transcript=transcript)

    def _answer_words(self, words: str, *, transcript: str | None) -> None:
        """Call the tool the words name, if any; else answer them with the local responder."""
        request = tool_request(words, list(self.conversation.tools))
        if request is not None:
            self._start_answer(transcript=transcript, reply=None, tool=request)
        else:
            self._start_answer(transcript=transcript, reply=reply_to(words))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _barge_in(self) -> None:
        if self._answer is not None and not self._answer.done():
            logger.info("Nova Sonic stand-in: barge-in, the answer stops")
            self._answer.cancel()

    def _start_answer(
        self, *, transcript: str | None, reply: str | None, tool: tuple[str, dict[str, Any]] | None = None
    ) -> None:
        previous = self._answer
        self._answer = self._spawn(self._respond(previous, transcript, reply, tool))

    async def _respond(
        self,
        previous: asyncio.Task[None] | None,
        transcript: str | None,
        reply: str | None,
        tool: tuple[str, dict[str, Any]] | None,
    ) -> None:
        if previous is not None:  # one answer at a time, in order
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        prompt = self.conversation.prompt_name
        if prompt is None or self._closed:
            return
        turn = _Turn(self._info, prompt)
        await self._emit(outputs.completion_start(**turn.ids))
        if transcript is not None:
            await self._text(turn, "USER", "FINAL", transcript or "", "END_TURN")
        if tool is not None:
            reply = await self._call_tool(turn, *tool)
        await self._speak(turn, reply or "")

    async def _text(
        self, turn: _Turn, role: OutputRole, stage: Literal["SPECULATIVE", "FINAL"], text: str, stop: StopReason
    ) -> None:
        ids = turn.content()
        await self._emit(outputs.content_start(**ids, type="TEXT", role=role, generation_stage=stage))
        await self._emit(outputs.text_output(**ids, role=role, content=text))
        await self._emit(outputs.content_end(**ids, type="TEXT", role=role, stop_reason=stop))

    async def _call_tool(self, turn: _Turn, name: str, arguments: dict[str, Any]) -> str:
        tool_use_id = str(uuid.uuid4())
        self.conversation.issue_tool_use(tool_use_id)
        waiting: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tool_results[tool_use_id] = waiting
        ids = turn.content()
        await self._emit(outputs.content_start(**ids, type="TOOL", role="TOOL"))
        arguments_json = json.dumps(arguments)
        await self._emit(outputs.tool_use(**ids, tool_use_id=tool_use_id, tool_name=name, content=arguments_json))
        await self._emit(outputs.content_end(**ids, type="TOOL", role="TOOL", stop_reason="TOOL_USE"))
        try:
            result = await waiting
        finally:
            del self._tool_results[tool_use_id]
        try:
            return _spoken(json.loads(result))
        except ValueError:
            return result

    async def _speak(self, turn: _Turn, reply: str) -> None:
        output = self.conversation.audio_output or {}
        rate = int(output.get("sampleRateHertz", 24000))
        await self._text(turn, "ASSISTANT", "SPECULATIVE", reply, "PARTIAL_TURN")
        audio: _ContentIds | None = None
        pcm = b""
        try:
            pcm = await synthesize(reply, sample_rate=rate, words_per_minute=self._config.words_per_minute)
            audio = turn.content()
            await self._emit(outputs.content_start(**audio, type="AUDIO", role="ASSISTANT", audio=output))
            await self._stream_audio(audio, pcm, rate)
        except asyncio.CancelledError:
            # Barge-in: the audio ends where it is, and the final text says the answer was interrupted.
            if audio is not None:
                await self._emit(outputs.content_end(**audio, type="AUDIO", role="ASSISTANT", stop_reason="END_TURN"))
            await self._text(turn, "ASSISTANT", "FINAL", outputs.INTERRUPTED_TEXT, "INTERRUPTED")
            await self._finish(turn, reply, rate, len(pcm), "INTERRUPTED")
            raise
        await self._emit(outputs.content_end(**audio, type="AUDIO", role="ASSISTANT", stop_reason="END_TURN"))
        await self._text(turn, "ASSISTANT", "FINAL", reply, "END_TURN")
        self.answers.append(reply)
        await self._finish(turn, reply, rate, len(pcm), "END_TURN")

    async def _stream_audio(self, ids: _ContentIds, pcm: bytes, rate: int) -> None:
        step = int(AUDIO_CHUNK_SECONDS * rate) * 2
        started = self._clock()
        for offset in range(0, len(pcm), step):
            due = started + offset / (2 * rate) - AUDIO_LEAD_SECONDS
            if (wait := due - self._clock()) > 0:
                await asyncio.sleep(wait)
            await self._emit(outputs.audio_output(**ids, pcm=pcm[offset : offset + step]))

    async def _finish(self, turn: _Turn, reply: str, rate: int, audio_bytes: int, stop: StopReason) -> None:
        # Rough token counts, for the usage metrics the client reports: the stand-in has no tokenizer.
        delta = TokenCounts(output_speech=round(audio_bytes / (2 * rate) * 10), output_text=max(1, len(reply) // 4))
        self._usage = self._usage + delta
        await self._emit(
            outputs.usage_event(
                **turn.ids,
                input_speech=delta.input_speech,
                input_text=delta.input_text,
                output_speech=delta.output_speech,
                output_text=delta.output_text,
                total=self._usage,
            )
        )
        await self._emit(outputs.completion_end(**turn.ids, stop_reason=stop))

    async def close(self) -> None:
        """Stop listening and answering (the stream is over)."""
        self._closed = True
        if self._utterance is not None:
            self._utterance.put(None)
            self._utterance = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._vad.cleanup()  # type: ignore[no-untyped-call]


def offline_sessions(config: NovaSonicConfig, pool: DecoderPool | None = None) -> SessionFactory:
    """A session factory of :class:`OfflineNovaSonic` models sharing one decoder pool."""
    if pool is None:
        from agent.local_speech import decoder_pool  # noqa: PLC0415 - loads two decoders (about 0.8 s)

        pool = decoder_pool()
    shared = pool

    def make(info: StreamInfo, emit: Emit) -> OfflineNovaSonic:
        return OfflineNovaSonic(info, emit, config=config, pool=shared)

    return make

"""A WebSocket call client of the broker API: what a browser running Pipecat's websocket transport does.

It calls ``POST /start`` with ``transport: "websocket"``, opens the presigned ``ws_url`` it gets back
(AgentCore's data plane, or local mode's stand-in for it), and speaks Pipecat's protobuf frames: its
microphone as 16 kHz audio frames every 20 ms, RTVI messages as message frames; the agent answers with
24 kHz audio frames and RTVI messages. ``python -m local.call_client --transport websocket`` uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as frames
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from local.call_common import Exchange, Heard, Microphone, api_request, client_ready, converse

MICROPHONE_RATE: Final = 16000
"""What the browser's websocket transport sends (its ``RECORDER_SAMPLE_RATE``)."""
PLAYER_RATE: Final = 24000
"""What the browser's websocket transport plays what it receives at (its ``PLAYER_SAMPLE_RATE``)."""
MAX_FRAME_BYTES: Final = 1 << 20
"""Largest frame accepted from the agent (the browser transport's own limit)."""


@dataclass(frozen=True)
class WebSocketTimes:
    """How long a WebSocket call took to come up.

    Attributes:
        start_seconds: ``POST /start``'s round trip.
        connect_seconds: From opening the WebSocket to its upgrade answered.
    """

    start_seconds: float
    connect_seconds: float


def audio_frame(samples: np.ndarray, rate: int = MICROPHONE_RATE) -> bytes:
    """One protobuf audio frame of mono int16 ``samples``."""
    frame = frames.Frame()  # type: ignore[attr-defined]
    frame.audio.audio = samples.astype("<i2").tobytes()
    frame.audio.sample_rate = rate
    frame.audio.num_channels = 1
    return bytes(frame.SerializeToString())


def message_frame(message: dict[str, Any]) -> bytes:
    """One protobuf message frame carrying a JSON (RTVI) message."""
    frame = frames.Frame()  # type: ignore[attr-defined]
    frame.message.data = json.dumps(message)
    return bytes(frame.SerializeToString())


class WebSocketCall:
    """One call over the agent's WebSocket, its URL presigned by the broker API.

    Args:
        base_url: The broker API, e.g. ``http://127.0.0.1:7860``.
        token: Bearer token, when the API checks one.
    """

    def __init__(self, base_url: str, *, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.heard = Heard()
        self.microphone = Microphone(MICROPHONE_RATE)
        self.session_id: str | None = None
        self.started_at = 0.0
        """When ``POST /start`` was sent (monotonic seconds): the click of a browser call."""
        self.player_rates: set[int] = set()
        """The sample rates the agent's audio frames said they had."""
        self._socket: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, timeout: float = 30) -> WebSocketTimes:
        """Start a session, open its WebSocket, and start speaking (silence) and listening.

        Raises:
            ApiError: The API refused ``/start``.
            websockets.exceptions.InvalidStatus: The WebSocket upgrade was refused (e.g. 403).
            TimeoutError: The upgrade was not answered in time.
        """
        began = self.started_at = time.monotonic()
        start = await asyncio.to_thread(
            api_request, f"{self.base_url}/start", "POST", {"transport": "websocket"}, self.token
        )
        started = time.monotonic()
        self.session_id = start["sessionId"]
        self._socket = await connect(start["ws_url"], max_size=MAX_FRAME_BYTES, open_timeout=timeout)
        opened = time.monotonic()
        await self._socket.send(message_frame(client_ready()))
        self._tasks = [asyncio.ensure_future(self._speak()), asyncio.ensure_future(self._listen())]
        return WebSocketTimes(start_seconds=started - began, connect_seconds=opened - started)

    async def _speak(self) -> None:
        socket = self._socket
        assert socket is not None  # noqa: S101 (connect() set it)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await socket.send(audio_frame(await self.microphone.next_frame()))

    async def _listen(self) -> None:
        socket = self._socket
        assert socket is not None  # noqa: S101 (connect() set it)
        with contextlib.suppress(ConnectionClosed):
            async for data in socket:
                if not isinstance(data, bytes):
                    continue  # the agent speaks protobuf only
                frame = frames.Frame.FromString(data)  # type: ignore[attr-defined]
                kind = frame.WhichOneof("frame")
                if kind == "audio":
                    self.player_rates.add(int(frame.audio.sample_rate))
                    samples = np.frombuffer(frame.audio.audio, dtype="<i2").astype(np.int16)
                    self.heard.received.append((time.monotonic(), samples))
                elif kind == "message":
                    message = json.loads(frame.message.data)
                    if isinstance(message, dict):
                        self.heard.hear_message(message)

    @property
    def closed(self) -> bool:
        """Whether the WebSocket has closed (the agent hung up, or :meth:`close`)."""
        return self._socket is None or self._socket.close_code is not None

    async def say(self, text: str, *, timeout: float = 30) -> Exchange:
        """Wait for the agent to finish speaking, speak ``text``, and wait for its transcript and reply.

        Raises:
            TimeoutError: The agent did not hear, answer or speak within ``timeout`` seconds.
        """
        if self._socket is None:
            raise RuntimeError("connect() first")
        return await converse(self.heard, self.microphone, text, timeout=timeout)

    async def close(self) -> None:
        """Hang up."""
        if self._socket is not None:
            await self._socket.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

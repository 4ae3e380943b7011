"""Calls over AgentCore's WebSocket: ``/ws`` speaks Pipecat's protobuf frames.

AgentCore's data plane relays a client's WebSocket to the container's ``/ws`` (port 8080) and names the
session in the ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id`` header. Each connection is one call:
the same pipeline and greeting as a WebRTC call, between a Pipecat ``FastAPIWebsocketTransport`` and
``ProtobufFrameSerializer``, the wire format of the browser's ``@pipecat-ai/websocket-transport``.

The contract with the client, checked by :class:`WebSocketGuard` before Pipecat reads a message:

- binary messages only, each one protobuf ``pipecat.Frame`` of kind ``audio`` (mono 16-bit PCM at
  16 kHz, what the browser records) or ``message`` (an RTVI message: a JSON object);
- at most ``AGENT_MAX_FRAME_BYTES`` per message (see :data:`agent.config.DEFAULT_MAX_FRAME_BYTES`);
- the agent sends 24 kHz audio frames (what the browser plays, whatever rate the frame declares) and
  RTVI messages.

Anything else ends that call, and only that call: the agent closes the WebSocket with a close code
that says why (:class:`Refusal`), logs one line, and the call's pipeline is cancelled as when the peer
leaves. A connection without the session header (nothing sets it outside AgentCore) is served all the
same; its log lines name it by the client's address instead.

This module imports only the standard library and the AgentCore SDK's header name: the server imports
it at start, and a call imports Pipecat's WebSocket transport when it begins.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bedrock_agentcore.runtime.models import SESSION_HEADER

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from agent.bot import BotPipeline
    from agent.config import AgentConfig

__all__ = [
    "CLIENT_AUDIO_IN_RATE",
    "CLIENT_AUDIO_OUT_RATE",
    "NORMAL_CLOSE_CODES",
    "READ_KINDS",
    "SESSION_HEADER",
    "WEBSOCKET_PATH",
    "Refusal",
    "WebSocketGuard",
    "call_name",
    "refusal",
    "run_websocket_call",
]

logger = logging.getLogger(__name__)

WEBSOCKET_PATH: Final = "/ws"
CLIENT_AUDIO_IN_RATE: Final = 16000
"""What the browser's transport records and sends (its ``RECORDER_SAMPLE_RATE``)."""
CLIENT_AUDIO_OUT_RATE: Final = 24000
"""What the browser's transport plays what it receives at (its ``PLAYER_SAMPLE_RATE``): it ignores
the sample rate an audio frame declares, so the agent must send exactly this."""
READ_KINDS: Final = frozenset({"audio", "message"})
"""The frame kinds the browser's transport sends, and the only ones the agent reads."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Refusal:
    """Why a client's message ends its call, as the WebSocket close that tells the client.

    Attributes:
        code: The close code (RFC 6455: 1003 unsupported data, 1007 invalid payload, 1009 too big).
        reason: The close reason (short: a close frame carries at most 123 bytes of it).
    """

    code: int
    reason: str


def refusal(message: Message, *, max_bytes: int) -> Refusal | None:
    """Check one ``websocket.receive`` message against the contract (see the module docstring).

    Args:
        message: The ASGI message.
        max_bytes: Largest message accepted.

    Returns:
        ``None`` when Pipecat may read the message, else why the call ends.
    """
    data, text = message.get("bytes"), message.get("text")
    size = len(data) if data is not None else len(text.encode()) if text is not None else 0
    if size > max_bytes:
        return Refusal(1009, f"message of {size} bytes exceeds {max_bytes}")
    if data is None:
        return Refusal(1003, "text messages are not accepted: send protobuf frames as binary messages")
    return _frame_refusal(data)


def _frame_refusal(data: bytes) -> Refusal | None:
    # Imported at the first message: by then the call has loaded Pipecat's transport, which needs it.
    import pipecat.frames.protobufs.frames_pb2 as frames  # noqa: PLC0415
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        frame = frames.Frame.FromString(data)  # type: ignore[attr-defined]
    except DecodeError:
        return Refusal(1007, "not a protobuf pipecat.Frame")
    kind = frame.WhichOneof("frame")
    if kind not in READ_KINDS:
        return Refusal(1003 if kind else 1007, f"frame kind {kind or 'none'} is not accepted (audio, message)")
    if kind == "audio":
        audio = frame.audio
        valid = audio.sample_rate == CLIENT_AUDIO_IN_RATE and audio.num_channels == 1 and len(audio.audio) % 2 == 0
        return None if valid else Refusal(1007, f"audio must be mono 16-bit PCM at {CLIENT_AUDIO_IN_RATE} Hz")
    try:
        decoded = json.loads(frame.message.data)
    except ValueError:
        decoded = None
    return None if isinstance(decoded, dict) else Refusal(1007, "a message frame must carry a JSON object")


def call_name(scope: Scope) -> str:
    """How the logs name a ``/ws`` call: its AgentCore session id, else the client's address."""
    header = SESSION_HEADER.lower().encode()
    for name, value in scope.get("headers", []):
        if name == header and value:
            return bytes(value).decode("latin-1")
    client = scope.get("client")
    return f"{client[0]}:{client[1]} (no session id)" if client else "(no session id)"


NORMAL_CLOSE_CODES: Final = frozenset({1000, 1001, 1005})
"""Closes that say nothing went wrong: normal, going away (a closed tab), no code given. uvicorn
reports a connection lost without a close (a client that vanished) as 1005 too."""


def _log_close(name: str, code: int, max_bytes: int) -> None:
    if code == 1009:
        # uvicorn's ws_max_size (the same limit) refused a message from its length.
        logger.warning("WebSocket call %s: a message exceeded %d bytes; closed (code 1009)", name, max_bytes)
    elif code not in NORMAL_CLOSE_CODES:
        logger.info("WebSocket call %s: closed with code %d", name, code)


class WebSocketGuard:
    """ASGI middleware: a ``/ws`` message outside the contract ends its call, cleanly.

    The guard closes the WebSocket with the :class:`Refusal`'s code and hands the application a
    ``websocket.disconnect`` instead of the message, so Pipecat sees a peer that left and cancels the
    call's pipeline. Once the connection is closed (by the guard or the peer), what the application
    still sends is dropped: the disconnect is already on its way to it through ``receive``, and
    Pipecat would otherwise log a warning for every audio chunk in between.

    Args:
        app: The application to guard.
        max_bytes: Largest message accepted (the server's own ``ws_max_size`` should be the same, so
            that it refuses a larger one before buffering it; this check holds under any server).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard ``/ws`` connections; pass everything else through."""
        if scope["type"] != "websocket" or scope["path"] != WEBSOCKET_PATH:
            await self.app(scope, receive, send)
            return
        closed = False

        async def guarded_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.disconnect":
                closed = True
                _log_close(call_name(scope), int(message.get("code", 1005)), self.max_bytes)
            elif message["type"] == "websocket.receive" and not closed:
                problem = refusal(message, max_bytes=self.max_bytes)
                if problem is not None:
                    closed = True
                    logger.warning(
                        "WebSocket call %s: %s; closing it (code %d)", call_name(scope), problem.reason, problem.code
                    )
                    with contextlib.suppress(OSError):  # the peer may be gone already
                        await send({"type": "websocket.close", "code": problem.code, "reason": problem.reason})
                    return {"type": "websocket.disconnect", "code": problem.code, "reason": problem.reason}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal closed
            if closed and message["type"] in ("websocket.send", "websocket.close"):
                return
            try:
                await send(message)
            except OSError:
                # The peer vanished (uvicorn's ClientDisconnected): its disconnect follows in receive.
                if message["type"] not in ("websocket.send", "websocket.close"):
                    raise
                closed = True

        await self.app(scope, guarded_receive, guarded_send)


async def run_websocket_call(
    websocket: WebSocket, *, name: str, take_pipeline: Callable[[], Awaitable[BotPipeline]], config: AgentConfig
) -> None:
    """Accept one ``/ws`` connection and run its call until either side ends it.

    The WebSocket is accepted before the call's pipeline is taken, so the client's first audio and
    its ``client-ready`` wait in the server's queue while the pipeline is built, and are heard. With
    ``PIPECAT_ALLOWED_ORIGINS`` set, an ``Origin`` it does not list is refused at the upgrade (403).

    Args:
        websocket: The connection (through :class:`WebSocketGuard`).
        name: The call's name in the logs (:func:`call_name`).
        take_pipeline: Returns the call's pipeline (:meth:`agent.pipelines.CallPipelines.take`).
        config: The settings (connect timeout, metrics output).
    """
    # Pipecat's own Origin check (PIPECAT_ALLOWED_ORIGINS, empty for any), made before the upgrade so
    # that a refused connection costs no pipeline (nor takes the one built ahead for the first call).
    from pipecat.utils.security.allowed_origins import default_allowed_origins, is_origin_allowed  # noqa: PLC0415

    allowed_origins = default_allowed_origins()
    origin = websocket.headers.get("origin", "")
    if allowed_origins and not is_origin_allowed(origin, allowed_origins):
        logger.warning("WebSocket call %s refused: origin %r is not in PIPECAT_ALLOWED_ORIGINS", name, origin)
        await websocket.close(code=1008)  # before accepting: the upgrade gets HTTP 403
        return
    await websocket.accept()
    logger.info("WebSocket call %s connected", name)
    try:
        bot = await take_pipeline()
    except Exception as exc:
        # The server logs why (and stops, for the first pipeline); the client learns it cannot be served.
        logger.error("WebSocket call %s: no pipeline (%s); closing it (code 1011)", name, type(exc).__name__)
        await websocket.close(code=1011, reason="the agent cannot build its pipeline")
        return
    # Building the pipeline imported agent.bot and most of Pipecat already.
    from pipecat.serializers.protobuf import ProtobufFrameSerializer  # noqa: PLC0415
    from pipecat.transports.websocket.fastapi import (  # noqa: PLC0415
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )

    from agent.bot import run_bot  # noqa: PLC0415

    params = FastAPIWebsocketParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=CLIENT_AUDIO_IN_RATE,
        # Pipecat's output resamples the pipeline's audio to this rate, the one the browser plays.
        audio_out_sample_rate=CLIENT_AUDIO_OUT_RATE,
        serializer=ProtobufFrameSerializer(),
        allowed_origins=allowed_origins,
    )
    transport = FastAPIWebsocketTransport(websocket, params)
    reason = await run_bot(
        transport,
        bot,
        connect_timeout=config.connect_timeout_seconds,
        transport_name="websocket",
        metrics_output=config.metrics,
    )
    logger.info("WebSocket call %s ended: %s", name, reason)

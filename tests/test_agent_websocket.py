"""The agent's ``/ws`` endpoint: calls over a real WebSocket in Pipecat's protobuf frames, busy state,
and messages outside the contract, each of which ends only its own call.

The agent runs on 127.0.0.1 with the uvicorn settings ``python -m agent`` uses
(:func:`agent.__main__.server_config`), the ``local`` pipeline (pocketsphinx and espeak-ng), and the
client speaks as the browser's ``@pipecat-ai/websocket-transport`` does: 16 kHz audio frames every
20 ms, RTVI messages as message frames (helpers from :mod:`local.websocket_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as frames
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from agent.__main__ import server_config
from agent.config import DEFAULT_MAX_FRAME_BYTES, AgentConfig
from agent.exceptions import ConfigurationError
from agent.ice import no_ice_servers
from agent.server import create_app
from agent.websocket_calls import CLIENT_AUDIO_OUT_RATE, SESSION_HEADER, Refusal, refusal
from local.call_common import SPEECH_RMS, Heard, Microphone, client_ready, converse, rms
from local.websocket_client import MICROPHONE_RATE, audio_frame, message_frame
from tests.agent_support import AgentServer, captured_logs, serving

SESSION_ID = "test-session-0123456789abcdefghijklmnop"  # 33+ characters, as AgentCore's are


def run[T](coro: Awaitable[T], timeout: float = 25.0) -> T:
    """Run a coroutine on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@contextmanager
def served_as_main(config: AgentConfig) -> Iterator[AgentServer]:
    """Serve ``create_app(config)`` on a free loopback port as ``python -m agent`` does (lifespan on,
    its uvicorn limits)."""
    app = create_app(config, ice_servers=no_ice_servers)
    with serving(app, config=server_config(app, config)) as agent:
        yield agent


CONFIG = AgentConfig(pipeline="local", greeting="Hello from the agent.", connect_timeout_seconds=5, metrics="log")


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    with served_as_main(CONFIG) as server:
        yield server


class WsPeer:
    """A client of ``/ws``: speaks its microphone (silence until told) and keeps what it hears."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.heard = Heard()
        self.microphone = Microphone(MICROPHONE_RATE)
        self.audio_rates: set[int] = set()
        self._tasks = [asyncio.ensure_future(self._speak()), asyncio.ensure_future(self._listen())]

    @classmethod
    async def open(
        cls, agent: AgentServer, *, session_id: str | None = SESSION_ID, origin: str | None = None
    ) -> WsPeer:
        headers = {SESSION_HEADER: session_id} if session_id else {}
        socket = await connect(
            f"ws://127.0.0.1:{agent.port}/ws",
            additional_headers=headers,
            origin=Origin(origin) if origin else None,
            max_size=1 << 22,
        )
        await socket.send(message_frame(client_ready()))
        return cls(socket)

    async def _speak(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.socket.send(audio_frame(await self.microphone.next_frame()))

    async def _listen(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.socket:
                assert isinstance(data, bytes), "the agent sends binary frames only"
                frame = frames.Frame.FromString(data)  # type: ignore[attr-defined]
                kind = frame.WhichOneof("frame")
                if kind == "audio":
                    self.audio_rates.add(frame.audio.sample_rate)
                    samples = np.frombuffer(frame.audio.audio, dtype="<i2").astype(np.int16)
                    self.heard.received.append((time.monotonic(), samples))
                elif kind == "message":
                    self.heard.hear_message(json.loads(frame.message.data))

    async def ready(self, timeout: float = 15) -> None:
        """Wait until the call's pipeline runs (RTVI ``bot-ready``)."""
        await self.heard.wait_for(lambda: self.heard.event_after("bot-ready", 0) is not None, timeout, "bot-ready")

    async def stop_speaking(self) -> None:
        """Stop the microphone (the connection stays open)."""
        self._tasks[0].cancel()
        await asyncio.gather(self._tasks[0], return_exceptions=True)

    async def closed_by_agent(self, timeout: float = 10) -> tuple[int | None, str | None]:
        """Wait for the agent to close the connection; return its close code and reason."""
        await asyncio.wait_for(self.socket.wait_closed(), timeout)
        return self.socket.close_code, self.socket.close_reason

    async def close(self) -> None:
        await self.socket.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def no_tracebacks(lines: list[str]) -> None:
    # The SDK's tracing logs, at DEBUG, that no OpenTelemetry provider is set up: not the call's.
    ours = [line for line in lines if not line.startswith("bedrock_agentcore.runtime.tracing:")]
    assert not [line for line in ours if "Traceback" in line or "Exception in ASGI" in line], ours


# --- one call, end to end ---------------------------------------------------------------------------


def test_a_call_greets_hears_answers_and_keeps_ping_busy_until_it_ends(agent: AgentServer) -> None:
    async def scenario() -> None:
        with captured_logs() as lines:
            assert agent.ping() == "Healthy"
            peer = await WsPeer.open(agent)
            assert await asyncio.to_thread(agent.ping) == "HealthyBusy"
            await peer.ready()
            await peer.heard.wait_for(lambda: peer.heard.first_speech_after(0) is not None, 15, "the greeting")
            exchange = await converse(peer.heard, peer.microphone, "how are you", timeout=15)
            assert await asyncio.to_thread(agent.ping) == "HealthyBusy"
            await peer.close()
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
        greeting = peer.heard.audio_since(0)[: CLIENT_AUDIO_OUT_RATE * 2]
        assert rms(greeting) > SPEECH_RMS, "the greeting should be speech"
        assert exchange.heard == "how are you"
        assert exchange.reply
        assert exchange.reply_rms > SPEECH_RMS
        assert peer.audio_rates == {CLIENT_AUDIO_OUT_RATE}, "the browser plays 24 kHz whatever a frame says"
        assert any(f"WebSocket call {SESSION_ID} connected" in line for line in lines), lines
        assert any(f"WebSocket call {SESSION_ID} ended: peer-left" in line for line in lines), lines
        no_tracebacks(lines)

    run(scenario())


# --- messages outside the contract -------------------------------------------------------------------


def test_the_contract_refuses_what_the_browser_never_sends() -> None:
    def frame(**fields: Any) -> bytes:
        proto = frames.Frame()  # type: ignore[attr-defined]
        for kind, values in fields.items():
            for name, value in values.items():
                setattr(getattr(proto, kind), name, value)
        return bytes(proto.SerializeToString())

    audio = audio_frame(np.zeros(320, dtype=np.int16))
    limit = 4096
    assert refusal({"bytes": audio}, max_bytes=limit) is None
    assert refusal({"bytes": message_frame(client_ready())}, max_bytes=limit) is None
    cases = {
        "text message": ({"text": "hello"}, 1003),
        "garbage": ({"bytes": b"\xff" * 64}, 1007),
        "truncated": ({"bytes": audio[:-7]}, 1007),
        "empty frame": ({"bytes": b""}, 1007),
        "text frame": ({"bytes": frame(text={"text": "hi"})}, 1003),
        "transcription": ({"bytes": frame(transcription={"text": "hi"})}, 1003),
        "48 kHz audio": ({"bytes": audio_frame(np.zeros(960, dtype=np.int16), 48000)}, 1007),
        "stereo audio": ({"bytes": frame(audio={"audio": b"\0" * 8, "sample_rate": 16000, "num_channels": 2})}, 1007),
        "odd-length audio": (
            {"bytes": frame(audio={"audio": b"\0" * 7, "sample_rate": 16000, "num_channels": 1})},
            1007,
        ),
        "non-JSON message": ({"bytes": frame(message={"data": "{not json"})}, 1007),
        "JSON list message": ({"bytes": frame(message={"data": "[1, 2]"})}, 1007),
        "too big": ({"bytes": b"\0" * (limit + 1)}, 1009),
        "too big text": ({"text": "é" * (limit // 2 + 1)}, 1009),
    }
    for name, (message, code) in cases.items():
        found = refusal(message, max_bytes=limit)
        assert isinstance(found, Refusal), name
        assert found.code == code, (name, found)
        assert len(found.reason.encode()) <= 123, "a close frame carries at most 123 bytes of reason"


BAD_MESSAGES: dict[str, tuple[bytes | str, int, str]] = {
    "garbage": (b"\xff\xfe not protobuf at all \x00\x01", 1007, "not a protobuf pipecat.Frame; closing it (code 1007)"),
    "text message": ('{"label": "rtvi-ai", "type": "client-ready"}', 1003, "text messages are not accepted"),
    "truncated protobuf": (audio_frame(np.zeros(320, dtype=np.int16))[:-9], 1007, "not a protobuf pipecat.Frame"),
    # Refused by uvicorn from its length (ws_max_size), before the agent buffers it.
    "oversized": (
        audio_frame(np.zeros(DEFAULT_MAX_FRAME_BYTES // 2 + 1, dtype=np.int16)),
        1009,
        f"a message exceeded {DEFAULT_MAX_FRAME_BYTES} bytes; closed (code 1009)",
    ),
}


@pytest.mark.parametrize("name", BAD_MESSAGES)
def test_a_bad_message_ends_only_its_call(agent: AgentServer, name: str) -> None:
    bad, code, logged = BAD_MESSAGES[name]

    async def scenario() -> None:
        with captured_logs() as lines:
            survivor = await WsPeer.open(agent, session_id="survivor-0123456789abcdefghijklmnop")
            offender = await WsPeer.open(agent, session_id=None)  # as a local client: no session header
            await asyncio.gather(survivor.ready(), offender.ready())
            await offender.socket.send(bad)
            closed_with, _reason = await offender.closed_by_agent()
            assert closed_with == code
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(agent.ping) == "HealthyBusy", "the survivor's call goes on"
            assert survivor.socket.close_code is None
            await survivor.close()
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
            await offender.close()
        no_tracebacks(lines)
        offender_lines = [line for line in lines if line.startswith("agent.") and "(no session id)" in line]
        assert any(logged in line for line in offender_lines), offender_lines
        assert "ended: peer-left" in offender_lines[-1], offender_lines

    run(scenario())


def test_the_guard_enforces_the_frame_limit_under_any_server() -> None:
    # agent_support.serving uses uvicorn's defaults (16 MiB): the agent's own check must hold.
    config = AgentConfig(pipeline="local", greeting="", max_frame_bytes=8192, metrics="log")

    async def scenario(server: AgentServer) -> None:
        with captured_logs() as lines:
            peer = await WsPeer.open(server)
            await peer.ready()
            await peer.socket.send(b"\0" * 8193)
            assert await peer.closed_by_agent() == (1009, "message of 8193 bytes exceeds 8192")
            await asyncio.to_thread(server.wait_ping, "Healthy", 10)
            await peer.close()
        assert any(f"WebSocket call {SESSION_ID}: message of 8193 bytes" in line for line in lines), lines
        no_tracebacks(lines)

    with serving(create_app(config, ice_servers=no_ice_servers)) as server:
        run(scenario(server))


def test_a_client_that_vanishes_ends_its_call_and_the_next_call_is_served(agent: AgentServer) -> None:
    async def scenario() -> None:
        with captured_logs() as lines:
            peer = await WsPeer.open(agent)
            await peer.ready()
            peer.socket.transport.abort()  # no close frame: the TCP connection just goes
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
            await peer.close()
            again = await WsPeer.open(agent)
            await again.ready()
            await again.heard.wait_for(lambda: again.heard.first_speech_after(0) is not None, 15, "the greeting")
            await again.close()
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
        no_tracebacks(lines)
        assert sum(f"WebSocket call {SESSION_ID} ended: peer-left" in line for line in lines) == 2, lines

    run(scenario())


def test_a_client_that_stops_talking_mid_greeting_still_ends_cleanly(agent: AgentServer) -> None:
    async def scenario() -> None:
        with captured_logs() as lines:
            peer = await WsPeer.open(agent)
            await peer.ready()
            await peer.heard.wait_for(lambda: peer.heard.first_speech_after(0) is not None, 15, "the greeting")
            await peer.stop_speaking()
            await peer.socket.close()  # while the agent is still sending the greeting's audio
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
            await peer.close()
        no_tracebacks(lines)
        assert not [line for line in lines if "exception sending data" in line], lines

    run(scenario())


def test_an_origin_outside_pipecat_allowed_origins_is_refused_at_the_upgrade(
    agent: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPECAT_ALLOWED_ORIGINS", "https://app.example.com")
    url = f"ws://127.0.0.1:{agent.port}/ws"

    async def scenario() -> None:
        with captured_logs() as lines:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, origin=Origin("https://evil.example.com"))
            assert refused.value.response.status_code == 403
            await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
            allowed = await WsPeer.open(agent, origin="https://app.example.com")
            await allowed.ready()
            await allowed.close()
        assert any("origin 'https://evil.example.com' is not in PIPECAT_ALLOWED_ORIGINS" in line for line in lines)
        no_tracebacks(lines)

    run(scenario())


# --- the setting -----------------------------------------------------------------------------------


def test_the_frame_limit_is_a_setting_with_a_floor() -> None:
    assert AgentConfig.from_env({"AGENT_PIPELINE": "local"}).max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
    assert AgentConfig.from_env({"AGENT_PIPELINE": "local", "AGENT_MAX_FRAME_BYTES": "65536"}).max_frame_bytes == 65536
    with pytest.raises(ConfigurationError, match="AGENT_MAX_FRAME_BYTES must be >= 4096"):
        AgentConfig.from_env({"AGENT_PIPELINE": "local", "AGENT_MAX_FRAME_BYTES": "100"})
    config = AgentConfig(pipeline="local", max_frame_bytes=65536)
    assert server_config(create_app(config), config).ws_max_size == 65536

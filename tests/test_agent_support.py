"""Helpers for the agent tests (no tests here): a real agent server, an aiortc peer, espeak audio."""

from __future__ import annotations

import asyncio
import fractions
import http.client
import io
import json
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import numpy as np
import soxr
import uvicorn
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from agent.config import AgentConfig
from agent.ice import IceServerProvider, gather_loopback_host_candidates_only, no_ice_servers
from agent.pipelines import PipelineBuilder
from agent.server import create_app

PEER_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz


@dataclass
class AgentServer:
    """A running agent HTTP server on 127.0.0.1."""

    port: int
    app: Any

    def _request(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None = None, chunked: bool = False
    ) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"content-type": "application/json"}
            connection.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def invoke_raw(self, body: bytes | Iterable[bytes], *, chunked: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """POST a raw body to /invocations; return the status and the SSE events."""
        status, text = self._request("POST", "/invocations", body, chunked)
        events = [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]
        return status, events

    def invoke(self, payload: Any) -> list[dict[str, Any]]:
        """POST a JSON payload to /invocations and return its events."""
        status, events = self.invoke_raw(json.dumps(payload).encode())
        assert status == 200
        return events

    def ping(self) -> str:
        """Return the /ping status (Healthy or HealthyBusy)."""
        status, text = self._request("GET", "/ping")
        assert status == 200
        return str(json.loads(text)["status"])

    def wait_ping(self, status: str, timeout: float) -> float:
        """Wait until /ping reports ``status``; return how long it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.ping() == status:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"/ping did not become {status} within {timeout} s (is {self.ping()})")


@contextmanager
def loopback_media() -> Iterator[None]:
    """Within the block, every peer of the process (agent and test peers) offers 127.0.0.1 only."""
    original = aioice.ice.get_host_addresses
    gather_loopback_host_candidates_only()
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@contextmanager
def running_agent(
    config: AgentConfig,
    *,
    ice_servers: IceServerProvider = no_ice_servers,
    builder: PipelineBuilder | None = None,
) -> Iterator[AgentServer]:
    """Serve ``create_app(config)`` on a free loopback port in a thread for the block's duration."""
    app = create_app(config, ice_servers=ice_servers, builder=builder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "agent server did not start"
        time.sleep(0.02)
    try:
        yield AgentServer(port=port, app=app)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def espeak_pcm(text: str, rate: int) -> np.ndarray:
    """Return espeak-ng saying ``text`` as mono int16 samples at ``rate`` Hz."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        source_rate = reader.getframerate()
    return np.asarray(soxr.resample(samples, source_rate, rate), dtype=np.int16)


def rms(samples: np.ndarray) -> float:
    """Root mean square of int16 samples."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


class PcmTrack(MediaStreamTrack):
    """An audio track that plays queued 48 kHz mono samples in real time, silence in between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None

    def play(self, samples: np.ndarray) -> None:
        """Queue samples to play after what is already queued."""
        self._pending = np.concatenate([self._pending, samples])

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms frame, paced to real time."""
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / PEER_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
        chunk = np.pad(chunk, (0, FRAME_SAMPLES - len(chunk)))
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PEER_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, PEER_RATE)
        self._pts += FRAME_SAMPLES
        return frame


@dataclass
class Peer:
    """An aiortc peer like the Pipecat browser client: audio both ways, a data channel, trickle ICE."""

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    track: PcmTrack = field(default_factory=PcmTrack)
    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self) -> dict[str, Any]:
        """Create the offer; its candidates are kept back for trickling, as a browser does."""
        self.pc.addTrack(self.track)
        channel = self.pc.createDataChannel("chat")

        @channel.on("message")
        def on_message(message: str) -> None:
            self.messages.append(json.loads(message))

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.ensure_future(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        lines, mid, index = [], None, -1
        for line in self.pc.localDescription.sdp.splitlines():
            if line.startswith("m="):
                index += 1
            if line.startswith("a=mid:"):
                mid = line[len("a=mid:") :]
            if line.startswith("a=candidate:"):
                self.candidates.append({"candidate": line[2:], "sdp_mid": mid, "sdp_mline_index": index})
            elif not line.startswith("a=end-of-candidates"):
                lines.append(line)
        return {"sdp": "\r\n".join(lines) + "\r\n", "type": "offer"}

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            samples = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                samples = samples[::2]
            self.received.append((time.monotonic(), samples.astype(np.int16)))

    async def accept(self, answer: dict[str, Any]) -> None:
        """Apply the agent's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    def audio_since(self, moment: float) -> np.ndarray:
        """Samples received after ``moment`` (monotonic seconds)."""
        chunks = [samples for at, samples in self.received if at >= moment]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        """Leave the call."""
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()

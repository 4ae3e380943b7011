"""A WebRTC call client of the broker API, with aiortc: what a browser running the Pipecat client does.

It calls ``POST /start``, builds a peer connection with the returned TURN servers (relay-only by
default, so every byte goes through the TURN server), sends the offer with its candidates (or, with
``trickle=True``, trickles them with ``PATCH`` as a browser does), speaks a phrase (espeak-ng) and
listens for the agent's reply. Tests and benchmarks use it, and so can a person::

    python -m local.call_client --url http://127.0.0.1:7860 --say "how are you"
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soxr
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame

from broker.ice import candidate_types

PEER_RATE = 48000
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


class PcmTrack(MediaStreamTrack):
    """An audio track that plays queued 48 kHz mono samples in real time, silence in between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None
        self._speech_end_pts: int | None = None
        self.speech_ended_at: float | None = None
        """When the last loud 20 ms frame of the latest clip left (monotonic seconds): the end of the
        utterance as the far end can first know it."""

    def play(self, samples: np.ndarray) -> None:
        """Queue samples to play after what is already queued."""
        starts_at = self._pts + len(self._pending)
        frames = samples[: len(samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        loud = [index for index, frame in enumerate(frames) if rms(frame) > SPEECH_RMS]
        if loud:
            self._speech_end_pts = starts_at + (loud[-1] + 1) * FRAME_SAMPLES
            self.speech_ended_at = None
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
        if self._speech_end_pts is not None and self._pts >= self._speech_end_pts:
            self.speech_ended_at = time.monotonic()
            self._speech_end_pts = None
        return frame


@dataclass
class Peer:
    """An aiortc peer like the Pipecat browser client: audio both ways, a data channel, trickle ICE."""

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    track: PcmTrack = field(default_factory=PcmTrack)
    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """When each data-channel message arrived (monotonic seconds) and its RTVI ``type``."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self, *, trickle: bool = True) -> dict[str, Any]:
        """Create the offer; its candidates go in :attr:`candidates`, and stay in the SDP unless ``trickle``."""
        self.pc.addTrack(self.track)
        channel = self.pc.createDataChannel("chat")

        @channel.on("open")
        def on_open() -> None:
            # As the Pipecat client does: the agent answers with bot-ready once its pipeline runs.
            ready = {"version": RTVI_VERSION, "about": {"library": "local.call_client"}}
            message = {"label": "rtvi-ai", "type": "client-ready", "id": uuid.uuid4().hex, "data": ready}
            channel.send(json.dumps(message))

        @channel.on("message")
        def on_message(message: str) -> None:
            decoded = json.loads(message)
            self.messages.append(decoded)
            self.events.append((time.monotonic(), str(decoded.get("type", ""))))

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
                if not trickle:
                    lines.append(line)
            elif not line.startswith("a=end-of-candidates") or not trickle:
                lines.append(line)
        return {"sdp": "\r\n".join(lines) + "\r\n", "type": "offer"}

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended: the call is over
                return
            if not isinstance(frame, AudioFrame):
                continue
            samples = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                samples = samples[::2]
            self.received.append((time.monotonic(), samples.astype(np.int16)))

    async def accept(self, answer: dict[str, Any]) -> None:
        """Apply the agent's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

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
        """When the first data-channel message of RTVI type ``kind`` arrived after ``moment``."""
        return next((at for at, event in self.events if event == kind and at >= moment), None)

    def bot_speaking(self) -> bool:
        """Whether the agent's last speaking event over the data channel says it is speaking."""
        events = [event for _, event in self.events if event in SPEAKING_EVENTS]
        return bool(events) and events[-1] == "bot-started-speaking"

    def bot_replies(self) -> list[str]:
        """What the agent said, sentence by sentence (RTVI ``bot-tts-text``)."""
        return [str(m["data"]["text"]) for m in self.messages if m.get("type") == "bot-tts-text"]

    def transcript(self) -> str | None:
        """The final user transcription the agent sent over the data channel (RTVI), if any."""
        for message in self.messages:
            if message.get("type") == "user-transcription" and message.get("data", {}).get("final"):
                return str(message["data"]["text"])
        return None

    def selected_pair(self) -> tuple[str, str] | None:
        """Candidate types (local, remote) of the nominated ICE pair, e.g. ``("relay", "relay")``."""
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            connection = getattr(dtls.transport, "_connection", None) if dtls else None
            nominated = getattr(connection, "_nominated", {}) if connection else {}
            for pair in nominated.values():
                return str(pair.local_candidate.type), str(pair.remote_candidate.type)
        return None

    async def close(self) -> None:
        """Leave the call."""
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()


class ApiError(Exception):
    """The broker API answered with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _request(url: str, method: str, body: object, token: str | None, timeout: float = 30) -> Any:
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


@dataclass
class CallTimes:
    """How long a call took to come up.

    Attributes:
        start_seconds: ``POST /start``'s round trip.
        connect_seconds: From sending the offer to the peer connection's ``connected``.
        selected_pair: Candidate types of the nominated pair, e.g. ``("relay", "relay")``.
    """

    start_seconds: float
    connect_seconds: float
    selected_pair: tuple[str, str] | None


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


class Call:
    """One call through the broker API: ``/start``, offer, trickled candidates, media.

    Args:
        base_url: The broker API, e.g. ``http://127.0.0.1:7860``.
        token: Bearer token, when the API checks one.
        relay_only: Gather TURN relay candidates only (``iceTransportPolicy=relay``).
        trickle: Send the candidates with ``PATCH`` after the offer, as a browser does, instead of in
            the offer. Off by default: aioice 0.13 (under aiortc) does not re-check a pair whose check
            is in progress when the other side's check arrives (RFC 8445 section 7.3.1.4), so a check
            sent before the agent has our trickled candidate is lost at its TURN allocation and
            retried only after STUN's 500 ms retransmission timeout; with the candidates in the offer
            the agent knows them before our first check. Browsers re-check at once either way.
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, relay_only: bool = True, trickle: bool = False
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.relay_only = relay_only
        self.trickle = trickle
        self.peer: Peer | None = None
        self.session_id: str | None = None
        self.pc_id: str | None = None
        self.started_at = 0.0
        """When ``POST /start`` was sent (monotonic seconds): the click of a browser call."""
        self.offered_at = 0.0
        self.restarts = 0
        self._ice_servers: list[dict[str, Any]] = []

    def _new_peer_connection(self) -> RTCPeerConnection:
        servers = [RTCIceServer(**server) for server in self._ice_servers]
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        return RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))

    async def _negotiate(self, *, restart: bool, timeout: float, retire: Peer | None = None) -> None:
        """Offer (a new call, or ``restart_pc`` on this one), apply the answer, trickle, wait to connect.

        ``retire`` (the connection a restart replaces) is closed once the agent has answered.
        """
        peer = self.peer
        if peer is None:
            raise RuntimeError("no peer")
        offer = await peer.offer(trickle=self.trickle)
        if self.relay_only and not peer.candidates:
            raise TimeoutError("no relay candidate was gathered: is the TURN server up, and the credentials valid?")
        self.offered_at = time.monotonic()
        path = f"/sessions/{self.session_id}/api/offer"
        answer = await self._api(
            "POST", path, {**offer, "pc_id": self.pc_id if restart else None, "restart_pc": restart}
        )
        self.pc_id = answer["pc_id"]
        if retire is not None:
            await retire.close()
        await peer.accept(answer)
        if self.trickle:
            await self._api("PATCH", path, {"pc_id": self.pc_id, "candidates": peer.candidates})
        await peer.wait_for(lambda: peer.pc.connectionState in ("connected", "failed", "closed"), timeout,
                            "the peer connection to connect")  # fmt: skip
        if peer.pc.connectionState != "connected":
            remote = candidate_types(answer["sdp"])
            raise ConnectionError(
                f"the peer connection {peer.pc.connectionState} (ICE {peer.pc.iceConnectionState}; the agent's "
                f"candidates: {remote or 'none'}; ours: {len(peer.candidates)})"
            )

    async def _api(self, method: str, path: str, body: object) -> Any:
        return await asyncio.to_thread(_request, self.base_url + path, method, body, self.token)

    async def connect(self, timeout: float = 30) -> CallTimes:
        """Start a session and connect; returns how long each step took.

        Raises:
            ApiError: The API refused a request.
            TimeoutError: The peer connection did not connect in time.
            ConnectionError: The peer connection failed (no ICE candidate pair worked).
        """
        began = self.started_at = time.monotonic()
        start = await self._api("POST", "/start", {"transport": "webrtc"})
        started = time.monotonic()
        self.session_id = start["sessionId"]
        self._ice_servers = start["iceConfig"]["iceServers"]
        self.peer = Peer(pc=self._new_peer_connection())
        await self._negotiate(restart=False, timeout=timeout)
        if self.peer is None:
            raise RuntimeError("no peer")
        return CallTimes(
            start_seconds=started - began,
            connect_seconds=time.monotonic() - self.offered_at,
            selected_pair=self.peer.selected_pair(),
        )

    def credentials_expire_at(self) -> float | None:
        """When this call's TURN credentials expire (epoch seconds), from their ``<expiry>:<id>`` usernames."""
        expiries = []
        for server in self._ice_servers:
            username = server.get("username") or ""
            prefix = username.split(":", 1)[0]
            if prefix.isdigit():
                expiries.append(float(prefix))
        return min(expiries, default=None)

    async def restart(self, timeout: float = 30) -> float:
        """Move the call to a new peer connection with fresh TURN credentials (Pipecat's ``restart_pc``).

        TURN servers refuse to refresh an allocation once its credentials have expired, so a call that
        outlives them must move to new allocations first. Returns how long the restart took.
        """
        if self.peer is None or self.session_id is None:
            raise RuntimeError("connect() first")
        began = time.monotonic()
        fresh = await self._api("POST", "/start", {"transport": "webrtc"})  # only for its ICE servers
        self._ice_servers = fresh["iceConfig"]["iceServers"]
        old = self.peer
        self.peer = Peer(pc=self._new_peer_connection(), track=old.track, received=old.received,
                         messages=old.messages, events=old.events)  # fmt: skip
        # The old connection stays up until the agent has answered: closing it first would look to the
        # agent like the caller hanging up.
        await self._negotiate(restart=True, timeout=timeout, retire=old)
        self.restarts += 1
        return time.monotonic() - began

    async def keep_fresh(self, *, before_expiry: float = 10) -> None:
        """Restart the call ``before_expiry`` seconds before its credentials expire, for as long as it runs."""
        while True:
            expires = self.credentials_expire_at()
            if expires is None:
                return
            await asyncio.sleep(max(0.0, expires - before_expiry - time.time()))
            await self.restart()

    async def say(self, text: str, *, timeout: float = 30) -> Exchange:
        """Wait for the agent to finish speaking, speak ``text``, and wait for its transcript and reply.

        Raises:
            TimeoutError: The agent did not hear, answer or speak within ``timeout`` seconds.
        """
        if self.peer is None:
            raise RuntimeError("connect() first")
        peer = self.peer
        # The agent listens once its pipeline runs (bot-ready), which can be after media connects; its
        # greeting starts then.
        await peer.wait_for(lambda: peer.event_after("bot-ready", 0.0) is not None, timeout, "the agent (bot-ready)")
        await asyncio.sleep(0.5)
        await peer.wait_for(lambda: not peer.bot_speaking(), timeout, "the agent to finish speaking")
        replies_before = len(peer.bot_replies())
        spoke_at = time.monotonic()
        peer.track.play(espeak_pcm(text, PEER_RATE))
        await peer.wait_for(lambda: peer.track.speech_ended_at is not None, timeout, "the utterance to be sent")
        spoken_until = peer.track.speech_ended_at or spoke_at
        await peer.wait_for(lambda: peer.transcript() is not None, timeout, "the agent's transcript")
        # The reply's text comes over the data channel when its audio has been spoken.
        await peer.wait_for(lambda: len(peer.bot_replies()) > replies_before, timeout, "the agent's reply")
        await peer.wait_for(lambda: peer.first_speech_after(spoken_until) is not None, timeout, "the spoken reply")
        await peer.wait_for(lambda: not peer.bot_speaking(), timeout, "the reply to end")
        return Exchange(
            heard=peer.transcript(),
            reply=" ".join(peer.bot_replies()[replies_before:]),
            reply_rms=rms(peer.audio_since(spoken_until)),
            reply_seconds=time.monotonic() - spoke_at,
            spoken_until=spoken_until,
            reply_audible_at=peer.first_speech_after(spoken_until) or spoken_until,
        )

    async def close(self) -> None:
        """Hang up."""
        if self.peer is not None:
            await self.peer.close()


@dataclass
class CallReport:
    """What the CLI prints (times in milliseconds; ``first_audio_ms`` counts from sending ``/start``)."""

    session_id: str | None
    start_ms: float
    connect_ms: float
    first_audio_ms: float | None
    selected_pair: tuple[str, str] | None
    heard: str | None
    reply: str | None
    reply_rms: float | None
    voice_to_voice_ms: float | None


async def _run(url: str, text: str | None, relay_only: bool, token: str | None) -> CallReport:
    call = Call(url, token=token, relay_only=relay_only)
    try:
        times = await call.connect()
        peer = call.peer
        if peer is not None:
            await peer.wait_for(lambda: peer.first_speech_after(call.started_at) is not None, 10, "the greeting")
        exchange = await call.say(text) if text else None
        first = peer.first_speech_after(call.started_at) if peer else None
        return CallReport(
            session_id=call.session_id,
            start_ms=round(times.start_seconds * 1000, 1),
            connect_ms=round(times.connect_seconds * 1000, 1),
            first_audio_ms=None if first is None else round((first - call.started_at) * 1000, 1),
            selected_pair=times.selected_pair,
            heard=exchange.heard if exchange else None,
            reply=exchange.reply if exchange else None,
            reply_rms=round(exchange.reply_rms, 1) if exchange else None,
            voice_to_voice_ms=round(exchange.voice_to_voice_seconds * 1000, 1) if exchange else None,
        )
    finally:
        await call.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Make one call and print what happened; exit 1 when it fails."""
    parser = argparse.ArgumentParser(
        prog="python -m local.call_client",
        description="Make one WebRTC call through the broker API (make local) and print how it went.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="broker API base URL (%(default)s)")
    parser.add_argument("--say", default="how are you", help="what to say; empty to only connect (%(default)r)")
    parser.add_argument("--any-candidates", action="store_true", help="allow host candidates (default: relay only)")
    parser.add_argument("--token", help="bearer token, when the API checks one")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(
            asyncio.wait_for(_run(args.url, args.say or None, not args.any_candidates, args.token), 90)
        )
    except (ApiError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        for key, value in asdict(report).items():
            print(f"{key:>17}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

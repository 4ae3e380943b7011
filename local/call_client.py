"""A WebRTC call client of the broker API, with aiortc: what a browser running the Pipecat client does.

It calls ``POST /start``, builds a peer connection with the returned TURN servers (relay-only by
default, so every byte goes through the TURN server), sends the offer with its candidates (or, with
``trickle=True``, trickles them with ``PATCH`` as a browser does), speaks a phrase (espeak-ng) and
listens for the agent's reply. Tests and benchmarks use it, and so can a person::

    python -m local.call_client --url http://127.0.0.1:7860 --say "how are you"

``--transport websocket`` makes the same call over the agent's WebSocket (:mod:`local.websocket_client`).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame
from websockets.exceptions import InvalidHandshake

from broker.ice import candidate_types
from local.call_common import (
    PEER_RATE,
    SPEECH_RMS,
    ApiError,
    Exchange,
    Heard,
    Microphone,
    api_request,
    client_ready,
    converse,
    espeak_pcm,
    rms,
)

__all__ = ["PEER_RATE", "SPEECH_RMS", "ApiError", "Call", "Exchange", "PcmTrack", "Peer", "espeak_pcm", "rms"]


class PcmTrack(MediaStreamTrack):
    """An audio track that plays queued 48 kHz mono samples in real time, silence in between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.microphone = Microphone(PEER_RATE)

    def play(self, samples: np.ndarray) -> None:
        """Queue samples to play after what is already queued."""
        self.microphone.play(samples)

    @property
    def speech_ended_at(self) -> float | None:
        """When the last loud 20 ms frame of the latest clip left (see :class:`Microphone`)."""
        return self.microphone.speech_ended_at

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms frame, paced to real time."""
        chunk = await self.microphone.next_frame()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PEER_RATE
        frame.pts = self.microphone.position - len(chunk)
        frame.time_base = fractions.Fraction(1, PEER_RATE)
        return frame


@dataclass
class Peer(Heard):
    """An aiortc peer like the Pipecat browser client: audio both ways, a data channel, trickle ICE.

    What it hears (audio, and RTVI messages over the data channel) is in its :class:`Heard` fields.
    """

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    track: PcmTrack = field(default_factory=PcmTrack)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    media_positions: list[float | None] = field(default_factory=list)
    """For each of :attr:`received`, where its first sample sits on the sender's media clock (seconds,
    from the RTP timestamp)."""
    rtp_arrivals: list[tuple[float, int, int]] = field(default_factory=list)
    """Each audio RTP packet as it arrived, before aiortc's jitter buffer: (monotonic seconds, sequence
    number, RTP timestamp). What the network delivered, whatever the receiver then plays."""
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self, *, trickle: bool = True) -> dict[str, Any]:
        """Create the offer; its candidates go in :attr:`candidates`, and stay in the SDP unless ``trickle``."""
        self.pc.addTrack(self.track)
        channel = self.pc.createDataChannel("chat")

        @channel.on("open")
        def on_open() -> None:
            # As the Pipecat client does: the agent answers with bot-ready once its pipeline runs.
            channel.send(json.dumps(client_ready()))

        @channel.on("message")
        def on_message(message: str) -> None:
            self.hear_message(json.loads(message))

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.ensure_future(self._read(track)))
            for transceiver in self.pc.getTransceivers():
                if transceiver.receiver.track is track:
                    self._watch_rtp(transceiver.receiver)

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

    def _watch_rtp(self, receiver: Any) -> None:
        # aiortc has no public hook on arriving packets: wrap the receiver's handler (aiortc 1.x).
        handle = receiver._handle_rtp_packet

        async def arrived(packet: Any, arrival_time_ms: int) -> None:
            self.rtp_arrivals.append((time.monotonic(), packet.sequence_number, packet.timestamp))
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = arrived

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
            self.media_positions.append(None if frame.pts is None else float(frame.pts * frame.time_base))

    async def accept(self, answer: dict[str, Any]) -> None:
        """Apply the agent's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

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
        return await asyncio.to_thread(api_request, self.base_url + path, method, body, self.token)

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
                         media_positions=old.media_positions, rtp_arrivals=old.rtp_arrivals,
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
        return await converse(self.peer, self.peer.track.microphone, text, timeout=timeout)

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
        return _report(call.session_id, times.start_seconds, times.connect_seconds, first=first,
                       started_at=call.started_at, selected_pair=times.selected_pair, exchange=exchange)  # fmt: skip
    finally:
        await call.close()


async def _run_websocket(url: str, text: str | None, token: str | None) -> CallReport:
    from local.websocket_client import WebSocketCall  # noqa: PLC0415 - Pipecat's protobufs only here

    call = WebSocketCall(url, token=token)
    try:
        times = await call.connect()
        heard = call.heard
        await heard.wait_for(lambda: heard.first_speech_after(call.started_at) is not None, 10, "the greeting")
        exchange = await call.say(text) if text else None
        first = heard.first_speech_after(call.started_at)
        return _report(call.session_id, times.start_seconds, times.connect_seconds, first=first,
                       started_at=call.started_at, selected_pair=None, exchange=exchange)  # fmt: skip
    finally:
        await call.close()


def _report(
    session_id: str | None,
    start_seconds: float,
    connect_seconds: float,
    *,
    first: float | None,
    started_at: float,
    selected_pair: tuple[str, str] | None,
    exchange: Exchange | None,
) -> CallReport:
    return CallReport(
        session_id=session_id,
        start_ms=round(start_seconds * 1000, 1),
        connect_ms=round(connect_seconds * 1000, 1),
        first_audio_ms=None if first is None else round((first - started_at) * 1000, 1),
        selected_pair=selected_pair,
        heard=exchange.heard if exchange else None,
        reply=exchange.reply if exchange else None,
        reply_rms=round(exchange.reply_rms, 1) if exchange else None,
        voice_to_voice_ms=round(exchange.voice_to_voice_seconds * 1000, 1) if exchange else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Make one call and print what happened; exit 1 when it fails."""
    parser = argparse.ArgumentParser(
        prog="python -m local.call_client",
        description="Make one call through the broker API (make local) and print how it went.",
    )
    parser.add_argument(
        "--transport",
        choices=("webrtc", "websocket"),
        default="webrtc",
        help="webrtc: aiortc through the TURN relay; websocket: the presigned ws_url (%(default)s)",
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="broker API base URL (%(default)s)")
    parser.add_argument("--say", default="how are you", help="what to say; empty to only connect (%(default)r)")
    parser.add_argument("--any-candidates", action="store_true", help="allow host candidates (default: relay only)")
    parser.add_argument("--token", help="bearer token, when the API checks one")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        text = args.say or None
        run = (
            _run_websocket(args.url, text, args.token)
            if args.transport == "websocket"
            else _run(args.url, text, not args.any_candidates, args.token)
        )
        report = asyncio.run(asyncio.wait_for(run, 90))
    except (ApiError, TimeoutError, OSError, InvalidHandshake) as exc:
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

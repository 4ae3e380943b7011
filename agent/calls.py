"""The calls of this process: answering offers, routing trickled candidates, running each call.

A call begins when an offer without ``pc_id`` is answered and ends when its runner returns (the peer
left, never connected, or the pipeline ended); its peer connection is then closed and forgotten, so
later candidates for it are refused as ``unknown_pc_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiortc import RTCIceCandidate, RTCIceServer, RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from agent.exceptions import PayloadError
from agent.ice import IceServerProvider, can_relay, rtc_ice_servers
from agent.payloads import CandidatesRequest, OfferRequest
from broker.ice import candidate_types

logger = logging.getLogger(__name__)

CallRunner = Callable[[SmallWebRTCConnection], Awaitable[Any]]
CallHook = Callable[[str], None]


class PeerConnection(Protocol):
    """The part of ``SmallWebRTCConnection`` the agent drives (Pipecat leaves it unannotated)."""

    @property
    def pc_id(self) -> str:
        """The connection's id, sent to the peer in the answer."""

    async def initialize(self, sdp: str, type: str) -> None:
        """Apply an offer and create the answer."""

    async def renegotiate(self, sdp: str, type: str, restart_pc: bool = False) -> None:
        """Apply a new offer to the live connection."""

    def get_answer(self) -> dict[str, str] | None:
        """The answer: ``{"sdp", "type", "pc_id"}``."""

    async def add_ice_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """Add a remote candidate, or ``None`` for end-of-candidates."""

    async def disconnect(self) -> None:
        """Tell the peer and close."""


@dataclass
class Call:
    """One peer connection and the task running its pipeline."""

    pc_id: str
    connection: SmallWebRTCConnection
    aliases: set[str] = field(default_factory=set)
    """The ``pc_id`` of every peer connection the call moved to with ``restart_pc``."""

    @property
    def peer(self) -> PeerConnection:
        """The connection, typed."""
        peer: PeerConnection = self.connection
        return peer

    task: asyncio.Task[None] | None = field(default=None, repr=False)


async def _close(connection: PeerConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.disconnect()


def _parse_candidate(line: str, sdp_mid: str | None, sdp_mline_index: int | None) -> RTCIceCandidate:
    # Browsers send the attribute form "candidate:<foundation> ..."; aiortc wants the value only.
    value = line.removeprefix("a=").removeprefix("candidate:")
    try:
        candidate = candidate_from_sdp(value)
    except (AssertionError, ValueError, IndexError) as exc:
        raise PayloadError("invalid_candidate", "a candidate is not an ICE candidate line") from exc
    candidate.sdpMid = sdp_mid
    candidate.sdpMLineIndex = sdp_mline_index
    return candidate


class _PolicyConnection(SmallWebRTCConnection):
    """A ``SmallWebRTCConnection`` that can gather TURN relay candidates only.

    Pipecat builds the peer connection's ``RTCConfiguration`` itself with no transport-policy knob.
    aiortc reads that configuration only when gathering starts, so right after Pipecat builds the
    peer connection the same configuration is swapped in with ``iceTransportPolicy=RELAY``.
    """

    def __init__(self, ice_servers: list[Any], *, relay_only: bool) -> None:
        self._relay_only = relay_only  # _initialize() runs inside the base __init__ and reads it
        super().__init__(ice_servers=ice_servers)

    def _initialize(self) -> None:
        super()._initialize()  # type: ignore[no-untyped-call]
        if self._relay_only:
            attribute = "_RTCPeerConnection__configuration"
            configuration = getattr(self._pc, attribute)
            setattr(self._pc, attribute, replace(configuration, iceTransportPolicy=RTCIceTransportPolicy.RELAY))


class CallManager:
    """Answers offers with SmallWebRTC peer connections and runs one pipeline per call.

    Every new connection (a new call, or a ``restart_pc`` of one) uses the ICE servers its offer's
    invocation brought: the broker drew them from the pool for this very connection, so the TURN
    credentials are fresh and the agent never calls KVS. An offer without them falls back to the
    provider.

    Args:
        ice_servers: Source of ICE servers for a new connection whose offer carried none.
        ice_servers_source: What ``ice_servers`` is, for the log line that says it was used.
        on_start: Called with the ``pc_id`` as a call begins, before its answer is returned.
        on_end: Called with the ``pc_id`` once a call has ended.
        relay_only: Gather TURN relay candidates only, so all media goes through TURN; an offer left
            without a usable TURN server is then refused (``ice_servers_missing``).
    """

    def __init__(
        self,
        *,
        ice_servers: IceServerProvider,
        ice_servers_source: str = "the configured ICE server provider",
        on_start: CallHook | None = None,
        on_end: CallHook | None = None,
        relay_only: bool = False,
    ) -> None:
        self._ice_servers = ice_servers
        self._ice_servers_source = ice_servers_source
        self._relay_only = relay_only
        self._on_start = on_start
        self._on_end = on_end
        self._calls: dict[str, Call] = {}

    async def answer(self, offer: OfferRequest, *, run_call: CallRunner | None = None) -> dict[str, str]:
        """Answer an offer: a new call, or a renegotiation of the call named by ``pc_id``.

        Args:
            offer: The peer's offer.
            run_call: Runs a new call's pipeline on its connection until the call ends (required
                unless renegotiating).

        Returns:
            ``{"sdp", "type", "pc_id"}``, with the agent's ICE candidates inside the SDP.

        Raises:
            PayloadError: ``unknown_pc_id``, ``invalid_sdp``, or ``ice_servers_missing`` (relay-only
                and no TURN server for the new connection).
            IceServersUnavailableError: The fallback provider could get no ICE servers.
        """
        if offer.pc_id is not None:
            return await self._renegotiate(offer)
        if run_call is None:
            raise ValueError("a new call needs run_call")
        servers = await self._servers_for(offer)
        connection = _PolicyConnection(servers, relay_only=self._relay_only)
        peer: PeerConnection = connection
        try:
            await peer.initialize(sdp=offer.sdp, type=offer.type)
            answer = peer.get_answer()
            if answer is None:
                raise ValueError("no local description")
        except Exception as exc:
            await _close(peer)
            raise PayloadError("invalid_sdp", f"the offer could not be answered ({type(exc).__name__})") from exc
        call = Call(pc_id=answer["pc_id"], connection=connection)
        self._calls[call.pc_id] = call
        if self._on_start is not None:
            self._on_start(call.pc_id)
        call.task = asyncio.create_task(self._run(call, run_call), name=f"call-{call.pc_id}")
        kinds = candidate_types(answer["sdp"])
        logger.info(
            "answered call %s with %d ICE servers from %s, candidates %s",
            call.pc_id,
            len(servers),
            "the invocation" if offer.ice_servers is not None else self._ice_servers_source,
            kinds or "none",
        )
        if self._relay_only and "relay" not in kinds:
            logger.warning("call %s gathered no relay candidate: its TURN allocation failed or timed out", call.pc_id)
        return dict(answer)

    async def _renegotiate(self, offer: OfferRequest) -> dict[str, str]:
        call = self._call(offer.pc_id)
        if offer.restart_pc:
            # A restart builds a new peer connection, hence new TURN allocations: with the fresh
            # credentials the invocation brought. TURN servers refuse to refresh an allocation once its
            # credentials have expired, so a peer restarts before they do to keep a long call's media
            # flowing. A renegotiation without restart keeps its connection: iceServers go unused.
            call.connection.ice_servers = await self._servers_for(offer)
        try:
            await call.peer.renegotiate(sdp=offer.sdp, type=offer.type, restart_pc=offer.restart_pc)
            answer = call.peer.get_answer()
            if answer is None:
                raise ValueError("no local description")
        except Exception as exc:
            raise PayloadError("invalid_sdp", f"the offer could not be renegotiated ({type(exc).__name__})") from exc
        if answer["pc_id"] not in self._calls:
            # Pipecat names a restarted peer connection anew; the peer trickles and renegotiates under it.
            call.aliases.add(answer["pc_id"])
            self._calls[answer["pc_id"]] = call
        logger.info("renegotiated call %s (restart=%s)", call.pc_id, offer.restart_pc)
        return dict(answer)

    async def _servers_for(self, offer: OfferRequest) -> list[RTCIceServer]:
        """The ICE servers of the new peer connection this offer makes."""
        if offer.ice_servers is not None:
            servers = rtc_ice_servers(offer.ice_servers)
        else:
            servers = await self._ice_servers()
            log = logger.info if servers else logger.warning
            log("offer carried no ICE servers; using %s: %d servers", self._ice_servers_source, len(servers))
        if self._relay_only and not can_relay(servers):
            where = "the offer's iceServers" if offer.ice_servers is not None else self._ice_servers_source
            raise PayloadError(
                "ice_servers_missing",
                f"the agent gathers relay candidates only (AGENT_ICE_TRANSPORT_POLICY=relay) and {where} "
                "gave no TURN server it can use (turn: over udp or tcp, turns: over tcp), so this call "
                "could never connect; send iceServers with the offer",
            )
        return servers

    def _call(self, pc_id: str | None) -> Call:
        call = self._calls.get(pc_id or "")
        if call is None:
            raise PayloadError("unknown_pc_id", "no active call has this pc_id")
        return call

    async def add_candidates(self, request: CandidatesRequest) -> int:
        """Give a call the ICE candidates its peer trickled.

        Returns:
            How many candidates (end-of-candidates markers included) were added.

        Raises:
            PayloadError: ``unknown_pc_id`` or ``invalid_candidate`` (then none is added).
        """
        call = self._call(request.pc_id)
        parsed = [
            _parse_candidate(item.candidate, item.sdp_mid, item.sdp_mline_index) if item.candidate else None
            for item in request.candidates
        ]
        for candidate in parsed:
            try:
                await call.peer.add_ice_candidate(candidate)
            except ValueError as exc:
                raise PayloadError("invalid_candidate", f"a candidate was refused ({exc})") from exc
        return len(parsed)

    async def _run(self, call: Call, run_call: CallRunner) -> None:
        try:
            await run_call(call.connection)
        except Exception:
            logger.exception("call %s failed", call.pc_id)
        finally:
            for pc_id in (call.pc_id, *call.aliases):
                self._calls.pop(pc_id, None)
            await _close(call.peer)
            if self._on_end is not None:
                self._on_end(call.pc_id)
            logger.info("call %s over; %d calls active", call.pc_id, len({id(c) for c in self._calls.values()}))

"""The broker API's behaviour, independent of how requests arrive (Lambda or local HTTP)."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from broker.api.agents import AgentBusyError, AgentError, AgentInvoker, AgentTimeoutError, Event
from broker.api.errors import (
    ApiError,
    BadGatewayError,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    RetryLaterError,
)
from broker.api.models import (
    AnswerResponse,
    CandidatesRequest,
    IceConfig,
    IceServerModel,
    OfferRequest,
    StartRequest,
    StartResponse,
    StatusResponse,
)
from broker.api.sessions import SessionIssuer
from broker.api.websocket_urls import WebSocketUrlError, WebSocketUrlSigner
from broker.exceptions import BrokerError, ConfigurationError, PoolExhaustedError
from broker.ice import IceServerSet
from broker.telemetry import MetricName, Peer

logger = logging.getLogger(__name__)

Unit = Literal["Count", "Milliseconds"]


class IceSource(Protocol):
    """Where ICE servers come from (an :class:`broker.IceBroker`)."""

    def get_ice_servers(self) -> IceServerSet:
        """Return ICE servers for one peer."""
        ...


class MetricsSink(Protocol):
    """Where per-request metrics go (Powertools EMF in Lambda, memory locally)."""

    def add(self, name: str, value: float, unit: Unit, *, peer: Peer | None = None) -> None:
        """Record one data point; ``peer`` says whose TURN credentials it is about, if anyone's."""
        ...


class InMemoryMetrics:
    """Sums of every metric, in all and per peer, for local mode and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.by_peer: dict[Peer, dict[str, float]] = {}

    def add(self, name: str, value: float, unit: Unit, *, peer: Peer | None = None) -> None:
        """Add ``value`` to the metric's total (and to the peer's, when given)."""
        with self._lock:
            self.totals[name] = self.totals.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1
            if peer is not None:
                totals = self.by_peer.setdefault(peer, {})
                totals[name] = totals.get(name, 0.0) + value


class Transport(enum.StrEnum):
    """How a session's browser reaches its agent."""

    WEBRTC = "webrtc"
    """Media through TURN relays: ``/start`` mints TURN credentials, the offer routes carry the SDP."""
    WEBSOCKET = "websocket"
    """Audio frames over the agent runtime's WebSocket, at a presigned URL: no TURN, no offer."""


TRANSPORT_ALIASES: dict[str, Transport] = {
    **{transport.value: transport for transport in Transport},
    "smallwebrtc": Transport.WEBRTC,
}
"""The names ``/start`` accepts; the Pipecat SmallWebRTC client may say ``smallwebrtc``."""


@dataclass(frozen=True)
class ApiSettings:
    """Limits of the API and what it offers.

    Attributes:
        answer_timeout_seconds: Longest wait for the agent's answer to an offer or candidates.
        max_body_bytes: Largest request body accepted.
        transports: The transports ``/start`` offers (a request that names none gets WebRTC).
    """

    answer_timeout_seconds: float = 20.0
    max_body_bytes: int = 128 * 1024
    transports: frozenset[Transport] = field(default_factory=lambda: frozenset({Transport.WEBRTC}))


# Agent error codes (see agent/payloads.py) and the HTTP errors they become. The ICE server codes
# are the broker's own fault (it sent the servers), so they stay 502s and are logged here.
_BROKER_FAULTS = frozenset({"invalid_ice_servers", "ice_servers_missing"})
_AGENT_CLIENT_ERRORS = frozenset(
    {"invalid_payload", "invalid_sdp", "invalid_candidate", "missing_data", "invalid_json", "payload_too_large"}
)


def _agent_error(data: object) -> ApiError:
    """Map an ``error`` event from the agent to the API error the client should see."""
    fields: dict[str, Any] = data if isinstance(data, dict) else {}
    code = str(fields.get("code", "agent_error"))
    message = str(fields.get("message", "the agent refused the request"))[:300]
    if code in _BROKER_FAULTS:
        logger.error("the agent refused the ICE servers the broker sent (%s)", code)
    if code in _AGENT_CLIENT_ERRORS:
        return BadRequestError(f"the agent refused the request: {message}", code=code)
    if code == "unknown_pc_id":
        return NotFoundError("no active peer connection has this pc_id in this session", code=code)
    if code == "ice_servers_unavailable":
        retry_after = fields.get("retry_after")
        seconds = float(retry_after) if isinstance(retry_after, int | float) else 1.0
        return RetryLaterError("the agent could not get TURN credentials; retry shortly", retry_after=seconds)
    return BadGatewayError(f"the agent failed ({code})", code="agent_failed")


class BrokerService:
    """``/start``, the offer and the candidates, for a caller identified by its JWT subject.

    Args:
        ice: ICE servers for the browser.
        sessions: Mints and checks session ids.
        agent: Reaches the session's agent.
        metrics: Where per-request metrics go.
        settings: Limits and the transports offered.
        websocket_urls: Presigns the agent's WebSocket URL (required when ``websocket`` is offered).
        clock: Monotonic clock for latency metrics.

    Raises:
        ConfigurationError: ``websocket`` is offered without a signer, or no transport is offered.
    """

    def __init__(
        self,
        *,
        ice: IceSource,
        sessions: SessionIssuer,
        agent: AgentInvoker,
        metrics: MetricsSink | None = None,
        settings: ApiSettings | None = None,
        websocket_urls: WebSocketUrlSigner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ice = ice
        self.sessions = sessions
        self.agent = agent
        self.metrics: MetricsSink = metrics or InMemoryMetrics()
        self.settings = settings or ApiSettings()
        self.websocket_urls = websocket_urls
        self._clock = clock
        if not self.settings.transports:
            raise ConfigurationError("the API must offer at least one transport")
        if Transport.WEBSOCKET in self.settings.transports and websocket_urls is None:
            raise ConfigurationError("the websocket transport is offered but nothing signs its URLs")
        self._offered = ", ".join(sorted(self.settings.transports))

    def start(self, subject: str, request: StartRequest) -> StartResponse:
        """Start a session: a new session id, and TURN credentials or the agent's WebSocket URL.

        Raises:
            BadRequestError: The transport is unknown or not offered (400).
            RetryLaterError: The channel pool is exhausted (503 with ``Retry-After``).
            BadGatewayError: KVS failed, or the WebSocket URL could not be signed.
        """
        transport = self._transport(request.transport)
        if transport is Transport.WEBSOCKET:
            return self._start_websocket(subject)
        ice = self._credentials("browser")
        session_id = self.sessions.issue(subject)
        logger.info("session started (%d ICE servers from %s)", len(ice.servers), ice.channel_arn)
        return StartResponse(
            sessionId=session_id,
            iceConfig=IceConfig(iceServers=[IceServerModel(**server) for server in ice.to_dicts()]),
        )

    def _transport(self, name: str | None) -> Transport:
        """The offered transport ``name`` means (none named: WebRTC, as before transports were offered).

        Raises:
            BadRequestError: ``name`` is unknown or not offered; the message lists what is offered.
        """
        transport = Transport.WEBRTC if name is None else TRANSPORT_ALIASES.get(name)
        if transport is not None and transport in self.settings.transports:
            return transport
        if name is None:
            problem = "no transport was named and the default, webrtc, is not offered"
        elif transport is None:
            problem = f"unknown transport {name!r}"  # at most 32 characters (the model's limit)
        else:
            problem = f"transport {name!r} is not offered"
        raise BadRequestError(f"{problem}; this API offers: {self._offered}", code="unsupported_transport")

    def _start_websocket(self, subject: str) -> StartResponse:
        """A session whose browser opens the agent's WebSocket itself: no TURN credentials, no KVS call."""
        assert self.websocket_urls is not None  # noqa: S101 (the constructor checks it)
        session_id = self.sessions.issue(subject)
        try:
            url = self.websocket_urls.presign(session_id)
        except WebSocketUrlError as exc:
            logger.error("the agent's WebSocket URL could not be signed: %s", exc)
            raise BadGatewayError("the agent's WebSocket URL could not be signed", code="signing_failed") from exc
        # Never the URL: it opens the session for anyone until it expires.
        logger.info("session started (websocket, URL valid %d s)", self.websocket_urls.expires_seconds)
        return StartResponse(sessionId=session_id, ws_url=url)

    def _credentials(self, peer: Peer) -> IceServerSet:
        """TURN credentials for one peer from the pool, with that peer's metrics.

        Both peers' credentials come from here, so every KVS call of a session is made by the broker,
        through its limiter, and counted.

        Raises:
            RetryLaterError: The channel pool is exhausted (503 with ``Retry-After``).
            BadGatewayError: KVS failed.
        """
        started = self._clock()
        try:
            ice = self.ice.get_ice_servers()
        except BrokerError as exc:
            self.metrics.add(MetricName.KVS_CALLS, exc.kvs_calls, "Count", peer=peer)
            self.metrics.add(MetricName.KVS_THROTTLES, exc.throttles, "Count", peer=peer)
            raise self._unavailable(peer, exc) from exc
        self.metrics.add(MetricName.CREDENTIAL_LATENCY, (self._clock() - started) * 1000, "Milliseconds", peer=peer)
        self.metrics.add(MetricName.KVS_CALLS, ice.kvs_calls, "Count", peer=peer)
        self.metrics.add(MetricName.KVS_THROTTLES, ice.throttles, "Count", peer=peer)
        self.metrics.add(MetricName.CACHE_HITS, 1 if ice.cache_hit else 0, "Count", peer=peer)
        return ice

    def _unavailable(self, peer: Peer, exc: BrokerError) -> ApiError:
        """The API error for credentials the pool could not give."""
        if isinstance(exc, PoolExhaustedError):
            self.metrics.add(MetricName.POOL_EXHAUSTED, 1, "Count", peer=peer)
            logger.warning("TURN channel pool exhausted (%s credentials); retry after %.2f s", peer, exc.retry_after)
            return RetryLaterError(
                "all TURN credential channels are busy; retry shortly",
                retry_after=exc.retry_after,
                code="pool_exhausted",
            )
        logger.error("TURN credentials for the %s unavailable: %s", peer, exc)
        return BadGatewayError("TURN credentials are unavailable", code="turn_unavailable")

    def _invoke(self, session_id: str, payload: dict[str, Any], wanted: str) -> Event:
        """Send ``payload`` to the session's agent and return the first event of type ``wanted``."""
        try:
            for event in self.agent.invoke(session_id, payload, timeout=self.settings.answer_timeout_seconds):
                if event.get("type") == wanted:
                    return event
                if event.get("type") == "error":
                    raise _agent_error(event.get("data"))
        except AgentTimeoutError as exc:
            logger.warning("agent timed out: %s", exc)
            raise GatewayTimeoutError("the agent did not answer in time") from exc
        except AgentBusyError as exc:
            logger.warning("agent runtime busy: %s", exc)
            raise RetryLaterError("the agent runtime is busy; retry shortly", retry_after=2, code="agent_busy") from exc
        except AgentError as exc:
            logger.error("agent failed: %s", exc)
            raise BadGatewayError("the agent could not be reached") from exc
        raise BadGatewayError(f"the agent ended its answer without a '{wanted}' event")

    def offer(self, subject: str, session_id: str, request: OfferRequest) -> AnswerResponse:
        """Forward an SDP offer to the session's agent and return its answer.

        Raises:
            SessionNotFoundError: The session was not issued to this caller (404).
            ApiError: The agent refused (4xx), failed (502), was busy (503) or too slow (504).
        """
        self.sessions.verify(subject, session_id)
        payload: dict[str, Any] = {"type": "offer", "data": request.model_dump(mode="json")}
        if request.pc_id is None or request.restart_pc:
            # A new peer connection allocates new TURN relays: the agent gets fresh credentials with
            # its offer, drawn from the pool here, so no agent process ever calls KVS itself.
            payload["iceServers"] = self._credentials("agent").to_dicts()
        event = self._invoke(session_id, payload, "answer")
        data = event.get("data")
        try:
            return AnswerResponse.model_validate(data)
        except ValueError as exc:
            raise BadGatewayError("the agent's answer is not an SDP answer") from exc

    def add_candidates(self, subject: str, session_id: str, request: CandidatesRequest) -> StatusResponse:
        """Forward trickled ICE candidates to the session's agent.

        Raises:
            SessionNotFoundError: The session was not issued to this caller (404).
            ApiError: The agent refused (4xx), failed (502), was busy (503) or too slow (504).
        """
        self.sessions.verify(subject, session_id)
        self._invoke(session_id, {"type": "ice-candidates", "data": request.model_dump(mode="json")}, "ice-candidates")
        return StatusResponse(status="success")

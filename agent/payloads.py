"""Invocation payloads and the events streamed back.

Requests (the JSON body of ``POST /invocations``)::

    {"type": "offer", "data": {"sdp": "v=0...", "type": "offer", "pc_id": null, "restart_pc": false,
                               "requestData": {...}},
     "iceServers": [{"urls": ["turn:HOST:443?transport=udp"], "username": "...", "credential": "..."}]}
    {"type": "ice-candidates", "data": {"pc_id": "...", "candidates": [
        {"candidate": "candidate:...", "sdp_mid": "0", "sdp_mline_index": 0}]}}

``data`` is exactly the body the Pipecat client POSTs (offer) or PATCHes (candidates) to
``/sessions/{id}/api/offer``. ``iceServers`` is the agent's own ICE servers, which the broker draws
from the KVS channel pool and sends with new offers and with ``restart_pc`` offers, so the agent never
calls KVS itself. It is optional (absent: the agent falls back to ``AGENT_ICE_SERVERS``) and checked
strictly, because it goes straight into the peer connection:

- a list of at most :data:`MAX_ICE_SERVERS` objects (an empty list means "no servers": host candidates
  only, no fallback), each with exactly the keys ``urls``, ``username`` and ``credential``;
- ``urls``: a list of 1 to :data:`MAX_ICE_SERVER_URLS` strings of at most :data:`MAX_ICE_FIELD_CHARS`
  characters, each ``stun:HOST[:PORT]``, ``turn:HOST[:PORT][?transport=udp|tcp]`` or the same with
  ``turns:`` (HOST a DNS name or IPv4 address, PORT 1-65535; a single string is refused);
- ``username`` and ``credential``: optional strings of 1 to :data:`MAX_ICE_FIELD_CHARS` characters,
  both required when a URL is ``turn:`` or ``turns:`` (as WebRTC requires);
- ``null`` or any other type is refused.

Anything else gives the ``invalid_ice_servers`` error, whose message names what is wrong but never
the values. ``iceServers`` on an offer that renegotiates without ``restart_pc`` is checked and then
unused (no new peer connection, no new TURN allocation). On an ``ice-candidates`` request it is
refused with ``invalid_ice_servers``: it could have no effect there, and a broker that fetched
credentials for every trickled batch would spend the pool's rate for nothing.

Events (``data: {json}`` lines of ``text/event-stream``), in order::

    {"type": "status", "data": {"state": "accepted", "request": "offer"}}
    {"type": "answer", "data": {"sdp": "v=0...", "type": "answer", "pc_id": "..."}}
    {"type": "progress", "data": {"state": "call-started", "pc_id": "...", "pipeline": "local"}}

    {"type": "status", "data": {"state": "accepted", "request": "ice-candidates"}}
    {"type": "ice-candidates", "data": {"status": "success", "pc_id": "...", "accepted": 1}}

    {"type": "error", "data": {"code": "invalid_sdp", "message": "...", "retry_after": 1.0}}

A stream ends after its last event; the call itself goes on (``/ping`` reports ``HealthyBusy``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent.exceptions import PayloadError

MAX_CANDIDATES_PER_REQUEST: Final = 64
MAX_SDP_CHARS: Final = 64 * 1024
MAX_CANDIDATE_CHARS: Final = 1024
MAX_PC_ID_CHARS: Final = 128
MAX_ICE_SERVERS: Final = 8
MAX_ICE_SERVER_URLS: Final = 8
MAX_ICE_FIELD_CHARS: Final = 512

_ICE_SERVER_KEYS: Final = frozenset({"urls", "username", "credential"})
_ICE_URL: Final = re.compile(
    r"(?P<scheme>stun|turns?):(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)

Event = dict[str, Any]


@dataclass(frozen=True)
class IceServerSpec:
    """One ICE server an invocation brought; its repr never shows the username or the credential."""

    urls: tuple[str, ...]
    username: str | None = field(default=None, repr=False)
    credential: str | None = field(default=None, repr=False)

    @property
    def is_turn(self) -> bool:
        """Whether any of its URLs is a TURN server (``turn:`` or ``turns:``)."""
        return any(url.startswith("turn") for url in self.urls)


@dataclass(frozen=True)
class OfferRequest:
    """An SDP offer from a peer, new or renegotiating an existing connection.

    Attributes:
        ice_servers: The ICE servers the invocation brought for this connection; ``None`` when the
            payload had no ``iceServers`` field (the agent then uses its configured source).
    """

    sdp: str
    type: str = "offer"
    pc_id: str | None = None
    restart_pc: bool = False
    request_data: Any = None
    ice_servers: tuple[IceServerSpec, ...] | None = None
    kind: Literal["offer"] = "offer"


@dataclass(frozen=True)
class Candidate:
    """One trickled ICE candidate; an empty ``candidate`` marks the end of candidates."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class CandidatesRequest:
    """ICE candidates trickled by a peer for a connection the agent answered."""

    pc_id: str
    candidates: tuple[Candidate, ...]
    kind: Literal["ice-candidates"] = "ice-candidates"


Request = OfferRequest | CandidatesRequest


def _pc_id(data: dict[str, Any]) -> str:
    pc_id = data.get("pc_id")
    if not isinstance(pc_id, str) or not 0 < len(pc_id) <= MAX_PC_ID_CHARS:
        raise PayloadError("missing_data", f"data.pc_id must be a string of 1-{MAX_PC_ID_CHARS} characters")
    return pc_id


def _invalid_ice_servers(what: str) -> PayloadError:
    return PayloadError("invalid_ice_servers", f"iceServers: {what}")


def _ice_url(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= MAX_ICE_FIELD_CHARS:
        raise _invalid_ice_servers(f"{where} must be a string of 1-{MAX_ICE_FIELD_CHARS} characters")
    match = _ICE_URL.fullmatch(raw)
    if match is None:
        raise _invalid_ice_servers(
            f"{where} must be stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or turns:... "
            "(HOST a DNS name or IPv4 address)"
        )
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise _invalid_ice_servers(f"{where} has a port outside 1-65535")
    if match["scheme"] == "stun" and match["transport"] is not None:
        raise _invalid_ice_servers(f"{where} is a stun: URL, which takes no transport")
    return raw


def _ice_secret(server: dict[str, Any], key: str, where: str) -> str | None:
    if key not in server:
        return None
    value = server[key]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ICE_FIELD_CHARS:
        raise _invalid_ice_servers(f"{where}.{key} must be a string of 1-{MAX_ICE_FIELD_CHARS} characters")
    return value


def _ice_server(raw: object, where: str) -> IceServerSpec:
    if not isinstance(raw, dict):
        raise _invalid_ice_servers(f"{where} must be an object with urls, username and credential")
    unknown = set(raw) - _ICE_SERVER_KEYS
    if unknown:
        # The keys are the sender's own names, not values; show how many, never what they hold.
        raise _invalid_ice_servers(f"{where} has {len(unknown)} unknown key(s); allowed: urls, username, credential")
    urls = raw.get("urls")
    if not isinstance(urls, list) or not 0 < len(urls) <= MAX_ICE_SERVER_URLS:
        raise _invalid_ice_servers(f"{where}.urls must be a list of 1-{MAX_ICE_SERVER_URLS} URLs")
    server = IceServerSpec(
        urls=tuple(_ice_url(url, f"{where}.urls[{index}]") for index, url in enumerate(urls)),
        username=_ice_secret(raw, "username", where),
        credential=_ice_secret(raw, "credential", where),
    )
    if server.is_turn and (server.username is None or server.credential is None):
        raise _invalid_ice_servers(f"{where} has a TURN URL, so it needs both username and credential")
    return server


def parse_ice_servers(raw: object) -> tuple[IceServerSpec, ...]:
    """Validate the ``iceServers`` field of an invocation (see the module docstring for the rules).

    Raises:
        PayloadError: ``invalid_ice_servers``; the message never holds the field's values.
    """
    if not isinstance(raw, list) or len(raw) > MAX_ICE_SERVERS:
        raise _invalid_ice_servers(f"must be a list of at most {MAX_ICE_SERVERS} ICE servers")
    return tuple(_ice_server(item, f"iceServers[{index}]") for index, item in enumerate(raw))


def _offer(data: dict[str, Any], ice_servers: tuple[IceServerSpec, ...] | None) -> OfferRequest:
    sdp, sdp_type = data.get("sdp"), data.get("type", "offer")
    if not isinstance(sdp, str) or not sdp.strip():
        raise PayloadError("missing_data", "data.sdp must be the offer's SDP text")
    if len(sdp) > MAX_SDP_CHARS or not sdp.lstrip().startswith("v=0"):
        raise PayloadError("invalid_sdp", "data.sdp is not an SDP session description (must start with v=0)")
    if sdp_type != "offer":
        raise PayloadError("invalid_sdp", "data.type must be 'offer'")
    restart = data.get("restart_pc") or False
    if not isinstance(restart, bool):
        raise PayloadError("missing_data", "data.restart_pc must be true or false")
    request_data = data.get("requestData", data.get("request_data"))
    return OfferRequest(
        sdp=sdp,
        pc_id=None if data.get("pc_id") is None else _pc_id(data),
        restart_pc=restart,
        request_data=request_data,
        ice_servers=ice_servers,
    )


def _candidate(raw: object) -> Candidate:
    if not isinstance(raw, dict):
        raise PayloadError("invalid_candidate", "each candidate must be an object")
    text = raw.get("candidate", "")
    sdp_mid = raw.get("sdp_mid", raw.get("sdpMid"))
    index = raw.get("sdp_mline_index", raw.get("sdpMLineIndex"))
    if not isinstance(text, str) or len(text) > MAX_CANDIDATE_CHARS:
        raise PayloadError("invalid_candidate", "candidate must be an ICE candidate line")
    if sdp_mid is not None and not isinstance(sdp_mid, str):
        raise PayloadError("invalid_candidate", "sdp_mid must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise PayloadError("invalid_candidate", "sdp_mline_index must be a non-negative integer")
    if text and sdp_mid is None and index is None:
        raise PayloadError("invalid_candidate", "a candidate needs sdp_mid or sdp_mline_index")
    return Candidate(candidate=text, sdp_mid=sdp_mid, sdp_mline_index=index)


def _candidates(data: dict[str, Any]) -> CandidatesRequest:
    pc_id = _pc_id(data)
    raw = data.get("candidates")
    if not isinstance(raw, list):
        raise PayloadError("missing_data", "data.candidates must be a list")
    if len(raw) > MAX_CANDIDATES_PER_REQUEST:
        raise PayloadError(
            "invalid_candidate", f"at most {MAX_CANDIDATES_PER_REQUEST} candidates per request, got {len(raw)}"
        )
    return CandidatesRequest(pc_id=pc_id, candidates=tuple(_candidate(item) for item in raw))


def parse_request(payload: object) -> Request:
    """Validate an invocation payload.

    Raises:
        PayloadError: The payload is not a request the agent serves; ``code`` says why.
    """
    if not isinstance(payload, dict):
        raise PayloadError("invalid_payload", "the payload must be a JSON object with 'type' and 'data'")
    kind = payload.get("type")
    data = payload.get("data")
    if kind not in ("offer", "ice-candidates"):
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        raise PayloadError("unknown_type", f"type must be 'offer' or 'ice-candidates', got {shown!r}")
    if not isinstance(data, dict):
        raise PayloadError("missing_data", f"a {kind!r} request needs a 'data' object")
    if kind == "ice-candidates":
        if "iceServers" in payload:
            raise _invalid_ice_servers("only offers carry ICE servers, not ice-candidates requests")
        return _candidates(data)
    ice_servers = parse_ice_servers(payload["iceServers"]) if "iceServers" in payload else None
    return _offer(data, ice_servers)


def status_event(request: Request) -> Event:
    """The first event of every served request."""
    return {"type": "status", "data": {"state": "accepted", "request": request.kind}}


def error_event(code: str, message: str, *, retry_after: float | None = None) -> Event:
    """An ``error`` event; the message never holds SDP or credentials."""
    data: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        data["retry_after"] = round(retry_after, 3)
    return {"type": "error", "data": data}

"""Invocation payloads and the events streamed back.

Requests (the JSON body of ``POST /invocations``)::

    {"type": "offer", "data": {"sdp": "v=0...", "type": "offer", "pc_id": null, "restart_pc": false,
                               "requestData": {...}}}
    {"type": "ice-candidates", "data": {"pc_id": "...", "candidates": [
        {"candidate": "candidate:...", "sdp_mid": "0", "sdp_mline_index": 0}]}}

``data`` is exactly the body the Pipecat client POSTs (offer) or PATCHes (candidates) to
``/sessions/{id}/api/offer``. Events (``data: {json}`` lines of ``text/event-stream``), in order::

    {"type": "status", "data": {"state": "accepted", "request": "offer"}}
    {"type": "answer", "data": {"sdp": "v=0...", "type": "answer", "pc_id": "..."}}
    {"type": "progress", "data": {"state": "call-started", "pc_id": "...", "pipeline": "local"}}

    {"type": "status", "data": {"state": "accepted", "request": "ice-candidates"}}
    {"type": "ice-candidates", "data": {"status": "success", "pc_id": "...", "accepted": 1}}

    {"type": "error", "data": {"code": "invalid_sdp", "message": "...", "retry_after": 1.0}}

A stream ends after its last event; the call itself goes on (``/ping`` reports ``HealthyBusy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.exceptions import PayloadError

MAX_CANDIDATES_PER_REQUEST: Final = 64
MAX_SDP_CHARS: Final = 64 * 1024
MAX_CANDIDATE_CHARS: Final = 1024
MAX_PC_ID_CHARS: Final = 128

Event = dict[str, Any]


@dataclass(frozen=True)
class OfferRequest:
    """An SDP offer from a peer, new or renegotiating an existing connection."""

    sdp: str
    type: str = "offer"
    pc_id: str | None = None
    restart_pc: bool = False
    request_data: Any = None
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


def _offer(data: dict[str, Any]) -> OfferRequest:
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
    return _offer(data) if kind == "offer" else _candidates(data)


def status_event(request: Request) -> Event:
    """The first event of every served request."""
    return {"type": "status", "data": {"state": "accepted", "request": request.kind}}


def error_event(code: str, message: str, *, retry_after: float | None = None) -> Event:
    """An ``error`` event; the message never holds SDP or credentials."""
    data: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        data["retry_after"] = round(retry_after, 3)
    return {"type": "error", "data": data}

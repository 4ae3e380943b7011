"""Request and response bodies of the Pipecat client contract (the OpenAPI document comes from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

MAX_SDP_CHARS = 64 * 1024
MAX_CANDIDATES = 64
MAX_CANDIDATE_CHARS = 1024
MAX_PC_ID_CHARS = 128

_SDP_REQUIRED_PREFIXES = ("o=", "s=", "t=")


class _Model(BaseModel):
    # Field names are the Pipecat client's (camelCase and snake_case mixed), not ours to choose.
    # Unknown fields are ignored so that newer clients keep working; known ones are strictly typed.
    # defer_build: Powertools builds its own validators from these models, so building each schema
    # at import as well was duplicate work (~25 ms of cold start; the first request pays ~1 ms).
    model_config = ConfigDict(extra="ignore", defer_build=True)


MAX_TRANSPORT_CHARS = 32


class StartRequest(_Model):
    """``POST /start``: what the Pipecat client sends to start a session."""

    # A string, not an enum: which transports are offered is the deployment's choice, and a name it
    # does not offer is a 400 that lists the ones it does (see BrokerService.start).
    transport: Annotated[StrictStr, Field(max_length=MAX_TRANSPORT_CHARS)] | None = Field(
        default=None,
        description=(
            "Transport the client will use: 'webrtc' (the default; 'smallwebrtc' is the same) or 'websocket'. "
            "A transport the deployment does not offer is refused with a 400 that names the ones it offers."
        ),
        examples=["webrtc", "websocket"],
    )
    enableDefaultIceServers: StrictBool | None = Field(
        default=None,
        description="Accepted for compatibility: a WebRTC session always gets TURN servers from the KVS pool.",
    )
    body: dict[str, Any] | None = Field(default=None, description="Application data for the agent (opaque).")


class IceServerModel(_Model):
    """One ``RTCIceServer``."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceConfig(_Model):
    """ICE configuration for ``RTCPeerConnection``."""

    iceServers: list[IceServerModel]


def _absent(value: object) -> bool:
    return value is None


class StartResponse(_Model):
    """The new session and how its browser reaches the agent: TURN servers (webrtc) or a WebSocket URL."""

    sessionId: str = Field(description="Opaque session id; also the AgentCore runtimeSessionId.")
    iceConfig: IceConfig | None = Field(
        default=None,
        exclude_if=_absent,
        description="webrtc only: the TURN servers for RTCPeerConnection, minted from the KVS channel pool.",
    )
    ws_url: str | None = Field(
        default=None,
        exclude_if=_absent,
        description=(
            "websocket only: a SigV4-presigned wss:// URL of the agent runtime's WebSocket, bound to this "
            "session (X-Amzn-Bedrock-AgentCore-Runtime-Session-Id) and valid for at most 300 s (a deployment "
            "setting). It is read once, when the socket opens: pass it to the Pipecat WebSocketTransport "
            "as {wsUrl: ws_url} (the transport refuses the other fields of this answer). It is a bearer "
            "credential until it expires: do not log it. No TURN credentials are minted for a websocket "
            "session, so there is no iceConfig and no offer route."
        ),
    )


class OfferRequest(_Model):
    """``POST /sessions/{sessionId}/api/offer``: an SDP offer from the browser."""

    sdp: Annotated[StrictStr, Field(min_length=1, max_length=MAX_SDP_CHARS)]
    type: Literal["offer"]
    pc_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_PC_ID_CHARS)] | None = None
    restart_pc: StrictBool | None = None
    requestData: dict[str, Any] | None = None

    @field_validator("sdp")
    @classmethod
    def _must_be_an_sdp_offer(cls, sdp: str) -> str:
        lines = [line.strip() for line in sdp.splitlines() if line.strip()]
        if not lines or lines[0] != "v=0":
            raise ValueError("sdp must be a session description starting with 'v=0'")
        missing = [prefix for prefix in _SDP_REQUIRED_PREFIXES if not any(line.startswith(prefix) for line in lines)]
        if missing:
            raise ValueError(f"sdp lacks the {', '.join(missing)} line(s) every session description has")
        if not any(line.startswith("m=audio") or line.startswith("m=video") for line in lines):
            raise ValueError("sdp offers no audio or video media section")
        return sdp


class AnswerResponse(_Model):
    """The agent's SDP answer."""

    sdp: str
    type: Literal["answer"]
    pc_id: str


class IceCandidateModel(_Model):
    """One trickled ICE candidate (the Pipecat client's field names)."""

    candidate: Annotated[StrictStr, Field(max_length=MAX_CANDIDATE_CHARS)]
    sdp_mid: Annotated[StrictStr, Field(max_length=64)] | None = None
    sdp_mline_index: Annotated[StrictInt, Field(ge=0, le=1024)] | None = None


class CandidatesRequest(_Model):
    """``PATCH /sessions/{sessionId}/api/offer``: candidates the client gathered (batched every 200 ms)."""

    pc_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_PC_ID_CHARS)]
    candidates: Annotated[list[IceCandidateModel], Field(max_length=MAX_CANDIDATES)]


class StatusResponse(_Model):
    """Candidates accepted."""

    status: Literal["success"]


class ErrorDetail(_Model):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_request', 'session_not_found'.")
    message: str = Field(description="What is wrong, for people.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Field-level validation problems.")


class ErrorResponse(_Model):
    """Every error response has this body."""

    error: ErrorDetail

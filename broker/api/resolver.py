"""The HTTP surface of the broker API: routes, validation and error bodies (Powertools event handler).

Both adapters run requests through :func:`handle_event`: the Lambda handler with API Gateway's HTTP API
events, and the local server with the same events built from plain HTTP requests. The JWT is checked
before the event arrives (API Gateway's JWT authorizer, or the local server); routes read its ``sub``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from broker import redaction
from broker.api.errors import ApiError, NotFoundError, PayloadTooLargeError, UnauthorizedError
from broker.api.models import (
    AnswerResponse,
    CandidatesRequest,
    ErrorResponse,
    OfferRequest,
    StartRequest,
    StartResponse,
    StatusResponse,
)
from broker.api.service import BrokerService

logger = logging.getLogger(__name__)
redaction.install()

API_TITLE = "Pipecat AgentCore TURN broker"
API_VERSION = "1.0.0"
SESSION_PATH = "/sessions/<sessionId>/api/offer"
START_DESCRIPTION = (
    "Issues a session id bound to the caller. `transport` chooses how the browser reaches the agent:\n\n"
    "- `webrtc` (the default when omitted; `smallwebrtc` is the same): the answer holds `iceConfig`, TURN "
    "credentials minted from the KVS channel pool, and the SDP exchange follows on the session's offer route.\n"
    "- `websocket`: the answer holds `ws_url`, a SigV4-presigned URL of the agent runtime's WebSocket for "
    "this session, valid for at most 300 s. The broker mints no TURN credentials (no KVS call) for it, "
    "and the offer routes are not used.\n\n"
    "A transport the deployment does not offer, or an unknown one, is a 400 (`unsupported_transport`) whose "
    "message lists the transports offered."
)

_ERRORS: dict[int, OpenAPIResponse] = {
    status: {"description": text, "content": {"application/json": {"model": ErrorResponse}}}
    for status, text in (
        (400, "Malformed JSON, or the agent refused the SDP or candidates"),
        (401, "No verified JWT subject"),
        (404, "Unknown session, or a session issued to another caller"),
        (413, "Body over the size limit"),
        (422, "The body does not match the schema"),
        (502, "The agent or KVS failed"),
        (503, "Out of TURN or agent capacity: retry after the Retry-After header"),
        (504, "The agent did not answer in time"),
    )
}


def _responses(success: str, *, bad_request: str | None = None) -> dict[int, OpenAPIResponse]:
    responses: dict[int, OpenAPIResponse] = {200: {"description": success}, **_ERRORS}
    if bad_request is not None:
        responses[400] = {"description": bad_request, "content": _ERRORS[400]["content"]}
    return responses


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=headers or {})


def _validation_response(error: RequestValidationError) -> Response[str]:
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return _json(400, {"error": {"code": "malformed_json", "message": "the body is not valid JSON"}})
    # Say where and what, never echo the input (it may hold SDP).
    details = [
        {"loc": [str(part) for part in problem.get("loc", ())], "msg": str(problem.get("msg", "invalid"))[:200]}
        for problem in problems[:20]
    ]
    summary = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details[:3])
    return _json(
        422, {"error": {"code": "invalid_request", "message": f"invalid request: {summary}", "details": details}}
    )


SlowSection = Callable[[], AbstractContextManager[None]]


def build_resolver(
    service: BrokerService, *, slow_section: SlowSection = contextlib.nullcontext
) -> APIGatewayHttpResolver:
    """Return a resolver with the three routes of the Pipecat client contract bound to ``service``.

    Powertools keeps the current event on a class, process-wide: in Lambda that is one request at a
    time; a server that resolves requests on several threads must hold one lock while resolving.
    Each route reads everything it needs from the event first, then calls the service (KVS, the
    agent) inside ``slow_section``, where such a server may let other requests in.

    Args:
        service: The behaviour.
        slow_section: Wraps the service call of each route (default: nothing).
    """
    app = APIGatewayHttpResolver(enable_validation=True)

    def subject() -> str:
        claims = app.current_event.request_context.authorizer.jwt_claim or {}
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise UnauthorizedError("a verified JWT with a 'sub' claim is required")
        return sub

    @app.post(
        "/start",
        summary="Start a session",
        description=START_DESCRIPTION,
        responses=_responses("The session", bad_request="Malformed JSON, or a transport not offered"),
    )
    def start(body: Annotated[StartRequest | None, Body()] = None) -> StartResponse:
        caller = subject()
        with slow_section():
            return service.start(caller, body or StartRequest())

    @app.post(SESSION_PATH, summary="Send the SDP offer", responses=_responses("SDP answer"))
    def offer(
        sessionId: Annotated[str, Path(max_length=256)],
        body: Annotated[OfferRequest, Body()],
    ) -> AnswerResponse:
        caller = subject()
        with slow_section():
            return service.offer(caller, sessionId, body)

    @app.patch(SESSION_PATH, summary="Trickle ICE candidates", responses=_responses("Candidates accepted"))
    def candidates(
        sessionId: Annotated[str, Path(max_length=256)],
        body: Annotated[CandidatesRequest, Body()],
    ) -> StatusResponse:
        caller = subject()
        with slow_section():
            return service.add_candidates(caller, sessionId, body)

    @app.exception_handler(ApiError)
    def api_error(error: ApiError) -> Response[str]:
        return _json(error.status, error.body(), error.headers)

    @app.exception_handler(RequestValidationError)
    def invalid(error: RequestValidationError) -> Response[str]:
        return _validation_response(error)

    @app.not_found
    def not_found(_: Exception) -> Response[str]:
        return _json(404, NotFoundError("no such route").body())

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response[str]:
        logger.exception("unexpected error: %s", type(error).__name__)
        return _json(500, ApiError("the broker failed unexpectedly").body())

    return app


def body_size(event: dict[str, Any]) -> int:
    """Size in bytes of an API Gateway event's body (decoded when base64)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode()) if isinstance(body, str) else len(body)


def handle_event(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any, max_body_bytes: int) -> Any:
    """Resolve one API Gateway HTTP API event, refusing oversized bodies before parsing them."""
    if body_size(event) > max_body_bytes:
        error = PayloadTooLargeError(f"the body exceeds {max_body_bytes} bytes")
        return {
            "statusCode": error.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(error.body()),
            "isBase64Encoded": False,
        }
    if event.get("isBase64Encoded") and isinstance(event.get("body"), str):
        # The event handler reads text; an HTTP API encodes some bodies (unknown content types) in base64.
        try:
            event = {**event, "body": base64.b64decode(event["body"]).decode("utf-8"), "isBase64Encoded": False}
        except (ValueError, UnicodeDecodeError):
            event = {**event, "body": "\x00", "isBase64Encoded": False}
    return app.resolve(event, context)


def openapi_json() -> str:
    """The OpenAPI document generated from the routes and models (written to ``docs/openapi.json``)."""
    from broker.api.sessions import SessionIssuer  # noqa: PLC0415 (only to build a throwaway resolver)

    class _Unused:
        def get_ice_servers(self) -> Any:
            raise NotImplementedError

        def invoke(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    app = build_resolver(BrokerService(ice=_Unused(), sessions=SessionIssuer(b"\0" * 32), agent=_Unused()))
    schema = json.loads(
        app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            summary="TURN credentials from a pool of KVS channels, and the Pipecat client's session routes",
        )
    )
    schema.setdefault("components", {})["securitySchemes"] = {
        "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    schema["security"] = [{"jwt": []}]
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"

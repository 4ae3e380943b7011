"""HTTP errors of the broker API: each becomes a JSON body ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import math


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a message for people.

    Messages never hold SDP, credentials or tokens.
    """

    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON body of the response."""
        return {"error": {"code": self.code, "message": self.message}}


class BadRequestError(ApiError):
    """The request is malformed or fails validation (400)."""

    status = 400
    code = "bad_request"


class UnauthorizedError(ApiError):
    """The request carries no verified caller identity (401)."""

    status = 401
    code = "unauthorized"


class NotFoundError(ApiError):
    """Unknown route, or a session that was not issued to this caller (404)."""

    status = 404
    code = "not_found"


class PayloadTooLargeError(ApiError):
    """The body exceeds the size limit (413)."""

    status = 413
    code = "payload_too_large"


class RetryLaterError(ApiError):
    """Temporarily out of capacity (503), with ``Retry-After`` in whole seconds (at least 1)."""

    status = 503
    code = "retry_later"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        seconds = max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 1
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class BadGatewayError(ApiError):
    """The agent failed, or answered something unusable (502)."""

    status = 502
    code = "agent_failed"


class GatewayTimeoutError(ApiError):
    """The agent did not answer in time (504)."""

    status = 504
    code = "agent_timeout"

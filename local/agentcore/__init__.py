"""A local stand-in for the AgentCore data plane (``bedrock-agentcore.<region>.amazonaws.com``).

It serves the two operations a voice agent's clients use, checked as AWS checks them and forwarded to
the local agent container:

- ``POST /runtimes/{escaped ARN}/invocations`` (``InvokeAgentRuntime``): SigV4 ``Authorization``
  header; the agent's ``text/event-stream`` answer is relayed as it is written. Unmodified boto3
  ``bedrock-agentcore`` clients reach it through ``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE``.
- ``GET /runtimes/{escaped ARN}/ws``: a WebSocket upgrade signed by a presigned URL (or SigV4
  headers), relayed both ways to the agent's ``/ws`` with the session id as a header.

Refusals, all answered before any upgrade, as ``{"message": ...}`` with ``x-amzn-ErrorType``:
403 for every SigV4 failure (:mod:`local.agentcore.sigv4`), 404 ``ResourceNotFoundException`` for
another runtime ARN or endpoint name, 400 ``ValidationException`` for a missing or malformed session
id, 424 ``RuntimeClientError`` when the agent cannot be reached or fails.
"""

from __future__ import annotations

from .config import AgentCoreConfig
from .exceptions import AgentCoreStandInError, ApiError, ConfigError
from .protocol import MAX_PRESIGNED_EXPIRES_SECONDS, SERVICE, SESSION_HEADER
from .server import AcceptedRequest, AgentCoreApp, AgentCoreStandIn
from .sigv4 import SignedRequest, SigV4Verifier

__all__ = [
    "MAX_PRESIGNED_EXPIRES_SECONDS",
    "SERVICE",
    "SESSION_HEADER",
    "AcceptedRequest",
    "AgentCoreApp",
    "AgentCoreConfig",
    "AgentCoreStandIn",
    "AgentCoreStandInError",
    "ApiError",
    "ConfigError",
    "SigV4Verifier",
    "SignedRequest",
]

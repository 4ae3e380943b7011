"""What the stand-in serves, with limits and error statuses read from botocore's service models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal
from urllib.parse import unquote

import botocore.loaders

SERVICE: Final = "bedrock-agentcore"
"""Signing name of the data plane (the model's ``signingName``)."""
SESSION_HEADER: Final = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
"""The session id: a header of ``InvokeAgentRuntime``, a header or query parameter of ``/ws``."""
MAX_PRESIGNED_EXPIRES_SECONDS: Final = 300
"""AgentCore's limit on a presigned URL's ``X-Amz-Expires`` (the SDK's ``MAX_PRESIGNED_URL_TIMEOUT``)."""
INVOKE_AGENT_RUNTIME: Final = "InvokeAgentRuntime"
WEBSOCKET: Final = "WebSocket"
Operation = Literal["InvokeAgentRuntime", "WebSocket"]


@cache
def _model(service: str) -> dict[str, Any]:
    model: dict[str, Any] = botocore.loaders.Loader().load_service_model(service, "service-2")
    return model


def _shape(service: str, name: str) -> dict[str, Any]:
    shape: dict[str, Any] = _model(service)["shapes"][name]
    return shape


def modeled_error_status(code: str) -> int:
    """HTTP status of a modeled ``bedrock-agentcore`` error shape."""
    return int(_shape(SERVICE, code)["error"]["httpStatusCode"])


@cache
def session_id_length() -> tuple[int, int]:
    """Shortest and longest ``runtimeSessionId`` (the model's ``SessionType``)."""
    shape = _shape(SERVICE, "SessionType")
    return int(shape["min"]), int(shape["max"])


@cache
def max_payload_bytes() -> int:
    """Largest ``InvokeAgentRuntime`` payload (the model's ``Body`` shape)."""
    return int(_shape(SERVICE, "Body")["max"])


@cache
def runtime_arn_pattern() -> re.Pattern[str]:
    """The control plane's ``AgentRuntimeArn`` pattern (match it with ``fullmatch``)."""
    return re.compile(_shape("bedrock-agentcore-control", "AgentRuntimeArn")["pattern"])


@cache
def endpoint_name_pattern() -> re.Pattern[str]:
    """The control plane's ``EndpointName`` pattern for a ``qualifier`` (match it with ``fullmatch``)."""
    return re.compile(_shape("bedrock-agentcore-control", "EndpointName")["pattern"])


@dataclass(frozen=True)
class Route:
    """A request path this stand-in serves: the operation and the runtime ARN it names (unescaped)."""

    operation: Operation
    runtime_arn: str


def route(raw_path: str) -> Route | None:
    """Match a raw (still percent-encoded) path against the two routes, or return None.

    The ARN is one path segment with its ``/`` escaped as ``%2F``, so the raw path is split before
    anything is unescaped.
    """
    parts = raw_path.split("/")
    if len(parts) != 4 or parts[0] or parts[1] != "runtimes" or not parts[2]:
        return None
    operations: dict[str, Operation] = {"invocations": INVOKE_AGENT_RUNTIME, "ws": WEBSOCKET}
    operation = operations.get(parts[3])
    if operation is None:
        return None
    return Route(operation, unquote(parts[2]))

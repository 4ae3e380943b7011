"""How the broker reaches the agent: one interface, two implementations.

- :class:`AgentCoreInvoker`: ``InvokeAgentRuntime`` through botocore (``bedrock-agentcore``), in AWS.
- :class:`HttpAgentInvoker`: ``POST /invocations`` on a local agent, in local mode.

Both send ``{"type": ..., "data": ...}`` with the session id as the AgentCore session header and yield
the events the agent streams back (``text/event-stream``, one ``data: {json}`` line per event).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from broker.exceptions import BrokerError

logger = logging.getLogger(__name__)

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
Event = dict[str, Any]


class AgentError(BrokerError):
    """The agent could not be reached or failed (the API answers 502)."""


class AgentTimeoutError(AgentError):
    """The agent did not answer in time (the API answers 504)."""


class AgentBusyError(AgentError):
    """AgentCore refused for capacity (throttled or quota); retry later (the API answers 503)."""


class AgentInvoker(Protocol):
    """Sends one payload to the agent of a session and yields the events it streams back."""

    def invoke(self, session_id: str, payload: Mapping[str, Any], *, timeout: float) -> Iterator[Event]:
        """Yield events until the stream ends.

        Raises:
            AgentTimeoutError: Nothing arrived within ``timeout`` seconds.
            AgentBusyError: The runtime is out of capacity.
            AgentError: The agent could not be reached or answered something unusable.
        """
        ...


def parse_event_stream(lines: Iterable[bytes]) -> Iterator[Event]:
    """Parse ``text/event-stream`` lines (``data: {json}``), ignoring comments and other fields.

    Raises:
        AgentError: An event is not a JSON object with a ``type``.
    """
    for raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except ValueError as exc:
            raise AgentError("the agent streamed an event that is not JSON") from exc
        if not isinstance(event, dict) or "type" not in event:
            raise AgentError("the agent streamed an event without a type")
        yield event


def _events_from_body(content_type: str, lines: Iterable[bytes], *, deadline: float, timeout: float) -> Iterator[Event]:
    """The agent's events, stopping with :class:`AgentTimeoutError` once past ``deadline`` (monotonic)."""
    if content_type.startswith("text/event-stream"):
        for event in parse_event_stream(lines):
            yield event
            if time.monotonic() > deadline:
                raise AgentTimeoutError(f"the agent did not finish within {timeout:g} s")
        return
    # A non-streaming answer is one JSON value: an event, or an error body.
    body = b"".join(lines)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise AgentError("the agent answered with a body that is not JSON") from exc
    if isinstance(value, dict) and "type" in value:
        yield value
        return
    raise AgentError("the agent answered without an event")


class HttpAgentInvoker:
    """Invokes a local agent over HTTP, the way AgentCore forwards invocations to the container.

    Args:
        base_url: The agent's base URL, e.g. ``http://127.0.0.1:8080``.
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the local agent URL must be http://host:port, got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80

    def invoke(self, session_id: str, payload: Mapping[str, Any], *, timeout: float) -> Iterator[Event]:
        """Yield the agent's events (see :class:`AgentInvoker`)."""
        deadline = time.monotonic() + timeout
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            try:
                connection.request(
                    "POST",
                    "/invocations",
                    body=json.dumps(payload).encode(),
                    headers={
                        "Content-Type": "application/json",
                        "Accept": "text/event-stream",
                        SESSION_HEADER: session_id,
                    },
                )
                response = connection.getresponse()
            except TimeoutError as exc:
                raise AgentTimeoutError(f"the agent did not answer within {timeout:g} s") from exc
            except OSError as exc:
                raise AgentError(f"the agent at {self._host}:{self._port} is unreachable ({exc.strerror})") from exc
            if response.status >= 400:
                raise AgentError(f"the agent answered HTTP {response.status}")
            content_type = response.getheader("Content-Type", "")
            try:
                yield from _events_from_body(content_type, response, deadline=deadline, timeout=timeout)
            except TimeoutError as exc:
                raise AgentTimeoutError(f"the agent stopped answering for {timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise AgentError("the connection to the agent broke") from exc
        finally:
            connection.close()


AGENTCORE_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=3,
    max_pool_connections=16,
    user_agent_extra="pipecat-turn-broker",
)


class AgentCoreInvoker:
    """Invokes the agent through ``InvokeAgentRuntime`` (botocore ``bedrock-agentcore``).

    Args:
        runtime_arn: The agent runtime's ARN.
        qualifier: Endpoint name or version (default: the runtime's default endpoint).
        client: A ``bedrock-agentcore`` client (tests point one at a local shim); created once by default.
        session: The botocore session that creates the client (default: a new one).
        read_timeout: Seconds of silence after which a streamed response counts as stalled.
        endpoint_url: Where the client sends requests (default: botocore's choice, which honours
            ``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE`` in this process's environment).
    """

    def __init__(
        self,
        runtime_arn: str,
        *,
        qualifier: str | None = None,
        client: Any | None = None,
        session: botocore.session.Session | None = None,
        read_timeout: float = 20.0,
        endpoint_url: str | None = None,
    ) -> None:
        self._arn = runtime_arn
        self._qualifier = qualifier
        # The runtime's own region (its ARN's fourth field), wherever this process runs.
        region = runtime_arn.split(":")[3] if runtime_arn.count(":") >= 5 else ""
        self._client = client or (session or botocore.session.Session()).create_client(
            "bedrock-agentcore",
            region_name=region or None,
            endpoint_url=endpoint_url,
            config=AGENTCORE_CLIENT_CONFIG.merge(Config(read_timeout=read_timeout)),
        )

    def invoke(self, session_id: str, payload: Mapping[str, Any], *, timeout: float) -> Iterator[Event]:
        """Yield the agent's events (see :class:`AgentInvoker`)."""
        deadline = time.monotonic() + timeout
        request: dict[str, Any] = {
            "agentRuntimeArn": self._arn,
            "runtimeSessionId": session_id,
            "payload": json.dumps(payload).encode(),
            "contentType": "application/json",
            "accept": "text/event-stream",
        }
        if self._qualifier:
            request["qualifier"] = self._qualifier
        try:
            answer = self._client.invoke_agent_runtime(**request)
            body = answer["response"]
            content_type = str(answer.get("contentType", ""))
            yield from _events_from_body(content_type, body.iter_lines(), deadline=deadline, timeout=timeout)
        except ReadTimeoutError as exc:
            raise AgentTimeoutError("the agent runtime stopped answering") from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            if code in ("ThrottlingException", "ServiceQuotaExceededException", "RetryableConflictException"):
                raise AgentBusyError(f"InvokeAgentRuntime refused: {code}") from exc
            raise AgentError(f"InvokeAgentRuntime failed: {code}") from exc
        except BotoCoreError as exc:
            raise AgentError(f"InvokeAgentRuntime failed: {type(exc).__name__}") from exc

"""The stand-in's ASGI app and :class:`AgentCoreStandIn`, which serves it with uvicorn on a thread.

uvicorn answers both operations: ``InvokeAgentRuntime`` (a POST whose ``text/event-stream`` answer is
relayed chunk by chunk as the agent writes it) and the ``/ws`` upgrade, refused before the upgrade
with an HTTP status and a JSON body (the ASGI WebSocket denial response) when AWS would refuse it.
asyncio sets ``TCP_NODELAY`` on every TCP connection, so Nagle's 40 ms stalls (see DESIGN) do not
arise here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import unquote

import aiohttp
import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from .config import AgentCoreConfig
from .exceptions import ApiError
from .protocol import (
    INVOKE_AGENT_RUNTIME,
    MAX_PRESIGNED_EXPIRES_SECONDS,
    SERVICE,
    SESSION_HEADER,
    WEBSOCKET,
    Operation,
    Route,
    max_payload_bytes,
    route,
    session_id_length,
)
from .sigv4 import SignedRequest, SigV4Verifier

logger = logging.getLogger(__name__)

MAX_WS_MESSAGE_BYTES: Final = 16 * 1024 * 1024  # uvicorn's default ws_max_size, used on both legs
_MAX_RECORDED: Final = 10_000
# Headers of an invocation that AgentCore passes on to the container.
_FORWARDED_HEADERS: Final = ("content-type", "accept", "x-amzn-bedrock-agentcore-runtime-user-id")


@dataclass(frozen=True)
class AcceptedRequest:
    """One request that passed every check and was handed to the agent.

    Attributes:
        operation: ``InvokeAgentRuntime`` or ``WebSocket``.
        runtime_arn: The runtime it named.
        session_id: Its runtime session id.
        qualifier: The endpoint it named, if any.
    """

    operation: Operation
    runtime_arn: str
    session_id: str
    qualifier: str | None


class _RedactQueryStrings(logging.Filter):
    """Cut query strings out of uvicorn's WebSocket log lines: a presigned URL's query is a credential."""

    _QUERY = re.compile(r"\?\S*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and "WebSocket" in str(record.msg):
            record.args = tuple(
                self._QUERY.sub("?<redacted>", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True

    def _redact(self, arg: object) -> object:
        return self._QUERY.sub("?<redacted>", arg) if isinstance(arg, str) else arg


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, without its false error log after a denial response.

    uvicorn 0.54 sends the denial but leaves ``handshake_complete`` unset, so every refusal is followed
    by "ASGI callable returned without completing handshake" at ERROR (its 500 is already suppressed).
    """

    async def send(self, message: Any) -> None:
        """Send as uvicorn does; a finished denial response counts as the handshake's answer."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def _install_redaction() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _RedactQueryStrings) for existing in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_RedactQueryStrings())


def _query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """Split and percent-decode a query string without ``parse_qsl``'s ``+``-as-space rule."""
    pairs = []
    for item in query_string.decode("latin-1").split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _signed_request(scope: Scope, body: bytes = b"") -> SignedRequest:
    return SignedRequest(
        method=scope.get("method", "GET"),
        raw_path=scope.get("raw_path", b"").decode("latin-1") or scope["path"],
        query=_query_pairs(scope.get("query_string", b"")),
        headers=_headers(scope),
        body=body,
    )


def _error_response(error: ApiError) -> Response:
    return Response(
        json.dumps(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _forwardable(code: int | None, *, lost: int) -> int:
    """A close code that may be sent on: 1005 (none given) becomes 1000, a lost link becomes ``lost``."""
    if code is None or code == 1005:
        return 1000
    if code in (1006, 1015):
        return lost
    return code


class AgentCoreApp:
    """The ASGI app: checks each request as AgentCore would, then forwards it to the local agent.

    Args:
        config: The stand-in's settings.
        clock: Wall clock (epoch seconds) for signature times.
    """

    def __init__(self, config: AgentCoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._verifier = SigV4Verifier(
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            session_token=config.session_token,
            region=config.region,
            service=SERVICE,
            max_expires_seconds=MAX_PRESIGNED_EXPIRES_SECONDS,
            max_clock_skew_seconds=config.max_clock_skew_seconds,
            clock=clock,
        )
        self._accepted: deque[AcceptedRequest] = deque(maxlen=_MAX_RECORDED)
        self._accepted_lock = threading.Lock()
        self._http: aiohttp.ClientSession | None = None

    def accepted(self) -> list[AcceptedRequest]:
        """The requests that passed every check, oldest first (at most the last 10,000)."""
        with self._accepted_lock:
            return list(self._accepted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        raw_path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        matched = route(raw_path)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, matched)
        elif matched is not None and matched.operation == INVOKE_AGENT_RUNTIME and scope["method"] == "POST":
            await self._invoke(scope, receive, send, matched)
        else:
            error = ApiError.unknown_operation()
            await _error_response(error)(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._http = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.agent_connect_timeout_seconds),
                    auto_decompress=False,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._http is not None:
                    await self._http.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorize(self, request: SignedRequest, matched: Route, session_id: str | None) -> AcceptedRequest:
        """Authenticate first, as AWS does, then check the runtime, endpoint and session id.

        Raises:
            ApiError: The answer to send instead.
        """
        self._verifier.verify(request)
        if matched.runtime_arn != self.config.runtime_arn:
            raise ApiError.not_found("The specified agent runtime does not exist.")
        qualifier = request.param("qualifier")
        if qualifier is not None and qualifier not in self.config.qualifiers:
            raise ApiError.not_found(f"The agent runtime has no endpoint named {qualifier!r}.")
        shortest, longest = session_id_length()
        if session_id is None:
            raise ApiError.validation("runtimeSessionId", f"{SESSION_HEADER} is required.")
        if not shortest <= len(session_id) <= longest:
            raise ApiError.validation(
                "runtimeSessionId", f"The runtime session id must be {shortest} to {longest} characters long."
            )
        accepted = AcceptedRequest(matched.operation, matched.runtime_arn, session_id, qualifier)
        with self._accepted_lock:
            self._accepted.append(accepted)
        return accepted

    def _refused(self, operation: Operation, request: SignedRequest, error: ApiError) -> None:
        # The reason and the host only: the query of a presigned URL is a credential.
        logger.warning(
            "refused %s for host %s: %s %s (%s)",
            operation,
            request.headers.get("host", "-"),
            error.status,
            error.code,
            error.message,
        )

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, matched: Route) -> None:
        http_request = Request(scope, receive)
        body = await http_request.body()
        request = _signed_request(scope, body)
        try:
            accepted = self._authorize(request, matched, request.headers.get(SESSION_HEADER.lower()))
            if len(body) > max_payload_bytes():
                raise ApiError.validation("payload", f"The payload exceeds {max_payload_bytes()} bytes.")
            answer = await self._post_to_agent(request, accepted.session_id)
        except ApiError as error:
            self._refused(INVOKE_AGENT_RUNTIME, request, error)
            await _error_response(error)(scope, receive, send)
            return
        response = StreamingResponse(
            self._relay_body(answer),
            status_code=200,
            media_type=answer.headers.get("Content-Type", "application/json"),
            headers={SESSION_HEADER: accepted.session_id, "x-amzn-RequestId": str(uuid.uuid4())},
        )
        await response(scope, receive, send)

    async def _post_to_agent(self, request: SignedRequest, session_id: str) -> aiohttp.ClientResponse:
        assert self._http is not None  # noqa: S101 (the lifespan start-up creates it)
        headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
        try:
            answer = await self._http.post(
                self.config.agent_invocations_url, data=request.body, headers={**headers, SESSION_HEADER: session_id}
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("the agent at %s is unreachable: %s", self.config.agent_invocations_url, exc)
            raise ApiError.runtime_client_error("The runtime could not be reached.") from exc
        if answer.status >= 400:
            answer.release()
            raise ApiError.runtime_client_error(
                f"Received error ({answer.status}) from runtime. Please check your CloudWatch logs for more "
                "information."
            )
        return answer

    async def _relay_body(self, answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the agent's body as each chunk arrives; an agent that breaks off breaks the stream off too."""
        try:
            async for chunk in answer.content.iter_any():
                yield chunk
        finally:
            answer.release()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, matched: Route | None) -> None:
        client = WebSocket(scope, receive, send)
        request = _signed_request(scope)
        try:
            if matched is None or matched.operation != WEBSOCKET:
                raise ApiError.unknown_operation()
            session_id = request.param(SESSION_HEADER) or request.headers.get(SESSION_HEADER.lower())
            accepted = self._authorize(request, matched, session_id)
            agent = await self._connect_agent(accepted.session_id, scope.get("subprotocols", []))
        except ApiError as error:
            self._refused(WEBSOCKET, request, error)
            await client.send_denial_response(_error_response(error))
            return
        try:
            await client.accept(subprotocol=agent.subprotocol)
            await self._relay(client, agent)
        finally:
            await agent.close()

    async def _connect_agent(self, session_id: str, subprotocols: list[str]) -> ClientConnection:
        try:
            return await connect(
                self.config.agent_ws_url,
                additional_headers={SESSION_HEADER: session_id},
                subprotocols=[Subprotocol(name) for name in subprotocols] or None,
                open_timeout=self.config.agent_connect_timeout_seconds,
                max_size=MAX_WS_MESSAGE_BYTES,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.warning("the agent's WebSocket at %s refused or is unreachable: %s", self.config.agent_ws_url, exc)
            raise ApiError.runtime_client_error("The runtime's WebSocket could not be reached.") from exc

    async def _relay(self, client: WebSocket, agent: ClientConnection) -> None:
        """Pass frames both ways until either side closes, then close the other with the same code."""
        to_agent = asyncio.create_task(self._client_to_agent(client, agent))
        try:
            await self._agent_to_client(agent, client)
        finally:
            to_agent.cancel()
            await asyncio.gather(to_agent, return_exceptions=True)

    async def _client_to_agent(self, client: WebSocket, agent: ClientConnection) -> None:
        """Forward the client's frames; when the client goes, close the agent's side with its code."""
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                code = _forwardable(message.get("code"), lost=1001)
                await agent.close(code, message.get("reason") or "")
                return
            try:
                if message.get("bytes") is not None:
                    await agent.send(message["bytes"])
                elif message.get("text") is not None:
                    await agent.send(message["text"])
            except ConnectionClosed:
                return  # the agent left: _agent_to_client sees it and closes the client

    async def _agent_to_client(self, agent: ClientConnection, client: WebSocket) -> None:
        """Forward the agent's frames until its side closes (for any reason), then close the client."""
        try:
            async for message in agent:
                if isinstance(message, bytes):
                    await client.send_bytes(message)
                else:
                    await client.send_text(message)
        except ConnectionClosed:
            logger.debug("the agent's WebSocket broke off")
        except (WebSocketDisconnect, WebSocketDisconnected):
            return  # the client is gone; the other task closes the agent's side with the client's code
        try:
            await client.close(_forwardable(agent.close_code, lost=1011), agent.close_reason or "")
        except (WebSocketDisconnect, WebSocketDisconnected):
            logger.debug("the client had already gone")  # it left while the agent was closing


class AgentCoreStandIn:
    """The AgentCore data plane on loopback, serving on a background thread.

    Example:
        >>> config = AgentCoreConfig(runtime_arn=ARN, agent_url="http://127.0.0.1:8080")  # doctest: +SKIP
        >>> with AgentCoreStandIn(config) as agentcore:  # doctest: +SKIP
        ...     boto3.client("bedrock-agentcore", endpoint_url=agentcore.url).invoke_agent_runtime(...)

    Args:
        config: Settings.
        clock: Wall clock (epoch seconds) against which signing times are checked.
    """

    def __init__(self, config: AgentCoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.app = AgentCoreApp(config, clock=clock)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self) -> Self:
        """Bind the port and serve on a daemon thread; return once it accepts connections.

        Raises:
            OSError: The address cannot be bound (for example, the port is in use).
            RuntimeError: The stand-in is already running or did not start.
        """
        if self._server is not None:
            raise RuntimeError("the AgentCore stand-in is already running")
        _install_redaction()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.create_server((self.config.host, self.config.port), family=family, backlog=512)
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                lifespan="on",
                ws=_WebSocketProtocol,
                ws_max_size=MAX_WS_MESSAGE_BYTES,
                log_config=None,  # leave the process's logging alone
                access_log=False,
                timeout_graceful_shutdown=math.ceil(self.config.shutdown_timeout_seconds),
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="agentcore-standin", daemon=True)
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the AgentCore stand-in did not start (see the log)")
            time.sleep(0.01)
        logger.info("AgentCore stand-in listening on %s for %s", self.url, self.config.runtime_arn)
        return self

    def stop(self) -> None:
        """Close open connections, stop serving and release the port; safe to call twice."""
        server, thread, sock = self._server, self._thread, self._socket
        if server is None:
            return
        self._server = self._thread = self._socket = None
        server.should_exit = True
        if thread is not None:
            thread.join(timeout=self.config.shutdown_timeout_seconds + 5)
        if sock is not None:
            sock.close()
        logger.info("AgentCore stand-in stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """TCP port the running stand-in is bound to."""
        if self._socket is None:
            raise RuntimeError("the AgentCore stand-in is not running; call start() first")
        return int(self._socket.getsockname()[1])

    @property
    def host(self) -> str:
        """The ``host`` a client signs for and sends: ``127.0.0.1:<port>``."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """Endpoint URL for boto3 (``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE``), e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}"

    def accepted(self) -> list[AcceptedRequest]:
        """The requests that passed every check, oldest first."""
        return self.app.accepted()

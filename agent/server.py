"""The AgentCore application: ``POST /invocations`` streams events, ``/ws`` calls, ``GET /ping`` tracks calls.

Each answered call, and each ``/ws`` connection (see :mod:`agent.websocket_calls`), registers an
AgentCore async task for as long as it runs, so ``/ping`` reports ``HealthyBusy`` during a call and
``Healthy`` once the peer has left, and AgentCore keeps the session alive exactly as long as someone
is talking to the agent.

An offer is answered before its call's pipeline exists: this module imports the server and WebRTC
only, and the pipelines' Pipecat services load in a worker thread from the moment the server starts
(see :class:`~agent.pipelines.CallPipelines`), because a fresh process starts for every AgentCore
session and its first answer is part of the caller's wait.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from bedrock_agentcore import BedrockAgentCoreApp
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from starlette.middleware import Middleware

from agent.calls import CallManager
from agent.config import AgentConfig
from agent.exceptions import ConfigurationError, IceServersUnavailableError, PayloadError
from agent.ice import BrokerIceServers, IceServerProvider, no_ice_servers
from agent.payloads import CandidatesRequest, Event, error_event, parse_request, status_event
from agent.pipelines import CallPipelines, PipelineBuilder
from agent.websocket_calls import WebSocketGuard, call_name, run_websocket_call
from broker.exceptions import BrokerError

if TYPE_CHECKING:
    from bedrock_agentcore.runtime.context import RequestContext
    from starlette.websockets import WebSocket

    from agent.bot import BotPipeline

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class InvocationGuard:
    """ASGI middleware: an invocation body that is too large or not JSON gets an ``error`` event.

    Bodies are read at most ``max_bytes`` far (a declared ``Content-Length`` above it is refused
    unread), so no request can make the agent buffer more than that.

    Args:
        app: The application to guard.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    @staticmethod
    async def _reply(send: Send, event: Event) -> None:
        body = f"data: {json.dumps(event)}\n\n".encode()
        headers = [(b"content-type", b"text/event-stream"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check ``POST /invocations`` bodies; pass everything else through."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        too_large = error_event("payload_too_large", f"the request body exceeds {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reply(send, too_large)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                await self._reply(send, too_large)
                return
        try:
            json.loads(body)
        except (UnicodeDecodeError, ValueError):
            await self._reply(send, error_event("invalid_json", "the request body is not JSON"))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


ICE_SERVER_FALLBACKS: Final[Mapping[str, str]] = {
    "none": "AGENT_ICE_SERVERS=none (host candidates only)",
    "broker": "AGENT_ICE_SERVERS=broker (TURN from this agent's own KVS pool client)",
}


def default_ice_servers(config: AgentConfig) -> IceServerProvider:
    """The provider ``AGENT_ICE_SERVERS`` names, for offers whose invocation brings no ICE servers.

    The broker library (boto3 clients, the pool's limiter) is imported only when ``broker`` is chosen.

    Raises:
        ConfigurationError: ``broker`` is chosen and the broker's variables are missing or invalid.
    """
    if config.ice_servers == "none":
        return no_ice_servers
    from broker.core import IceBroker  # noqa: PLC0415 - loads botocore and the pool: only when chosen

    try:
        return BrokerIceServers(IceBroker.from_env())
    except BrokerError as exc:
        raise ConfigurationError(f"{exc} (or set AGENT_ICE_SERVERS=none for host candidates only)") from exc


CallRunner = Callable[[SmallWebRTCConnection], Awaitable[None]]
PipelineFailureHook = Callable[[BaseException], None]
PIPELINE_READY: Final = "the first call's %s pipeline is ready"
"""What the agent logs (INFO, with the pipeline's name) once its first call's pipeline is built."""


async def serve_request(
    calls: CallManager, payload: object, *, pipeline: str, run_call: CallRunner
) -> AsyncIterator[Event]:
    """Serve one invocation: validate, then answer an offer or add candidates.

    Args:
        calls: The process's calls.
        payload: The invocation's JSON payload.
        pipeline: The name of the pipeline a new call runs, for its ``progress`` event.
        run_call: Runs a new call (taking its pipeline first) until the call ends.

    Yields:
        The events of the request (see :mod:`agent.payloads`); failures end with an ``error`` event.
    """
    try:
        request = parse_request(payload)
    except PayloadError as exc:
        logger.info("refused invocation: %s", exc.code)
        yield error_event(exc.code, str(exc))
        return
    yield status_event(request)
    try:
        if isinstance(request, CandidatesRequest):
            accepted = await calls.add_candidates(request)
            yield {
                "type": "ice-candidates",
                "data": {"status": "success", "pc_id": request.pc_id, "accepted": accepted},
            }
            return
        if request.pc_id is not None:
            answer = await calls.answer(request)
            progress = {"state": "renegotiated", "pc_id": answer["pc_id"]}
        else:
            answer = await calls.answer(request, run_call=run_call)
            progress = {"state": "call-started", "pc_id": answer["pc_id"], "pipeline": pipeline}
        yield {"type": "answer", "data": answer}
        yield {"type": "progress", "data": progress}
    except PayloadError as exc:
        logger.info("refused %s: %s", request.kind, exc.code)
        yield error_event(exc.code, str(exc))
    except IceServersUnavailableError as exc:
        logger.warning("no ICE servers for a new call: %s", exc)
        yield error_event("ice_servers_unavailable", str(exc), retry_after=exc.retry_after)
    except Exception as exc:
        logger.exception("%s failed", request.kind)
        yield error_event("internal", f"the agent failed to serve the request ({type(exc).__name__})")


def create_app(
    config: AgentConfig,
    *,
    ice_servers: IceServerProvider | None = None,
    builder: PipelineBuilder | None = None,
    on_pipeline_failure: PipelineFailureHook | None = None,
) -> BedrockAgentCoreApp:
    """Build the agent's HTTP application.

    When the server starts (ASGI lifespan), the first call's pipeline starts being built in a worker
    thread; a server run without lifespan builds each call's pipeline as the call starts.

    Args:
        config: The settings.
        ice_servers: Source of the ICE servers of an offer whose invocation brings none (default:
            ``AGENT_ICE_SERVERS``).
        builder: Builds each call's pipeline (default: ``AGENT_PIPELINE``'s).
        on_pipeline_failure: Called, from the worker thread, with what building the first call's
            pipeline raised (a :class:`ConfigurationError` says what to set or install); the calls of
            this process fail with it too.

    Raises:
        ConfigurationError: The ICE server source is misconfigured.
    """
    pipelines = CallPipelines(config, builder)

    def built(prepared: concurrent.futures.Future[BotPipeline]) -> None:
        failure = prepared.exception()
        if failure is None:
            logger.info(PIPELINE_READY, config.pipeline)
            return
        if isinstance(failure, ConfigurationError):
            logger.error("configuration error: the %s pipeline cannot be built: %s", config.pipeline, failure)
        else:
            logger.error("building the %s pipeline failed", config.pipeline, exc_info=failure)
        if on_pipeline_failure is not None:
            on_pipeline_failure(failure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        pipelines.prepare().add_done_callback(built)
        yield

    app = BedrockAgentCoreApp(
        lifespan=lifespan,
        middleware=[
            Middleware(InvocationGuard, max_bytes=config.max_request_bytes),
            Middleware(WebSocketGuard, max_bytes=config.max_frame_bytes),
        ],
    )
    app.logger.propagate = False  # the SDK logs JSON lines itself; root would print them twice
    busy: dict[str, int] = {}

    # Busy from before the answer leaves until the call is over, so no /ping in between says Healthy.
    def call_started(pc_id: str) -> None:
        busy[pc_id] = app.add_async_task("voice-call", {"pc_id": pc_id, "pipeline": config.pipeline})

    def call_ended(pc_id: str) -> None:
        task_id = busy.pop(pc_id, None)
        if task_id is not None:
            app.complete_async_task(task_id)

    if ice_servers is None:
        ice_servers, source = default_ice_servers(config), ICE_SERVER_FALLBACKS[config.ice_servers]
    else:
        source = "the ICE server provider given to create_app"
    calls = CallManager(
        ice_servers=ice_servers,
        ice_servers_source=source,
        on_start=call_started,
        on_end=call_ended,
        relay_only=config.ice_transport_policy == "relay",
    )

    async def run_call(connection: SmallWebRTCConnection) -> None:
        # What the caller says before the pipeline runs waits in aiortc's queue, so it is heard too.
        bot = await pipelines.take()
        # Building the pipeline imported agent.bot and most of Pipecat's transports already.
        from pipecat.transports.base_transport import TransportParams  # noqa: PLC0415
        from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: PLC0415

        from agent.bot import run_bot  # noqa: PLC0415

        transport = SmallWebRTCTransport(
            webrtc_connection=connection,
            params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
        )
        reason = await run_bot(
            transport, bot, connect_timeout=config.connect_timeout_seconds, metrics_output=config.metrics
        )
        logger.info("call %s ended: %s", connection.pc_id, reason)

    @app.entrypoint
    async def invocations(payload: Any, context: Any = None) -> AsyncIterator[Event]:
        async for event in serve_request(calls, payload, pipeline=pipelines.name, run_call=run_call):
            yield event

    @app.websocket
    async def websocket_call(websocket: WebSocket, context: RequestContext) -> None:
        # Busy from the upgrade until the call is over, however it ends.
        task_id = app.add_async_task(
            "voice-call", {"session_id": context.session_id, "transport": "websocket", "pipeline": config.pipeline}
        )
        try:
            await run_websocket_call(
                websocket, name=call_name(websocket.scope), take_pipeline=pipelines.take, config=config
            )
        finally:
            app.complete_async_task(task_id)

    return app

"""The AgentCore application: ``POST /invocations`` streams events, ``GET /ping`` tracks calls.

Each answered call registers an AgentCore async task for as long as it runs, so ``/ping`` reports
``HealthyBusy`` during a call and ``Healthy`` once the peer has left, and AgentCore keeps the session
alive exactly as long as someone is talking to the agent.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from bedrock_agentcore import BedrockAgentCoreApp
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from starlette.middleware import Middleware

from agent.bot import BotPipeline, run_bot
from agent.calls import CallManager
from agent.config import AgentConfig
from agent.exceptions import ConfigurationError, IceServersUnavailableError, PayloadError
from agent.ice import BrokerIceServers, IceServerProvider, no_ice_servers
from agent.payloads import CandidatesRequest, Event, error_event, parse_request, status_event
from agent.pipelines import PipelineBuilder, pipeline_builder
from broker.exceptions import BrokerError

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


CallWithPipeline = Callable[[BotPipeline, SmallWebRTCConnection], Awaitable[None]]


async def serve_request(
    calls: CallManager, payload: object, *, new_pipeline: Callable[[], BotPipeline], run_call: CallWithPipeline
) -> AsyncIterator[Event]:
    """Serve one invocation: validate, then answer an offer or add candidates.

    Args:
        calls: The process's calls.
        payload: The invocation's JSON payload.
        new_pipeline: Builds the pipeline of a new call.
        run_call: Runs a new call with its pipeline until the call ends.

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
            bot = new_pipeline()
            answer = await calls.answer(request, run_call=functools.partial(run_call, bot))
            progress = {"state": "call-started", "pc_id": answer["pc_id"], "pipeline": bot.name}
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
) -> BedrockAgentCoreApp:
    """Build the agent's HTTP application.

    Args:
        config: The settings.
        ice_servers: Source of the ICE servers of an offer whose invocation brings none (default:
            ``AGENT_ICE_SERVERS``).
        builder: Builds each call's pipeline (default: ``AGENT_PIPELINE``'s, checked by one build).

    Raises:
        ConfigurationError: The pipeline or the ICE server source is misconfigured.
    """
    build = builder or pipeline_builder(config)
    app = BedrockAgentCoreApp(middleware=[Middleware(InvocationGuard, max_bytes=config.max_request_bytes)])
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

    async def run_call(bot: BotPipeline, connection: SmallWebRTCConnection) -> None:
        transport = SmallWebRTCTransport(
            webrtc_connection=connection,
            params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
        )
        reason = await run_bot(transport, bot, connect_timeout=config.connect_timeout_seconds)
        logger.info("call %s ended: %s", connection.pc_id, reason)

    @app.entrypoint
    async def invocations(payload: Any, context: Any = None) -> AsyncIterator[Event]:
        async for event in serve_request(calls, payload, new_pipeline=lambda: build(config), run_call=run_call):
            yield event

    return app

"""The AgentCore data-plane stand-in: presigned WebSocket upgrades and InvokeAgentRuntime, SigV4 checked.

URLs come from the real SDK (``AgentCoreRuntimeClient.generate_presigned_url``), which signs only for
the public host ``bedrock-agentcore.<region>.amazonaws.com``. The signature covers the host, so such
a URL is presented exactly as a client would present it to AWS, Host header included, with only the
TCP connection redirected to the stand-in (as a DNS override would). A URL signed for the stand-in's
own ``127.0.0.1:<port>`` (what the broker's signer makes in local mode) works too; a URL signed for one
host and presented at another does not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import boto3
import pytest
import uvicorn
from bedrock_agentcore.runtime import AgentCoreRuntimeClient
from bedrock_agentcore.runtime.agent_core_runtime_client import MAX_PRESIGNED_URL_TIMEOUT
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broker.api.agents import AgentCoreInvoker
from local.agentcore import (
    MAX_PRESIGNED_EXPIRES_SECONDS,
    SESSION_HEADER,
    AgentCoreConfig,
    AgentCoreStandIn,
    ConfigError,
)

REGION = "us-east-1"
RUNTIME_ARN = f"arn:aws:bedrock-agentcore:{REGION}:123456789012:runtime/voice_agent-AbCdEf1234"
OTHER_ARN = f"arn:aws:bedrock-agentcore:{REGION}:123456789012:runtime/other_agent-ZyXwVu9876"
ACCESS_KEY = "AKIDSTANDINTESTING00"
SECRET_KEY = "standin-test-secret"
PUBLIC_HOST = f"bedrock-agentcore.{REGION}.amazonaws.com"
SESSION_ID = "session-0123456789abcdef0123456789abcdef"  # 40 characters (33-256 allowed)
FIRST_EVENT = b'data: {"type": "first"}\n\n'


# --- a test agent: /ws echoes, /invocations streams server-sent events slowly -------------------


@dataclass
class FakeAgent:
    """An ASGI agent container: records what reached it and lets a test pace its event stream."""

    ws_sessions: list[str | None] = field(default_factory=list)
    ws_close_codes: list[int] = field(default_factory=list)
    invocations: list[tuple[str | None, bytes]] = field(default_factory=list)
    release_last_event: threading.Event = field(default_factory=threading.Event)
    last_event_sent: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await self._echo(WebSocket(scope, receive, send))
        elif scope["type"] == "http" and scope["path"] == "/invocations":
            response = await self._invocation(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "http":
            await JSONResponse({"error": "no such path"}, status_code=404)(scope, receive, send)

    async def _echo(self, ws: WebSocket) -> None:
        self.ws_sessions.append(ws.headers.get(SESSION_HEADER))
        subprotocols = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=subprotocols[0] if subprotocols else None)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                self.ws_close_codes.append(message["code"])
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await ws.close(int(text.removeprefix("close:")), "agent says bye")
                return
            if text is not None:
                await ws.send_text(text)
            else:
                await ws.send_bytes(message["bytes"])

    async def _invocation(self, request: Request) -> JSONResponse | StreamingResponse:
        body = await request.body()
        self.invocations.append((request.headers.get(SESSION_HEADER), body))
        if json.loads(body).get("fail"):
            return JSONResponse({"error": "agent failed"}, status_code=500)

        async def events() -> Any:
            yield FIRST_EVENT
            # The last event waits until the test has read the first: a buffering relay would deadlock here.
            released = await asyncio.to_thread(self.release_last_event.wait, 10)
            yield b'data: {"type": "second"}\n\n'
            self.last_event_sent.set()
            yield f'data: {{"type": "last", "released": {json.dumps(released)}}}\n\n'.encode()

        return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def serving(app: Any) -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", ws="websockets-sansio", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test agent did not start"
        time.sleep(0.01)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def agent() -> Iterator[tuple[FakeAgent, str]]:
    app = FakeAgent()
    with serving(app) as port:
        yield app, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def standin(agent: tuple[FakeAgent, str]) -> Iterator[AgentCoreStandIn]:
    config = AgentCoreConfig(
        runtime_arn=RUNTIME_ARN, agent_url=agent[1], access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    with AgentCoreStandIn(config) as running:
        yield running


# --- signing, as the SDK does it and as the broker does it for the local host ----------------------


def sdk_client(*, secret: str = SECRET_KEY, access_key: str = ACCESS_KEY, region: str = REGION) -> Any:
    session = boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret, region_name=region)
    return AgentCoreRuntimeClient(region=region, session=session)


@pytest.fixture(scope="module")
def sdk() -> Any:
    return sdk_client()


def presign(
    host: str,
    *,
    runtime_arn: str = RUNTIME_ARN,
    query: dict[str, str] | None = None,
    expires: int = 300,
    secret: str = SECRET_KEY,
    region: str = REGION,
    service: str = "bedrock-agentcore",
) -> str:
    """Sign ``/runtimes/<arn>/ws`` for ``host`` with botocore's SigV4QueryAuth, as the SDK's ``_presign`` does.

    No explicit host header: botocore then signs the URL's host with its port, which is the Host header
    a client sends to ``127.0.0.1:<port>``.
    """
    params = {SESSION_HEADER: SESSION_ID} if query is None else query
    path = f"/runtimes/{quote(runtime_arn, safe='')}/ws"
    request = AWSRequest(method="GET", url=f"https://{host}{path}?{urlencode(params)}")
    SigV4QueryAuth(Credentials(ACCESS_KEY, secret), service, region, expires=expires).add_auth(request)
    return str(request.url).replace("https://", "wss://", 1)


def with_params(url: str, changes: dict[str, str | None]) -> str:
    """``url`` with query parameters replaced (None removes one), encoded as SigV4 encodes them."""
    parts = urlsplit(url)
    query = dict(item.split("=", 1) for item in parts.query.split("&"))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = quote(value, safe="-_.~")
    return urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())))


def with_path_arn(url: str, runtime_arn: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/runtimes/{quote(runtime_arn, safe='')}/ws"))


# --- connecting --------------------------------------------------------------------------------------


def connect_as_signed(url: str, standin: AgentCoreStandIn, **kwargs: Any) -> Any:
    """Open the WebSocket at the host the URL names, over a TCP connection to the stand-in.

    The scheme becomes ws:// (the stand-in has no TLS; the scheme is not signed); the request line and
    the Host header are exactly what the URL's host would receive.
    """
    sock = socket.create_connection(("127.0.0.1", standin.port))
    return connect(url.replace("wss://", "ws://", 1), sock=sock, open_timeout=5, **kwargs)


def refusal(url: str, standin: AgentCoreStandIn) -> tuple[int, str, dict[str, Any]]:
    async def attempt() -> tuple[int, str, dict[str, Any]]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect_as_signed(url, standin):
                pass
        response = refused.value.response
        return response.status_code, response.headers.get("x-amzn-ErrorType", ""), json.loads(response.body or b"{}")

    return asyncio.run(attempt())


def echo_through(url: str, standin: AgentCoreStandIn) -> tuple[str, bytes]:
    async def talk() -> tuple[str, bytes]:
        async with connect_as_signed(url, standin) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01binary")
            data = await ws.recv()
            return str(text), bytes(data)

    return asyncio.run(talk())


def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- the WebSocket -------------------------------------------------------------------------------------


def test_a_presigned_url_from_the_sdk_is_relayed_to_the_agent(
    standin: AgentCoreStandIn, agent: tuple[FakeAgent, str], sdk: Any
) -> None:
    app = agent[0]
    url = sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID, expires=60)
    assert urlsplit(url).hostname == PUBLIC_HOST  # the SDK cannot be pointed elsewhere
    before = len(app.ws_sessions)

    async def talk() -> tuple[list[Any], int | None]:
        async with connect_as_signed(url, standin, subprotocols=["pipecat"]) as ws:
            assert ws.subprotocol == "pipecat"  # negotiated with the agent, end to end
            await ws.send("hello")
            await ws.send(b"\x00\xffbinary")
            received = [await ws.recv(), await ws.recv()]
            await ws.close(4002, "client says bye")
            return received, ws.close_code

    received, code = asyncio.run(talk())
    assert received == ["hello", b"\x00\xffbinary"]  # a text frame stays text, a binary one binary
    assert code == 4002
    assert app.ws_sessions[before:] == [SESSION_ID]  # the session id arrived as the header
    wait_for(lambda: app.ws_close_codes[-1:] == [4002])  # the client's close code reached the agent
    assert standin.accepted()[-1].session_id == SESSION_ID


def test_the_agent_closing_closes_the_client_with_its_code(standin: AgentCoreStandIn, sdk: Any) -> None:
    url = sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID)

    async def talk() -> tuple[int | None, str | None]:
        async with connect_as_signed(url, standin) as ws:
            await ws.send("close:4001")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return ws.close_code, ws.close_reason

    assert asyncio.run(talk()) == (4001, "agent says bye")


def test_a_url_signed_for_the_local_host_is_accepted(standin: AgentCoreStandIn) -> None:
    url = presign(standin.host, query={"qualifier": "DEFAULT", SESSION_HEADER: SESSION_ID})
    assert echo_through(url, standin) == ("hello", b"\x00\x01binary")
    assert standin.accepted()[-1].qualifier == "DEFAULT"

    async def direct() -> str:  # no DNS trick: a plain connect to the URL, as a browser would make it
        async with connect(url.replace("wss://", "ws://", 1), open_timeout=5) as ws:
            await ws.send("plain")
            return str(await ws.recv())

    assert asyncio.run(direct()) == "plain"


def test_an_upgrade_signed_with_sigv4_headers_is_accepted(standin: AgentCoreStandIn, sdk: Any) -> None:
    url, headers = sdk.generate_ws_connection(RUNTIME_ARN, session_id=SESSION_ID)
    # The WebSocket client writes the Host and handshake headers itself; the SDK lists them for raw clients.
    signing = {k: v for k, v in headers.items() if k.lower().startswith(("authorization", "x-amz"))}
    assert set(signing) == {"Authorization", "X-Amz-Date", SESSION_HEADER}

    async def talk() -> str:
        async with connect_as_signed(url, standin, additional_headers=signing) as ws:
            await ws.send("signed headers")
            return str(await ws.recv())

    assert asyncio.run(talk()) == "signed headers"


def test_the_presign_limit_is_the_sdks() -> None:
    assert MAX_PRESIGNED_EXPIRES_SECONDS == MAX_PRESIGNED_URL_TIMEOUT


# Each case makes a URL from (the SDK client, the stand-in) and names the answer AWS would give.
REFUSALS: dict[str, tuple[Callable[[Any, AgentCoreStandIn], str], int, str]] = {
    "unsigned": (
        lambda sdk, s: f"ws://{s.host}/runtimes/{quote(RUNTIME_ARN, safe='')}/ws?{SESSION_HEADER}={SESSION_ID}",
        403,
        "MissingAuthenticationTokenException",
    ),
    "changed session id": (
        lambda sdk, s: with_params(
            sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID),
            {SESSION_HEADER: "x" * 40},
        ),
        403,
        "InvalidSignatureException",
    ),
    "changed signature": (
        lambda sdk, s: with_params(
            sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID), {"X-Amz-Signature": "0" * 64}
        ),
        403,
        "InvalidSignatureException",
    ),
    "changed path ARN": (
        lambda sdk, s: with_path_arn(sdk.generate_presigned_url(OTHER_ARN, session_id=SESSION_ID), RUNTIME_ARN),
        403,
        "InvalidSignatureException",
    ),
    "added parameter": (
        lambda sdk, s: with_params(
            sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID), {"qualifier": "DEFAULT"}
        ),
        403,
        "InvalidSignatureException",
    ),
    "signature removed": (
        lambda sdk, s: with_params(
            sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID), {"X-Amz-Signature": None}
        ),
        403,
        "IncompleteSignatureException",
    ),
    "expires over 300 s": (lambda sdk, s: presign(s.host, expires=301), 403, "InvalidSignatureException"),
    "wrong secret key": (
        lambda sdk, s: sdk_client(secret="not-the-secret").generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID),
        403,
        "InvalidSignatureException",
    ),
    "unknown access key": (
        lambda sdk, s: sdk_client(access_key="AKIDSOMEONEELSE00000").generate_presigned_url(
            RUNTIME_ARN, session_id=SESSION_ID
        ),
        403,
        "UnrecognizedClientException",
    ),
    "signed for another region": (lambda sdk, s: presign(s.host, region="us-west-2"), 403, "InvalidSignatureException"),
    "signed for another service": (lambda sdk, s: presign(s.host, service="bedrock"), 403, "InvalidSignatureException"),
    "signed for another host": (
        # The SDK's URL (signed for the public host) presented at 127.0.0.1:<port>.
        lambda sdk, s: sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID).replace(PUBLIC_HOST, s.host),
        403,
        "InvalidSignatureException",
    ),
    "another runtime ARN": (
        lambda sdk, s: sdk.generate_presigned_url(OTHER_ARN, session_id=SESSION_ID),
        404,
        "ResourceNotFoundException",
    ),
    "unknown qualifier": (
        lambda sdk, s: sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID, endpoint_name="canary"),
        404,
        "ResourceNotFoundException",
    ),
    "session id too short": (
        lambda sdk, s: sdk.generate_presigned_url(RUNTIME_ARN, session_id="s" * 32),
        400,
        "ValidationException",
    ),
    "session id too long": (
        lambda sdk, s: sdk.generate_presigned_url(RUNTIME_ARN, session_id="s" * 257),
        400,
        "ValidationException",
    ),
    "session id missing": (lambda sdk, s: presign(s.host, query={}), 400, "ValidationException"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_upgrade_is_refused_before_the_agent_sees_it(
    case: str, standin: AgentCoreStandIn, agent: tuple[FakeAgent, str], sdk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make_url, status, code = REFUSALS[case]
    url = make_url(sdk, standin)
    sessions_before = len(agent[0].ws_sessions)
    with caplog.at_level(logging.INFO):
        answer = refusal(url, standin)
    assert answer[:2] == (status, code), answer
    assert isinstance(answer[2]["message"], str) and answer[2]["message"]
    assert len(agent[0].ws_sessions) == sessions_before  # the agent never heard of it
    refusals = [r.getMessage() for r in caplog.records if r.name.startswith("local.agentcore")]
    assert any(code in message for message in refusals), refusals
    signature = dict(item.split("=", 1) for item in urlsplit(url).query.split("&")).get("X-Amz-Signature")
    for record in caplog.records:  # the reason is logged; the signature and the query are not (uvicorn's lines too)
        message = record.getMessage()
        assert signature is None or signature not in message
        assert "X-Amz-Credential=" not in message and "X-Amz-Signature=" not in message


def test_an_expired_url_is_refused(standin: AgentCoreStandIn, sdk: Any) -> None:
    url = sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID, expires=1)
    time.sleep(2.1)  # X-Amz-Date has whole seconds: after 2.1 s the 1 s window is over whatever the rounding
    status, code, body = refusal(url, standin)
    assert (status, code) == (403, "InvalidSignatureException")
    assert "expired" in body["message"]


def test_a_url_signed_in_the_future_is_refused(agent: tuple[FakeAgent, str], sdk: Any) -> None:
    config = AgentCoreConfig(
        runtime_arn=RUNTIME_ARN, agent_url=agent[1], access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    with AgentCoreStandIn(config, clock=lambda: time.time() - 600) as behind:  # the client's clock is 10 min ahead
        status, code, body = refusal(sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID), behind)
    assert (status, code) == (403, "InvalidSignatureException")
    assert "not yet current" in body["message"]


def test_the_agent_being_down_is_a_424(agent: tuple[FakeAgent, str], sdk: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as idle:  # a port where no agent answers
        port = idle.getsockname()[1]
    config = AgentCoreConfig(
        runtime_arn=RUNTIME_ARN,
        agent_url=f"http://127.0.0.1:{port}",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    with AgentCoreStandIn(config) as orphan:
        status, code, _ = refusal(sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID), orphan)
    assert (status, code) == (424, "RuntimeClientError")


# --- InvokeAgentRuntime ----------------------------------------------------------------------------------


def boto_client(standin: AgentCoreStandIn, *, secret: str = SECRET_KEY) -> Any:
    return boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret, region_name=REGION).client(
        "bedrock-agentcore", endpoint_url=standin.url, config=Config(retries={"mode": "standard"})
    )


def test_invoke_agent_runtime_streams_events_as_the_agent_writes_them(
    standin: AgentCoreStandIn, agent: tuple[FakeAgent, str]
) -> None:
    app = agent[0]
    app.release_last_event.clear()
    app.last_event_sent.clear()
    answer = boto_client(standin).invoke_agent_runtime(
        agentRuntimeArn=RUNTIME_ARN,
        runtimeSessionId=SESSION_ID,
        payload=json.dumps({"type": "offer", "data": {}}).encode(),
        contentType="application/json",
        accept="text/event-stream",
    )
    assert answer["contentType"].startswith("text/event-stream")
    assert answer["runtimeSessionId"] == SESSION_ID
    # read(n) returns once n bytes are in (iter_lines would wait for 1,024 bytes or the end of the stream).
    assert answer["response"].read(len(FIRST_EVENT)) == FIRST_EVENT
    assert not app.last_event_sent.is_set()  # the first event came through while the agent was still writing
    app.release_last_event.set()
    rest = [json.loads(line.removeprefix(b"data: ")) for line in answer["response"].iter_lines() if line]
    assert rest == [{"type": "second"}, {"type": "last", "released": True}]
    assert app.invocations[-1] == (SESSION_ID, b'{"type": "offer", "data": {}}')
    assert standin.accepted()[-1].operation == "InvokeAgentRuntime"


def test_the_brokers_invoker_works_against_it(standin: AgentCoreStandIn, agent: tuple[FakeAgent, str]) -> None:
    agent[0].release_last_event.set()
    invoker = AgentCoreInvoker(RUNTIME_ARN, client=boto_client(standin))
    events = list(invoker.invoke(SESSION_ID, {"type": "offer", "data": {}}, timeout=10))
    assert [event["type"] for event in events] == ["first", "second", "last"]


def test_a_wrong_secret_gets_a_403_client_error(standin: AgentCoreStandIn) -> None:
    with pytest.raises(ClientError) as refused:
        boto_client(standin, secret="not-the-secret").invoke_agent_runtime(
            agentRuntimeArn=RUNTIME_ARN, runtimeSessionId=SESSION_ID, payload=b"{}"
        )
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert "signature" in error["Error"]["Message"]


def test_another_runtime_is_not_found(standin: AgentCoreStandIn) -> None:
    client = boto_client(standin)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as refused:
        client.invoke_agent_runtime(agentRuntimeArn=OTHER_ARN, runtimeSessionId=SESSION_ID, payload=b"{}")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_an_agent_failure_is_a_runtime_client_error(standin: AgentCoreStandIn) -> None:
    client = boto_client(standin)
    with pytest.raises(client.exceptions.RuntimeClientError) as failed:
        client.invoke_agent_runtime(agentRuntimeArn=RUNTIME_ARN, runtimeSessionId=SESSION_ID, payload=b'{"fail": 1}')
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


def test_a_stale_header_signature_is_refused(agent: tuple[FakeAgent, str]) -> None:
    config = AgentCoreConfig(
        runtime_arn=RUNTIME_ARN, agent_url=agent[1], access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    with AgentCoreStandIn(config, clock=lambda: time.time() + 600) as ahead, pytest.raises(ClientError) as refused:
        boto_client(ahead).invoke_agent_runtime(agentRuntimeArn=RUNTIME_ARN, runtimeSessionId=SESSION_ID, payload=b"{}")
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "expired" in refused.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"runtime_arn": "arn:aws:lambda:us-east-1:123456789012:function:x"}, "runtime_arn"),
        ({"agent_url": "http://example.com:8080"}, "agent_url"),
        ({"host": "192.0.2.1"}, "host"),
        ({"qualifiers": ("no spaces",)}, "qualifier"),
    ],
)
def test_a_bad_setting_is_named(settings: dict[str, Any], named: str) -> None:
    values: dict[str, Any] = {"runtime_arn": RUNTIME_ARN, "agent_url": "http://127.0.0.1:8080", **settings}
    with pytest.raises(ConfigError, match=named):
        AgentCoreConfig(**values)


def test_another_path_is_an_unknown_operation(standin: AgentCoreStandIn) -> None:
    request = urllib.request.Request(f"{standin.url}/runtimes/{quote(RUNTIME_ARN, safe='')}/other", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 404
    assert refused.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"

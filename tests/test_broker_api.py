"""The broker API over HTTP (local adapter), with real boto3 against the KVS emulator and the real agent."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import botocore.session
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from broker.api.agents import HttpAgentInvoker
from broker.api.config import build_service
from broker.api.errors import BadGatewayError, BadRequestError, RetryLaterError
from broker.api.models import MAX_CANDIDATES, OfferRequest, StartRequest
from broker.api.service import ApiSettings, BrokerService, Transport
from broker.api.sessions import SessionIssuer, SessionNotFoundError
from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import ConfigurationError
from broker.telemetry import MetricName
from local import OFFLINE_AWS_ENV
from local.agentcore import AgentCoreConfig, AgentCoreStandIn
from local.broker_api import LocalAuth, LocalBrokerApi, mint_token
from local.kvs_emulator import EmulatorConfig, KvsEmulator
from tests.api_support import RUNTIME_ARN, Reply, agent_process, call, free_tcp_port
from tests.conftest import DUMMY_AWS_ENV
from tests.emulator_stats import operation_total

SECRET = "local-jwt-secret-for-tests-0123456789"
SESSION_KEY = "session-signing-key-for-tests-0123456789"
ALICE = mint_token(SECRET, "alice")
BOB = mint_token(SECRET, "bob")


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    with pytest.MonkeyPatch.context() as patch, KvsEmulator(EmulatorConfig(port=0)) as kvs:
        for name, value in DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", kvs.url)
        arns = kvs.create_channels(3)
        with agent_process() as agent_url:
            yield {
                **DUMMY_AWS_ENV,
                "AWS_ENDPOINT_URL_KINESIS_VIDEO": kvs.url,
                "TURN_CHANNEL_ARNS": ",".join(arns),
                "AGENT_INVOKER": "local",
                "LOCAL_AGENT_URL": agent_url,
                "SESSION_SIGNING_KEY": SESSION_KEY,
            }


@pytest.fixture(scope="module")
def api(env: dict[str, str]) -> Iterator[LocalBrokerApi]:
    with LocalBrokerApi(build_service(env), auth=LocalAuth("hs256", SECRET)) as server:
        yield server


def start(api: LocalBrokerApi, token: str = ALICE) -> str:
    reply = call(api.url, "POST", "/start", {"transport": "webrtc", "enableDefaultIceServers": False}, token=token)
    assert reply.status == 200, reply.body
    return str(reply.body["sessionId"])


async def make_offer() -> tuple[RTCPeerConnection, str]:
    peer = RTCPeerConnection()
    peer.addTransceiver("audio", direction="sendrecv")
    await peer.setLocalDescription(await peer.createOffer())
    return peer, peer.localDescription.sdp


def offer_body(sdp: str) -> dict[str, Any]:
    return {"sdp": sdp, "type": "offer", "pc_id": None, "restart_pc": False, "requestData": {"k": "v"}}


def test_start_returns_a_bound_session_and_turn_servers(api: LocalBrokerApi) -> None:
    reply = call(api.url, "POST", "/start", {"transport": "webrtc"}, token=ALICE)
    assert reply.status == 200
    session_id = reply.body["sessionId"]
    assert 33 <= len(session_id) <= 256 and re.fullmatch(r"[0-9a-f-]+", session_id)
    servers = reply.body["iceConfig"]["iceServers"]
    assert len(servers) == 2
    assert all(s["urls"][0].startswith("turn:127.0.0.1:") and s["username"] and s["credential"] for s in servers)
    assert call(api.url, "POST", "/start", None, token=ALICE).status == 200  # an empty body is a fresh start
    assert start(api) != start(api)  # unguessable: never the same twice
    metrics = api.service.metrics
    assert metrics.totals[MetricName.KVS_CALLS] >= 1  # type: ignore[attr-defined]
    assert MetricName.CREDENTIAL_LATENCY in metrics.totals  # type: ignore[attr-defined]


def test_a_real_offer_is_answered_and_connects(api: LocalBrokerApi) -> None:
    session_id = start(api)

    async def scenario() -> None:
        peer, sdp = await make_offer()
        try:
            reply = await asyncio.to_thread(
                call, api.url, "POST", f"/sessions/{session_id}/api/offer", offer_body(sdp), token=ALICE
            )
            assert reply.status == 200, reply.body
            assert reply.body["type"] == "answer" and reply.body["pc_id"]
            assert reply.body["sdp"].startswith("v=0")
            await peer.setRemoteDescription(RTCSessionDescription(reply.body["sdp"], "answer"))
            for _ in range(100):
                if peer.connectionState == "connected":
                    break
                await asyncio.sleep(0.1)
            assert peer.connectionState == "connected"
            pc_id = reply.body["pc_id"]
            candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdp_mid": "0"}
            patch = await asyncio.to_thread(
                call,
                api.url,
                "PATCH",
                f"/sessions/{session_id}/api/offer",
                {"pc_id": pc_id, "candidates": [{**candidate, "sdp_mline_index": 0}]},
                token=ALICE,
            )
            assert (patch.status, patch.body) == (200, {"status": "success"})
            unknown = await asyncio.to_thread(
                call,
                api.url,
                "PATCH",
                f"/sessions/{session_id}/api/offer",
                {"pc_id": "no-such-pc", "candidates": []},
                token=ALICE,
            )
            assert (unknown.status, unknown.error_code) == (404, "unknown_pc_id")
        finally:
            await peer.close()

    asyncio.run(scenario())


def test_sessions_are_bound_to_their_caller(api: LocalBrokerApi) -> None:
    session_id = start(api, ALICE)
    candidates = {"pc_id": "x", "candidates": []}
    foreign = call(api.url, "PATCH", f"/sessions/{session_id}/api/offer", candidates, token=BOB)
    assert (foreign.status, foreign.error_code) == (404, "session_not_found")
    forged = session_id[:-1] + ("0" if session_id[-1] != "0" else "1")
    assert call(api.url, "PATCH", f"/sessions/{forged}/api/offer", candidates, token=ALICE).status == 404
    assert call(api.url, "PATCH", "/sessions/not-a-session/api/offer", candidates, token=ALICE).status == 404


def test_concurrent_requests_never_see_each_others_body_or_caller(api: LocalBrokerApi) -> None:
    # Powertools keeps the current event on a class: without the adapter's lock, a PATCH could be
    # validated against a concurrent /start's empty body (422) or another caller's subject (404).
    sessions = {ALICE: start(api, ALICE), BOB: start(api, BOB)}

    def request(index: int) -> tuple[str, int, str]:
        if index % 10 == 0:  # 15 starts: well within the 3-channel pool's 15 calls/s and 2 s wait
            reply = call(api.url, "POST", "/start", None, token=ALICE if index % 20 else BOB)
            return "start", reply.status, ""
        caller = ALICE if index % 2 else BOB
        body = {"pc_id": f"pc-{index}", "candidates": []}
        reply = call(api.url, "PATCH", f"/sessions/{sessions[caller]}/api/offer", body, token=caller)
        return "patch", reply.status, reply.error_code

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up every run
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(request, range(150)))
    finally:
        sys.setswitchinterval(interval)
    assert {result for result in results if result[0] == "start"} == {("start", 200, "")}
    # Each caller's own session, a pc_id the agent does not know: always the agent's 404, nothing else.
    assert {result for result in results if result[0] == "patch"} == {("patch", 404, "unknown_pc_id")}


@pytest.mark.parametrize(
    "token",
    [None, "not-a-jwt", mint_token("another-secret-entirely-0123456789", "alice"), mint_token(SECRET, "a", now=0)],
)
def test_callers_without_a_valid_token_are_refused(api: LocalBrokerApi, token: str | None) -> None:
    reply = call(api.url, "POST", "/start", {}, token=token)
    assert (reply.status, reply.error_code) == (401, "unauthorized")
    assert reply.headers.get("WWW-Authenticate") == "Bearer"


def expect_error(reply: Reply, status: int, code: str | None = None) -> None:
    assert reply.status == status, reply.body
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]
    if code:
        assert reply.error_code == code


def test_bad_input_gets_a_json_4xx_saying_what_is_wrong(api: LocalBrokerApi) -> None:
    session = start(api)
    path = f"/sessions/{session}/api/offer"
    expect_error(call(api.url, "POST", "/start", raw=b"{not json", token=ALICE), 400, "malformed_json")
    expect_error(call(api.url, "POST", "/start", {"transport": 7}, token=ALICE), 422, "invalid_request")
    expect_error(call(api.url, "POST", "/start", {"enableDefaultIceServers": "yes"}, token=ALICE), 422)
    expect_error(call(api.url, "POST", "/start", raw=b"x" * 200_000, token=ALICE), 413, "payload_too_large")
    expect_error(call(api.url, "POST", path, {"sdp": "hello", "type": "offer"}, token=ALICE), 422)
    expect_error(
        call(api.url, "POST", path, {"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "type": "offer"}, token=ALICE), 422
    )
    expect_error(call(api.url, "POST", path, {"sdp": 42, "type": "offer"}, token=ALICE), 422)
    expect_error(call(api.url, "POST", path, {"type": "offer"}, token=ALICE), 422)
    reply = call(api.url, "POST", path, {"sdp": "v=0\r\ns=-\r\n", "type": "answer"}, token=ALICE)
    expect_error(reply, 422, "invalid_request")
    assert "type" in reply.body["error"]["message"]
    many = [{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}] * (MAX_CANDIDATES + 1)
    expect_error(call(api.url, "PATCH", path, {"pc_id": "p", "candidates": many}, token=ALICE), 422)
    expect_error(call(api.url, "PATCH", path, {"pc_id": "p", "candidates": "all"}, token=ALICE), 422)
    expect_error(call(api.url, "POST", "/nowhere", {}, token=ALICE), 404, "not_found")
    expect_error(call(api.url, "GET", "/start", token=ALICE), 404)
    expect_error(call(api.url, "POST", "/start", raw=b"[1, 2]", token=ALICE), 422)


def test_an_sdp_the_agent_cannot_use_is_a_400(api: LocalBrokerApi) -> None:
    session = start(api)
    # Well-formed enough for the API, but no ICE credentials or fingerprint: the agent refuses it.
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    reply = call(api.url, "POST", f"/sessions/{session}/api/offer", offer_body(sdp), token=ALICE)
    assert reply.status == 400, reply.body
    assert reply.error_code in ("invalid_sdp", "invalid_payload")


def test_pool_exhausted_is_a_503_with_retry_after(env: dict[str, str]) -> None:
    arns = tuple(env["TURN_CHANNEL_ARNS"].split(","))
    ice = IceBroker(
        BrokerConfig(channel_arns=arns, region="us-east-1", max_wait_seconds=0.05, throttle_cooldown_seconds=3)
    )
    service = build_service(env, ice=ice)
    with LocalBrokerApi(service, auth=LocalAuth("hs256", SECRET)) as server:
        emulator_url = env["AWS_ENDPOINT_URL_KINESIS_VIDEO"]
        for _ in arns:  # every channel throttles once
            call(emulator_url, "POST", "/_emulator/faults", {"operation": "GetIceServerConfig", "kind": "throttle"})
        reply = call(server.url, "POST", "/start", {}, token=ALICE)
    expect_error(reply, 503, "pool_exhausted")
    assert 1 <= int(reply.headers["Retry-After"]) <= 3
    assert service.metrics.totals[MetricName.POOL_EXHAUSTED] == 1  # type: ignore[attr-defined]


def offer_through(service: BrokerService) -> Reply:
    """Start a session on a server for ``service`` and send it a real offer."""
    with LocalBrokerApi(service, auth=LocalAuth("hs256", SECRET)) as server:
        session = start(server)

        async def offer() -> Reply:
            peer, sdp = await make_offer()
            await peer.close()
            return call(server.url, "POST", f"/sessions/{session}/api/offer", offer_body(sdp), token=ALICE)

        return asyncio.run(offer())


def test_an_unreachable_agent_is_a_502(env: dict[str, str]) -> None:
    service = build_service(env, agent=HttpAgentInvoker(f"http://127.0.0.1:{free_tcp_port()}"))
    expect_error(offer_through(service), 502, "agent_failed")


def test_a_slow_agent_is_a_504(env: dict[str, str]) -> None:
    expect_error(offer_through(build_service({**env, "AGENT_ANSWER_TIMEOUT_SECONDS": "0.002"})), 504, "agent_timeout")


def test_no_credential_sdp_or_token_is_logged(api: LocalBrokerApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = call(api.url, "POST", "/start", {}, token=ALICE)
    session = reply.body["sessionId"]
    secrets = [s[key] for s in reply.body["iceConfig"]["iceServers"] for key in ("username", "credential")]

    async def offer() -> tuple[str, Reply]:
        peer, sdp = await make_offer()
        try:
            answer = await asyncio.to_thread(
                call, api.url, "POST", f"/sessions/{session}/api/offer", offer_body(sdp), token=ALICE
            )
        finally:
            await peer.close()
        return sdp, answer

    sdp, answer = asyncio.run(offer())
    assert answer.status == 200
    sdp_secrets = [
        line.split(":", 1)[1] for line in sdp.splitlines() if line.startswith(("a=ice-pwd", "a=fingerprint"))
    ]
    # Everything the server side logged (the test's own aiortc peer is the browser, not the broker).
    server_side = ("broker", "local", "aws_lambda_powertools", "botocore", "urllib3")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in server_side)
    assert "session started" in logged  # the run was logged...
    for secret in [*secrets, *sdp_secrets, ALICE, ALICE.split(".")[2]]:
        assert secret not in logged  # ...without a credential, SDP or token


# --- Both peers' credentials come from the broker ----------------------------------------------


class RecordingAgent:
    """An agent that answers every offer and remembers what it was sent (the payload is under test)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def invoke(self, session_id: str, payload: Any, *, timeout: float) -> Iterator[dict[str, Any]]:
        self.payloads.append(dict(payload))
        yield {"type": "answer", "data": {"sdp": "v=0\r\n", "type": "answer", "pc_id": "pc-1"}}


def peer_service(emulator: KvsEmulator, **settings: Any) -> tuple[BrokerService, RecordingAgent]:
    arns = tuple(emulator.create_channels(2))
    agent = RecordingAgent()
    ice = IceBroker(BrokerConfig(channel_arns=arns, region="us-east-1", **settings))
    env = {**DUMMY_AWS_ENV, "AGENT_INVOKER": "local", "SESSION_SIGNING_KEY": SESSION_KEY}
    return build_service(env, ice=ice, agent=agent), agent


def test_the_agent_gets_fresh_turn_credentials_with_each_new_peer_connection(emulator: KvsEmulator) -> None:
    service, agent = peer_service(emulator)
    session = service.start("alice", StartRequest()).sessionId
    browser_ice = service.metrics.by_peer["browser"]  # type: ignore[attr-defined]
    assert browser_ice[MetricName.KVS_CALLS] == 1
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

    service.offer("alice", session, OfferRequest(sdp=sdp, type="offer"))
    service.offer("alice", session, OfferRequest(sdp=sdp, type="offer", pc_id="pc-1"))  # renegotiation
    service.offer("alice", session, OfferRequest(sdp=sdp, type="offer", pc_id="pc-1", restart_pc=True))

    first, renegotiated, restarted = agent.payloads
    assert "iceServers" not in renegotiated  # same peer connection, same relays: nothing to fetch
    for payload in (first, restarted):
        servers = payload["iceServers"]
        assert len(servers) == 2
        assert all(s["urls"] and s["username"] and s["credential"] for s in servers)
    assert first["iceServers"] != restarted["iceServers"]  # minted anew, not replayed
    assert operation_total(emulator, "GetIceServerConfig", "served") == 3  # browser + two agent sets
    agent_ice = service.metrics.by_peer["agent"]  # type: ignore[attr-defined]
    assert (agent_ice[MetricName.KVS_CALLS], agent_ice[MetricName.KVS_THROTTLES]) == (2, 0)
    assert MetricName.CREDENTIAL_LATENCY in agent_ice
    assert service.metrics.totals[MetricName.KVS_CALLS] == 3  # type: ignore[attr-defined]


def test_no_agent_credentials_means_503_and_the_agent_is_not_invoked(emulator: KvsEmulator) -> None:
    service, agent = peer_service(emulator, max_wait_seconds=0.05, throttle_cooldown_seconds=3)
    session = service.start("alice", StartRequest()).sessionId
    for _ in range(2):  # both channels throttle the next call
        emulator.inject_fault("GetIceServerConfig", "throttle")
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    with pytest.raises(RetryLaterError) as raised:
        service.offer("alice", session, OfferRequest(sdp=sdp, type="offer"))
    assert raised.value.code == "pool_exhausted"
    assert agent.payloads == []
    agent_ice = service.metrics.by_peer["agent"]  # type: ignore[attr-defined]
    assert agent_ice[MetricName.POOL_EXHAUSTED] == 1
    # The calls the refused request made still count: every KVS call and throttle is in the metrics.
    assert (agent_ice[MetricName.KVS_CALLS], agent_ice[MetricName.KVS_THROTTLES]) == (2, 2)


class RefusingAgent:
    """An agent that refuses the ICE servers it was sent, as the real one does with a bad field."""

    def __init__(self, code: str) -> None:
        self.code = code

    def invoke(self, session_id: str, payload: Any, *, timeout: float) -> Iterator[dict[str, Any]]:
        yield {"type": "error", "data": {"code": self.code, "message": "iceServers[0].urls[0] is not a URI"}}


@pytest.mark.parametrize("code", ["invalid_ice_servers", "ice_servers_missing"])
def test_an_agent_refusing_the_brokers_ice_servers_is_a_logged_502(
    emulator: KvsEmulator, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = peer_service(emulator)
    service.agent = RefusingAgent(code)
    session = service.start("alice", StartRequest()).sessionId
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    with pytest.raises(BadGatewayError):  # the broker's fault, not the browser's: never a 4xx
        service.offer("alice", session, OfferRequest(sdp=sdp, type="offer"))
    assert f"the agent refused the ICE servers the broker sent ({code})" in caplog.text


# --- Transports: webrtc (TURN credentials) and websocket (a presigned URL) ----------------------

WEBSOCKET_OFFERED = {"BROKER_TRANSPORTS": "webrtc,websocket", "AGENT_RUNTIME_ARN": RUNTIME_ARN}


@pytest.fixture(scope="module")
def both_api(env: dict[str, str]) -> Iterator[LocalBrokerApi]:
    with LocalBrokerApi(build_service({**env, **WEBSOCKET_OFFERED}), auth=LocalAuth("hs256", SECRET)) as server:
        yield server


def test_a_websocket_start_returns_a_presigned_url_bound_to_the_callers_session(both_api: LocalBrokerApi) -> None:
    reply = call(both_api.url, "POST", "/start", {"transport": "websocket"}, token=ALICE)
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"sessionId", "ws_url"}  # no iceConfig key, not even a null one
    session_id, url = reply.body["sessionId"], urlsplit(reply.body["ws_url"])
    assert (url.scheme, url.netloc) == ("wss", "bedrock-agentcore.us-east-1.amazonaws.com")
    assert url.path == f"/runtimes/{quote(RUNTIME_ARN, safe='')}/ws"
    query = parse_qs(url.query)
    assert query["X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"] == [session_id]
    assert query["X-Amz-Expires"] == ["60"] and query["X-Amz-Signature"]
    both_api.service.sessions.verify("alice", session_id)  # the broker's own id, bound to its caller
    with pytest.raises(SessionNotFoundError):
        both_api.service.sessions.verify("bob", session_id)
    webrtc = call(both_api.url, "POST", "/start", {"transport": "webrtc"}, token=ALICE)
    assert (webrtc.status, set(webrtc.body)) == (200, {"sessionId", "iceConfig"})  # unchanged, no ws_url key


def test_a_websocket_start_mints_no_turn_credentials(emulator: KvsEmulator) -> None:
    ice = IceBroker(BrokerConfig(channel_arns=tuple(emulator.create_channels(2)), region="us-east-1"))
    env = {**DUMMY_AWS_ENV, **WEBSOCKET_OFFERED, "AGENT_INVOKER": "local", "SESSION_SIGNING_KEY": SESSION_KEY}
    service = build_service(env, ice=ice)
    answer = service.start("alice", StartRequest(transport="websocket"))
    assert answer.ws_url and answer.iceConfig is None
    for operation in ("GetIceServerConfig", "GetSignalingChannelEndpoint"):
        assert operation_total(emulator, operation, "calls") == 0
    assert MetricName.KVS_CALLS not in service.metrics.totals  # type: ignore[attr-defined]


def test_an_unknown_or_unoffered_transport_is_a_400_naming_the_offered_ones(
    api: LocalBrokerApi, both_api: LocalBrokerApi
) -> None:
    reply = call(api.url, "POST", "/start", {"transport": "websocket"}, token=ALICE)
    expect_error(reply, 400, "unsupported_transport")
    assert reply.body["error"]["message"] == "transport 'websocket' is not offered; this API offers: webrtc"
    reply = call(both_api.url, "POST", "/start", {"transport": "daily"}, token=ALICE)
    expect_error(reply, 400, "unsupported_transport")
    assert reply.body["error"]["message"] == "unknown transport 'daily'; this API offers: webrtc, websocket"
    expect_error(call(both_api.url, "POST", "/start", {"transport": "WebSocket"}, token=ALICE), 400)
    expect_error(call(both_api.url, "POST", "/start", {"transport": "w" * 33}, token=ALICE), 422, "invalid_request")
    smallwebrtc = call(both_api.url, "POST", "/start", {"transport": "smallwebrtc"}, token=ALICE)
    assert smallwebrtc.status == 200 and smallwebrtc.body["iceConfig"]["iceServers"]
    assert call(both_api.url, "POST", "/start", {"transport": None}, token=ALICE).body["iceConfig"]


def test_with_webrtc_unoffered_a_start_that_names_no_transport_is_a_400(env: dict[str, str]) -> None:
    service = build_service({**env, **WEBSOCKET_OFFERED, "BROKER_TRANSPORTS": "websocket"})
    with pytest.raises(BadRequestError, match=r"default, webrtc, is not offered; this API offers: websocket$"):
        service.start("alice", StartRequest())
    assert service.start("alice", StartRequest(transport="websocket")).ws_url


def test_the_websocket_url_is_never_logged(both_api: LocalBrokerApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = call(both_api.url, "POST", "/start", {"transport": "websocket"}, token=ALICE)
    url = reply.body["ws_url"]
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    server_side = ("broker", "local", "aws_lambda_powertools", "botocore", "urllib3")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in server_side)
    assert "session started (websocket, URL valid 60 s)" in logged
    assert "redacted by the TURN broker: a canonical request or signature" in logged  # botocore's DEBUG lines
    for secret in (url, signature, url.split("?", 1)[1]):
        assert secret not in logged


def test_offering_websocket_needs_a_runtime_and_known_names(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="AGENT_RUNTIME_ARN"):
        build_service({**env, "BROKER_TRANSPORTS": "webrtc,websocket"})
    with pytest.raises(ConfigurationError, match="BROKER_TRANSPORTS"):
        build_service({**env, "BROKER_TRANSPORTS": "webrtc,daily"})
    assert build_service(env).settings.transports == {Transport.WEBRTC}  # unset: today's behaviour
    service = build_service(env)
    with pytest.raises(ConfigurationError, match="nothing signs"):
        BrokerService(
            ice=service.ice,
            sessions=SessionIssuer(SESSION_KEY.encode()),
            agent=service.agent,
            settings=ApiSettings(transports=frozenset({Transport.WEBSOCKET})),
        )


def test_a_service_built_from_a_mapping_signs_and_invokes_where_the_mapping_says(env: dict[str, str]) -> None:
    """Local mode's way: the endpoint and credentials come with the call, not this process's environment."""
    config = AgentCoreConfig(runtime_arn=RUNTIME_ARN, agent_url=env["LOCAL_AGENT_URL"])
    with AgentCoreStandIn(config) as agentcore:
        session = botocore.session.Session()
        session.set_credentials(OFFLINE_AWS_ENV["AWS_ACCESS_KEY_ID"], OFFLINE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        mapping = {
            **env,
            **WEBSOCKET_OFFERED,
            "AGENT_INVOKER": "agentcore",
            "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": agentcore.url,
        }
        service = build_service(mapping, session=session)
        url = urlsplit(str(service.start("alice", StartRequest(transport="websocket")).ws_url))
        assert (url.scheme, url.netloc) == ("ws", agentcore.host)
        session_id = service.start("alice", StartRequest()).sessionId
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        with pytest.raises(BadRequestError):  # the agent refuses this SDP: the offer went through AgentCore
            service.offer("alice", session_id, OfferRequest(sdp=sdp, type="offer"))
        assert [(a.operation, a.session_id) for a in agentcore.accepted()] == [("InvokeAgentRuntime", session_id)]

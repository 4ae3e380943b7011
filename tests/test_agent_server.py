"""The agent's real HTTP server with aiortc peers: offers, trickled candidates, errors, busy state, and
the ICE servers each invocation brings.

Media stays on 127.0.0.1, gathered on loopback for every peer of this process: host candidates, and
relay candidates on a loopback coturn where an invocation brings TURN servers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from agent.calls import CallManager
from agent.config import AgentConfig
from agent.exceptions import IceServersUnavailableError
from agent.ice import BrokerIceServers
from agent.payloads import OfferRequest, parse_request
from tests.agent_support import (
    PEER_RATE,
    AgentServer,
    Peer,
    TurnServer,
    captured_logs,
    espeak_pcm,
    loopback_media,
    rms,
    running_agent,
    turn_server,
)

CONNECT_TIMEOUT = 3.0


@pytest.fixture(autouse=True, scope="module")
def _loopback_media() -> Iterator[None]:
    with loopback_media():
        yield


def run[T](coro: Awaitable[T], timeout: float = 40.0) -> T:
    """Run a coroutine on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    """The local pipeline, greeting on, short connect timeout, small request limit."""
    config = AgentConfig(
        pipeline="local",
        ice_servers="none",
        greeting="Hello from the agent.",
        connect_timeout_seconds=CONNECT_TIMEOUT,
        max_request_bytes=64 * 1024,
    )
    with running_agent(config) as server:
        yield server


@pytest.fixture(scope="module")
def quiet_agent() -> Iterator[AgentServer]:
    """The local pipeline without a greeting: it speaks only when spoken to."""
    with running_agent(AgentConfig(pipeline="local", ice_servers="none", greeting="")) as server:
        yield server


async def connect(agent: AgentServer, peer: Peer) -> dict[str, Any]:
    """Offer, answer, trickle the peer's candidates; return the answer event's data."""
    offer = await peer.offer()
    events = await asyncio.to_thread(agent.invoke, {"type": "offer", "data": offer})
    assert [event["type"] for event in events] == ["status", "answer", "progress"], events
    answer = events[1]["data"]
    await peer.accept(answer)
    trickled = await asyncio.to_thread(
        agent.invoke, {"type": "ice-candidates", "data": {"pc_id": answer["pc_id"], "candidates": peer.candidates}}
    )
    assert trickled == [
        {"type": "status", "data": {"state": "accepted", "request": "ice-candidates"}},
        {
            "type": "ice-candidates",
            "data": {"status": "success", "pc_id": answer["pc_id"], "accepted": len(peer.candidates)},
        },
    ]
    await peer.wait_for(lambda: peer.pc.connectionState == "connected", 10, "the peer to connect")
    return dict(answer)


def test_offer_is_answered_candidates_trickle_and_ping_is_busy_until_the_peer_leaves(agent: AgentServer) -> None:
    assert agent.ping() == "Healthy"

    async def scenario() -> None:
        peer = Peer()
        offer = await peer.offer()
        assert peer.candidates, "the test peer should hold candidates back for trickling"
        events = await asyncio.to_thread(agent.invoke, {"type": "offer", "data": offer})
        assert events[0] == {"type": "status", "data": {"state": "accepted", "request": "offer"}}
        answer = events[1]
        assert answer["type"] == "answer"
        assert answer["data"]["type"] == "answer"
        assert answer["data"]["sdp"].startswith("v=0")
        answer_candidates = [line for line in answer["data"]["sdp"].splitlines() if line.startswith("a=candidate:")]
        assert answer_candidates
        assert all(" 127.0.0.1 " in line for line in answer_candidates), "media stays on loopback"
        pc_id = answer["data"]["pc_id"]
        assert events[2] == {"type": "progress", "data": {"state": "call-started", "pc_id": pc_id, "pipeline": "local"}}
        assert await asyncio.to_thread(agent.ping) == "HealthyBusy"

        await peer.accept(answer["data"])
        trickled = await asyncio.to_thread(
            agent.invoke, {"type": "ice-candidates", "data": {"pc_id": pc_id, "candidates": peer.candidates}}
        )
        assert trickled[-1]["data"] == {"status": "success", "pc_id": pc_id, "accepted": len(peer.candidates)}
        await peer.wait_for(lambda: peer.pc.connectionState == "connected", 10, "the peer to connect")

        # The greeting arrives as real audio.
        await peer.wait_for(lambda: rms(peer.audio_since(0)) > 200, 10, "the greeting's audio")
        # A malformed candidate and an end-of-candidates marker during the call.
        bad = await asyncio.to_thread(
            agent.invoke,
            {"type": "ice-candidates", "data": {"pc_id": pc_id, "candidates": [{"candidate": "x", "sdp_mid": "0"}]}},
        )
        assert bad[-1]["type"] == "error"
        assert bad[-1]["data"]["code"] == "invalid_candidate"
        done = await asyncio.to_thread(
            agent.invoke,
            {"type": "ice-candidates", "data": {"pc_id": pc_id, "candidates": [{"candidate": "", "sdp_mid": "0"}]}},
        )
        assert done[-1]["data"]["accepted"] == 1
        assert peer.pc.connectionState == "connected"
        assert await asyncio.to_thread(agent.ping) == "HealthyBusy"

        await peer.close()
        await asyncio.to_thread(agent.wait_ping, "Healthy", 10)
        gone = await asyncio.to_thread(
            agent.invoke, {"type": "ice-candidates", "data": {"pc_id": pc_id, "candidates": peer.candidates}}
        )
        assert gone[-1]["data"]["code"] == "unknown_pc_id"

    run(scenario())


BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    ("unknown type", {"type": "hangup", "data": {}}, "unknown_type"),
    ("no type", {"data": {}}, "unknown_type"),
    ("not an object", ["offer"], "invalid_payload"),
    ("no data", {"type": "offer"}, "missing_data"),
    ("data not an object", {"type": "offer", "data": "v=0"}, "missing_data"),
    ("no sdp", {"type": "offer", "data": {"type": "offer"}}, "missing_data"),
    ("sdp is not sdp", {"type": "offer", "data": {"sdp": "hello", "type": "offer"}}, "invalid_sdp"),
    ("sdp does not parse", {"type": "offer", "data": {"sdp": "v=0\r\nm=audio x\r\n", "type": "offer"}}, "invalid_sdp"),
    ("answer instead of offer", {"type": "offer", "data": {"sdp": "v=0\r\n", "type": "answer"}}, "invalid_sdp"),
    (
        "renegotiation of an unknown call",
        {"type": "offer", "data": {"sdp": "v=0\r\n", "type": "offer", "pc_id": "nope"}},
        "unknown_pc_id",
    ),
    (
        "candidates for an unknown pc_id",
        {"type": "ice-candidates", "data": {"pc_id": "nope", "candidates": []}},
        "unknown_pc_id",
    ),
    ("candidates without pc_id", {"type": "ice-candidates", "data": {"candidates": []}}, "missing_data"),
    ("candidates not a list", {"type": "ice-candidates", "data": {"pc_id": "p", "candidates": {}}}, "missing_data"),
    (
        "too many candidates",
        {"type": "ice-candidates", "data": {"pc_id": "p", "candidates": [{"candidate": ""}] * 65}},
        "invalid_candidate",
    ),
]


@pytest.mark.parametrize(("payload", "code"), [(p, c) for _, p, c in BAD_PAYLOADS], ids=[n for n, _, _ in BAD_PAYLOADS])
def test_bad_payloads_give_error_events(agent: AgentServer, payload: Any, code: str) -> None:
    events = agent.invoke(payload)
    assert events[-1]["type"] == "error"
    assert events[-1]["data"]["code"] == code
    sdp = (
        payload.get("data", {}).get("sdp")
        if isinstance(payload, dict) and isinstance(payload.get("data"), dict)
        else None
    )
    if sdp:
        assert sdp.strip() not in events[-1]["data"]["message"], "error events never echo the SDP"
    assert agent.ping() == "Healthy"


def test_oversized_and_non_json_bodies_give_error_events(agent: AgentServer) -> None:
    status, events = agent.invoke_raw(json.dumps({"type": "offer", "data": {"sdp": "v=0" + "x" * 70_000}}).encode())
    assert (status, events[0]["data"]["code"]) == (200, "payload_too_large")

    # A body that lies about its length (chunked) is cut off as it streams in.
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    status, events = agent.invoke_raw(chunks(), chunked=True)
    assert events[0]["data"]["code"] == "payload_too_large"
    for body in (b"{not json", b"\xff\xfe", b""):
        status, events = agent.invoke_raw(body)
        assert events == [
            {"type": "error", "data": {"code": "invalid_json", "message": "the request body is not JSON"}}
        ]


def test_the_server_keeps_serving_calls_after_bad_payloads(agent: AgentServer) -> None:
    for _, payload, _ in BAD_PAYLOADS:
        agent.invoke(payload)
    agent.invoke_raw(b"{broken")

    async def scenario() -> None:
        peer = Peer()
        await connect(agent, peer)
        assert await asyncio.to_thread(agent.ping) == "HealthyBusy"
        await peer.close()
        await asyncio.to_thread(agent.wait_ping, "Healthy", 10)

    run(scenario())


def test_a_call_whose_peer_never_connects_ends_after_the_connect_timeout(agent: AgentServer) -> None:
    async def scenario() -> None:
        peer = Peer()
        events = await asyncio.to_thread(agent.invoke, {"type": "offer", "data": await peer.offer()})
        assert events[1]["type"] == "answer"
        assert await asyncio.to_thread(agent.ping) == "HealthyBusy"
        waited = await asyncio.to_thread(agent.wait_ping, "Healthy", CONNECT_TIMEOUT + 10)
        assert waited >= CONNECT_TIMEOUT - 1
        await peer.close()

    run(scenario())


def test_ice_server_failures_give_an_error_event_with_retry_after() -> None:
    async def exhausted() -> list[Any]:
        raise IceServersUnavailableError("TURN credential pool exhausted", retry_after=1.25)

    with running_agent(AgentConfig(pipeline="local", ice_servers="none"), ice_servers=exhausted) as server:

        async def scenario() -> list[dict[str, Any]]:
            peer = Peer()
            offer = await peer.offer()
            events = await asyncio.to_thread(server.invoke, {"type": "offer", "data": offer})
            await peer.close()
            return events

        events = run(scenario())
        assert events[-1] == {
            "type": "error",
            "data": {
                "code": "ice_servers_unavailable",
                "message": "TURN credential pool exhausted",
                "retry_after": 1.25,
            },
        }
        assert server.ping() == "Healthy"


def test_the_agent_takes_turn_servers_from_the_broker_pool(emulator: Any, make_broker: Any) -> None:
    provider = BrokerIceServers(make_broker(emulator.create_channels(2)))
    servers = run(provider())
    assert servers
    assert all(server.username and server.credential for server in servers)
    assert all(url.startswith(("turn:", "turns:")) for server in servers for url in server.urls)


def test_the_local_pipeline_hears_speech_over_webrtc(quiet_agent: AgentServer) -> None:
    async def scenario() -> None:
        peer = Peer()
        await connect(quiet_agent, peer)
        await asyncio.sleep(1.0)
        assert rms(peer.audio_since(0)) < 50, "the quiet agent should not speak first"
        peer.track.play(espeak_pcm("how are you", PEER_RATE))

        def transcript() -> str | None:
            for message in peer.messages:
                if message.get("type") == "user-transcription" and message["data"].get("final"):
                    return str(message["data"]["text"])
            return None

        await peer.wait_for(lambda: transcript() is not None, 20, "a transcription over the data channel")
        heard_at = time.monotonic()
        assert transcript() == "how are you"
        await peer.wait_for(lambda: rms(peer.audio_since(heard_at)) > 200, 15, "the spoken reply")
        await peer.close()
        await asyncio.to_thread(quiet_agent.wait_ping, "Healthy", 10)

    run(scenario(), timeout=60)


# --- ICE servers brought by the invocation ---------------------------------------------------------


@pytest.fixture(scope="module")
def turn() -> Iterator[TurnServer]:
    """A loopback coturn that checks TURN REST credentials, as KVS TURN does."""
    with turn_server() as server:
        yield server


class RecordingProvider:
    """A fallback ICE server provider that counts its calls."""

    def __init__(self, servers: list[RTCIceServer]) -> None:
        self.servers = servers
        self.calls = 0

    async def __call__(self) -> list[RTCIceServer]:
        self.calls += 1
        return list(self.servers)


async def refuse_to_be_called() -> list[RTCIceServer]:
    """A fallback provider for agents whose every offer must bring its own ICE servers."""
    raise AssertionError("the fallback provider was called although the invocation brought ICE servers")


def configured_servers(connection: SmallWebRTCConnection) -> list[tuple[list[str], str | None, str | None]]:
    """The ICE servers in the RTCConfiguration of the connection's current aiortc peer connection."""
    configuration: RTCConfiguration = connection.pc._RTCPeerConnection__configuration
    return [(list(s.urls), s.username, s.credential) for s in configuration.iceServers or []]


def as_tuples(servers: list[dict[str, Any]]) -> list[tuple[list[str], str | None, str | None]]:
    """Invocation ``iceServers`` in the shape of :func:`configured_servers`."""
    return [(server["urls"], server.get("username"), server.get("credential")) for server in servers]


def offer_payload(offer: dict[str, Any], ice_servers: Any = None, **data: Any) -> dict[str, Any]:
    """An offer invocation; ``iceServers`` only when given."""
    payload: dict[str, Any] = {"type": "offer", "data": {**offer, **data}}
    if ice_servers is not None:
        payload["iceServers"] = ice_servers
    return payload


class HeldCalls:
    """A CallManager whose calls run until released, keeping each call's connection at hand."""

    def __init__(self, provider: RecordingProvider, **kwargs: Any) -> None:
        self.ended: list[str] = []
        self.connections: list[SmallWebRTCConnection] = []
        self.release = asyncio.Event()
        self.manager = CallManager(ice_servers=provider, on_end=self.ended.append, **kwargs)

    async def hold(self, connection: SmallWebRTCConnection) -> None:
        self.connections.append(connection)
        await self.release.wait()

    async def answer(self, payload: dict[str, Any]) -> dict[str, str]:
        request = parse_request(payload)
        assert isinstance(request, OfferRequest)
        if request.pc_id:
            return await self.manager.answer(request)
        held = len(self.connections)
        answer = await self.manager.answer(request, run_call=self.hold)
        while len(self.connections) == held:  # the call's task starts right after the answer
            await asyncio.sleep(0.01)
        return answer

    async def end(self, count: int) -> None:
        self.release.set()
        deadline = time.monotonic() + 10
        while len(self.ended) < count:
            assert time.monotonic() < deadline, "the calls did not end"
            await asyncio.sleep(0.02)


def test_a_call_uses_the_invocations_ice_servers_and_restart_pc_replaces_them(turn: TurnServer) -> None:
    async def scenario() -> None:
        provider = RecordingProvider([RTCIceServer(urls=["stun:192.0.2.1:3478"])])
        calls = HeldCalls(provider)
        peer, restarted_peer = Peer(), Peer()
        servers = turn.ice_servers()
        answer = await calls.answer(offer_payload(await peer.offer(), servers))
        assert provider.calls == 0, "servers in the invocation: the fallback is never asked"
        (connection,) = calls.connections
        assert configured_servers(connection) == as_tuples(servers)
        assert " typ relay " in answer["sdp"], "the invocation's TURN credentials allocated a relay"

        fresh = turn.ice_servers()
        assert fresh[0]["username"] != servers[0]["username"]
        restart = await calls.answer(
            offer_payload(await restarted_peer.offer(), fresh, pc_id=answer["pc_id"], restart_pc=True)
        )
        assert provider.calls == 0
        assert [(list(s.urls), s.username, s.credential) for s in connection.ice_servers] == as_tuples(fresh)
        assert configured_servers(connection) == as_tuples(fresh), "the new peer connection has the new ones"
        assert " typ relay " in restart["sdp"]

        # A renegotiation without restart keeps its peer connection, so its servers too.
        await restarted_peer.accept(restart)
        await restarted_peer.pc.setLocalDescription(await restarted_peer.pc.createOffer())
        again = {"sdp": restarted_peer.pc.localDescription.sdp, "type": "offer"}
        await calls.answer(offer_payload(again, turn.ice_servers(), pc_id=restart["pc_id"]))
        assert configured_servers(connection) == as_tuples(fresh)
        await calls.end(1)
        for each in (peer, restarted_peer):
            await each.close()

    run(scenario())


def test_an_offer_without_ice_servers_falls_back_to_the_provider_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.calls")

    async def scenario() -> None:
        provider = RecordingProvider([])
        calls = HeldCalls(provider, ice_servers_source="AGENT_ICE_SERVERS=none (host candidates only)")
        first, second = Peer(), Peer()
        answer = await calls.answer(offer_payload(await first.offer()))
        assert provider.calls == 1
        assert configured_servers(calls.connections[0]) == []
        await calls.answer(offer_payload(await second.offer(), pc_id=answer["pc_id"], restart_pc=True))
        assert provider.calls == 2, "a restart without servers asks the provider again"
        # An explicit empty list is the invocation's own choice: no fallback.
        third = Peer()
        await calls.answer(offer_payload(await third.offer(), []))
        assert provider.calls == 2
        await calls.end(2)
        for peer in (first, second, third):
            await peer.close()

    run(scenario())
    fallbacks = [r for r in caplog.records if r.getMessage().startswith("offer carried no ICE servers")]
    assert [(r.levelname, r.getMessage()) for r in fallbacks] == [
        ("WARNING", "offer carried no ICE servers; using AGENT_ICE_SERVERS=none (host candidates only): 0 servers")
    ] * 2


def test_the_server_names_its_fallback_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.calls")
    config = AgentConfig(pipeline="local", connect_timeout_seconds=CONNECT_TIMEOUT)
    with running_agent(config, ice_servers=None) as server:  # AGENT_ICE_SERVERS=none, the default

        async def scenario() -> list[dict[str, Any]]:
            peer = Peer()
            events = await asyncio.to_thread(server.invoke, offer_payload(await peer.offer()))
            await peer.close()
            return events

        assert [event["type"] for event in run(scenario())] == ["status", "answer", "progress"]
        server.wait_ping("Healthy", CONNECT_TIMEOUT + 10)
    assert "offer carried no ICE servers; using AGENT_ICE_SERVERS=none (host candidates only): 0 servers" in [
        r.getMessage() for r in caplog.records
    ]


@pytest.fixture(scope="module")
def relay_agent() -> Iterator[AgentServer]:
    """A relay-only agent (as local mode runs it) with no fallback ICE servers at all."""
    config = AgentConfig(pipeline="local", ice_transport_policy="relay", greeting="Hello from the relay.")
    with running_agent(config, ice_servers=None) as server:
        yield server


@pytest.mark.parametrize(
    "ice_servers",
    [
        None,
        [],
        [{"urls": ["stun:127.0.0.1:3478"]}],
        # KVS's TURN-over-DTLS URI alone: aiortc cannot use it, so no relay could be allocated.
        [{"urls": ["turns:127.0.0.1:443?transport=udp"], "username": "1:u", "credential": "c"}],
    ],
    ids=["absent", "empty", "stun-only", "turns-over-udp-only"],
)
def test_a_relay_only_agent_refuses_an_offer_left_without_turn(relay_agent: AgentServer, ice_servers: Any) -> None:
    events = relay_agent.invoke(offer_payload({"sdp": "v=0\r\n", "type": "offer"}, ice_servers))
    assert events[-1]["type"] == "error"
    assert events[-1]["data"]["code"] == "ice_servers_missing"
    assert "AGENT_ICE_TRANSPORT_POLICY=relay" in events[-1]["data"]["message"]
    assert relay_agent.ping() == "Healthy"


def test_a_relayed_call_with_the_invocations_servers_logs_no_credential(turn: TurnServer) -> None:
    servers = turn.ice_servers()
    credentials = (servers[0]["username"], servers[0]["credential"])
    config = AgentConfig(
        pipeline="local", ice_transport_policy="relay", greeting="Hello from the relay.", log_level="DEBUG"
    )
    with captured_logs() as lines, running_agent(config, ice_servers=refuse_to_be_called) as server:

        async def scenario() -> None:
            peer = Peer()
            events = await asyncio.to_thread(server.invoke, offer_payload(await peer.offer(), servers))
            assert [event["type"] for event in events] == ["status", "answer", "progress"], events
            answer = events[1]["data"]
            candidates = [line for line in answer["sdp"].splitlines() if line.startswith("a=candidate:")]
            assert candidates
            assert all(" typ relay " in line for line in candidates), "relay-only, through the payload's TURN"
            await peer.accept(answer)
            await asyncio.to_thread(
                server.invoke,
                {"type": "ice-candidates", "data": {"pc_id": answer["pc_id"], "candidates": peer.candidates}},
            )
            await peer.wait_for(lambda: peer.pc.connectionState == "connected", 10, "the relayed call to connect")
            await peer.wait_for(lambda: rms(peer.audio_since(0)) > 200, 10, "the greeting through the relay")
            await peer.close()
            await asyncio.to_thread(server.wait_ping, "Healthy", 10)

        run(scenario())
    text = "\n".join(lines)
    assert "bedrock_agentcore.app: Returning streaming response" in text, "the SDK's logger was captured"
    assert "loguru pipecat" in text, "Pipecat's loguru logs were captured"
    assert "answered call" in text and "from the invocation" in text
    for secret in credentials:
        leaking = sorted({line.partition(":")[0] for line in lines if secret in line})
        assert leaking == [], "loggers that wrote a TURN credential"


SECRET_USER, SECRET_PASS, SECRET_HOST = "LEAKY-USER-1700000000", "LEAKY-PASSWORD-xyz", "leaky-host.example"
GOOD_TURN = {"urls": [f"turn:{SECRET_HOST}:3478?transport=udp"], "username": SECRET_USER, "credential": SECRET_PASS}

BAD_ICE_SERVERS: list[tuple[str, Any]] = [
    ("null", None),
    ("a string", f"turn:{SECRET_HOST}:3478"),
    ("an object", GOOD_TURN),
    ("a number", 3),
    ("more than 8 servers", [GOOD_TURN] * 9),
    ("a server that is a string", [f"turn:{SECRET_HOST}"]),
    ("a server without urls", [{"username": SECRET_USER, "credential": SECRET_PASS}]),
    ("urls a single string", [{**GOOD_TURN, "urls": f"turn:{SECRET_HOST}:3478"}]),
    ("urls empty", [{**GOOD_TURN, "urls": []}]),
    ("more than 8 urls", [{**GOOD_TURN, "urls": [f"turn:{SECRET_HOST}:3478"] * 9}]),
    ("a url not a string", [{**GOOD_TURN, "urls": [3478]}]),
    ("a url over 512 characters", [{**GOOD_TURN, "urls": [f"turn:{SECRET_HOST}{'a' * 512}"]}]),
    ("an http url", [{**GOOD_TURN, "urls": [f"http://{SECRET_HOST}/"]}]),
    ("a stuns url", [{"urls": [f"stuns:{SECRET_HOST}:443"]}]),
    ("an unknown transport", [{**GOOD_TURN, "urls": [f"turn:{SECRET_HOST}:443?transport=tls"]}]),
    ("stun with a transport", [{"urls": [f"stun:{SECRET_HOST}:3478?transport=udp"]}]),
    ("a port out of range", [{**GOOD_TURN, "urls": [f"turn:{SECRET_HOST}:70000"]}]),
    ("a host with a path", [{**GOOD_TURN, "urls": [f"turn:{SECRET_HOST}/x:3478"]}]),
    ("a username not a string", [{**GOOD_TURN, "username": 1700000000}]),
    ("an empty username", [{**GOOD_TURN, "username": ""}]),
    ("a credential over 512 characters", [{**GOOD_TURN, "credential": SECRET_PASS + "x" * 512}]),
    ("a credential that is null", [{**GOOD_TURN, "credential": None}]),
    ("turn without a credential", [{"urls": GOOD_TURN["urls"], "username": SECRET_USER}]),
    ("an unknown key", [{**GOOD_TURN, "credentialType": "password"}]),
]


@pytest.mark.parametrize("ice_servers", [v for _, v in BAD_ICE_SERVERS], ids=[n for n, _ in BAD_ICE_SERVERS])
def test_malformed_ice_servers_give_invalid_ice_servers_without_echoing_them(
    agent: AgentServer, ice_servers: Any
) -> None:
    payload = {"type": "offer", "data": {"sdp": "v=0\r\n", "type": "offer"}, "iceServers": ice_servers}
    events = agent.invoke(payload)
    assert [(event["type"], event["data"]["code"]) for event in events] == [("error", "invalid_ice_servers")]
    message = events[0]["data"]["message"]
    assert message.startswith("iceServers")
    for value in (SECRET_USER, SECRET_PASS, SECRET_HOST, "credentialType"):
        assert value not in message, "error events never echo the ICE servers"


def test_ice_servers_on_trickled_candidates_are_refused(agent: AgentServer) -> None:
    payload = {"type": "ice-candidates", "data": {"pc_id": "p", "candidates": []}, "iceServers": [GOOD_TURN]}
    events = agent.invoke(payload)
    assert events[-1]["data"]["code"] == "invalid_ice_servers"
    assert SECRET_USER not in events[-1]["data"]["message"]

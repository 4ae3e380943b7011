"""The agent's real HTTP server with aiortc peers: offers, trickled candidates, errors, busy state.

Media stays on 127.0.0.1: host candidates only (no TURN here; the TURN-relayed call is tested with
coturn elsewhere), gathered on loopback for every peer of this process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.exceptions import IceServersUnavailableError
from agent.ice import BrokerIceServers
from tests.test_agent_support import PEER_RATE, AgentServer, Peer, espeak_pcm, loopback_media, rms, running_agent

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

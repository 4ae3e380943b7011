"""Helpers for the agent tests (no tests here): a real agent server, a real TURN server (coturn) with
credentials minted for it, and a capture of every log line; the aiortc peer and espeak audio come from
:mod:`local.call_client`, which the local-mode tests and benchmarks share."""

from __future__ import annotations

import http.client
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import aioice.ice
import uvicorn
from loguru import logger as loguru_logger

from agent.__main__ import QUIET_LIBRARY_LOGGERS
from agent.config import AgentConfig
from agent.ice import IceServerProvider, gather_loopback_host_candidates_only, no_ice_servers
from agent.pipelines import PipelineBuilder
from agent.server import create_app
from local.call_client import PEER_RATE, PcmTrack, Peer, espeak_pcm, rms
from local.coturn import Coturn, CoturnConfig, free_port
from local.kvs_emulator.credentials import mint_turn_credential

__all__ = [
    "PEER_RATE",
    "AgentServer",
    "PcmTrack",
    "Peer",
    "TurnServer",
    "captured_logs",
    "espeak_pcm",
    "loopback_media",
    "rms",
    "running_agent",
    "turn_server",
]


@dataclass
class AgentServer:
    """A running agent HTTP server on 127.0.0.1."""

    port: int
    app: Any

    def _request(
        self, method: str, path: str, body: bytes | Iterable[bytes] | None = None, chunked: bool = False
    ) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"content-type": "application/json"}
            connection.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def invoke_raw(self, body: bytes | Iterable[bytes], *, chunked: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """POST a raw body to /invocations; return the status and the SSE events."""
        status, text = self._request("POST", "/invocations", body, chunked)
        events = [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]
        return status, events

    def invoke(self, payload: Any) -> list[dict[str, Any]]:
        """POST a JSON payload to /invocations and return its events."""
        status, events = self.invoke_raw(json.dumps(payload).encode())
        assert status == 200
        return events

    def ping(self) -> str:
        """Return the /ping status (Healthy or HealthyBusy)."""
        status, text = self._request("GET", "/ping")
        assert status == 200
        return str(json.loads(text)["status"])

    def wait_ping(self, status: str, timeout: float) -> float:
        """Wait until /ping reports ``status``; return how long it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.ping() == status:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"/ping did not become {status} within {timeout} s (is {self.ping()})")


@contextmanager
def loopback_media() -> Iterator[None]:
    """Within the block, every peer of the process (agent and test peers) offers 127.0.0.1 only."""
    original = aioice.ice.get_host_addresses
    gather_loopback_host_candidates_only()
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@contextmanager
def running_agent(
    config: AgentConfig,
    *,
    ice_servers: IceServerProvider | None = no_ice_servers,
    builder: PipelineBuilder | None = None,
) -> Iterator[AgentServer]:
    """Serve ``create_app(config)`` on a free loopback port in a thread for the block's duration.

    ``ice_servers`` is the fallback for offers that bring none: host candidates only by default,
    ``None`` for the one ``config.ice_servers`` names.
    """
    with serving(create_app(config, ice_servers=ice_servers, builder=builder)) as agent:
        yield agent


@contextmanager
def serving(
    app: Any, *, lifespan: Literal["on", "off"] = "off", config: uvicorn.Config | None = None
) -> Iterator[AgentServer]:
    """Serve ``app`` on a free loopback port in a thread for the block's duration.

    ``lifespan="on"`` runs the app's start-up, as ``python -m agent`` does; ``config`` serves it with
    those uvicorn settings instead (e.g. ``agent.__main__.server_config``'s), on the free port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config or uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "agent server did not start"
        time.sleep(0.02)
    try:
        yield AgentServer(port=sock.getsockname()[1], app=app)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class TurnServer:
    """A coturn on loopback that checks TURN REST credentials, as KVS TURN does."""

    coturn: Coturn

    def ice_servers(self, *, ttl_seconds: int = 300) -> list[dict[str, Any]]:
        """Fresh credentials for this server in the invocation's ``iceServers`` form (TURN and STUN)."""
        config = self.coturn.config
        credential = mint_turn_credential(config.secret, ttl_seconds=ttl_seconds, now=time.time())
        return [
            {"urls": list(config.uris), "username": credential.username, "credential": credential.password},
            {"urls": [f"stun:{config.host}:{config.port}"]},
        ]


@contextmanager
def turn_server() -> Iterator[TurnServer]:
    """Run coturn on a free loopback port for the block's duration, with a secret of its own."""
    relay_base = random.randrange(50000, 59000, 200)  # a range of its own: other coturns may run at once
    config = CoturnConfig(
        port=free_port(), secret=secrets.token_urlsafe(16), min_port=relay_base, max_port=relay_base + 199
    )
    with Coturn(config) as coturn:
        yield TurnServer(coturn)


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Collect every log line of the process at DEBUG for the block's duration.

    Covers the standard ``logging`` tree (the agent, uvicorn, the bedrock_agentcore SDK, whose
    ``bedrock_agentcore.app`` logger does not propagate, so it gets the handler itself) and Pipecat's
    loguru logger, at DEBUG even though the agent keeps Pipecat at INFO. aioice and aiortc stay at
    the level the agent process gives them (:data:`agent.__main__.QUIET_LIBRARY_LOGGERS`).
    """
    lines: list[str] = []
    lock = threading.Lock()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            with lock:
                lines.append(text)

    handler = Collect(level=logging.DEBUG)
    targets = [logging.getLogger(), logging.getLogger("bedrock_agentcore.app")]
    levels = {name: logging.getLogger(name).level for name in ("", "bedrock_agentcore", "bedrock_agentcore.app")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in QUIET_LIBRARY_LOGGERS}
    for name, level in QUIET_LIBRARY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for target in targets:
        target.addHandler(handler)

    def sink(message: Any) -> None:
        with lock:
            lines.append(f"loguru {message.record['name']}: {message.record['message']}")

    sink_id = loguru_logger.add(sink, level="DEBUG")
    try:
        yield lines
    finally:
        loguru_logger.remove(sink_id)
        for target in targets:
            target.removeHandler(handler)
        for name, level in {**levels, **quiet}.items():
            logging.getLogger(name).setLevel(level)

"""Helpers for the agent tests (no tests here): a real agent server; the aiortc peer and espeak audio
come from :mod:`local.call_client`, which the local-mode tests and benchmarks share."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aioice.ice
import uvicorn

from agent.config import AgentConfig
from agent.ice import IceServerProvider, gather_loopback_host_candidates_only, no_ice_servers
from agent.pipelines import PipelineBuilder
from agent.server import create_app
from local.call_client import PEER_RATE, PcmTrack, Peer, espeak_pcm, rms

__all__ = ["PEER_RATE", "AgentServer", "PcmTrack", "Peer", "espeak_pcm", "loopback_media", "rms", "running_agent"]


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
    ice_servers: IceServerProvider = no_ice_servers,
    builder: PipelineBuilder | None = None,
) -> Iterator[AgentServer]:
    """Serve ``create_app(config)`` on a free loopback port in a thread for the block's duration."""
    app = create_app(config, ice_servers=ice_servers, builder=builder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "agent server did not start"
        time.sleep(0.02)
    try:
        yield AgentServer(port=port, app=app)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

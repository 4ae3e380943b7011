"""Agent configuration comes from the environment; misconfiguration fails at start, naming the fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.config import DEFAULT_GREETING, AgentConfig
from agent.exceptions import ConfigurationError
from agent.payloads import parse_request
from agent.server import default_ice_servers

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_serve_nova_sonic_on_loopback_8080() -> None:
    config = AgentConfig.from_env({"AWS_REGION": "us-east-1"})
    assert (config.pipeline, config.host, config.port) == ("nova-sonic", "127.0.0.1", 8080)
    assert (config.ice_servers, config.ice_host_candidates) == ("broker", "all")
    assert config.greeting == DEFAULT_GREETING
    assert config.effective_voice == "matthew"


def test_every_setting_comes_from_the_environment() -> None:
    config = AgentConfig.from_env(
        {
            "AGENT_PIPELINE": "cascade",
            "AGENT_HOST": "0.0.0.0",  # noqa: S104 - what the container sets
            "AGENT_PORT": "9000",
            "AWS_DEFAULT_REGION": "eu-north-1",
            "AGENT_SYSTEM_PROMPT": "Talk like a pirate.",
            "AGENT_GREETING": "",
            "AGENT_VOICE": "Matthew",
            "AGENT_BEDROCK_MODEL_ID": "eu.amazon.nova-2-lite-v1:0",
            "AGENT_NOVA_SONIC_MODEL_ID": "amazon.nova-sonic-v1:0",
            "AGENT_LANGUAGE": "en-GB",
            "AGENT_POLLY_ENGINE": "generative",
            "AGENT_ICE_SERVERS": "none",
            "AGENT_ICE_HOST_CANDIDATES": "loopback",
            "AGENT_MAX_REQUEST_BYTES": "4096",
            "AGENT_CONNECT_TIMEOUT_SECONDS": "12.5",
            "AGENT_CREDENTIAL_REFRESH_SECONDS": "600",
            "AGENT_LOG_LEVEL": "debug",
        }
    )
    assert config == AgentConfig(
        pipeline="cascade",
        host="0.0.0.0",  # noqa: S104
        port=9000,
        region="eu-north-1",
        system_prompt="Talk like a pirate.",
        greeting="",
        voice="Matthew",
        bedrock_model_id="eu.amazon.nova-2-lite-v1:0",
        nova_sonic_model_id="amazon.nova-sonic-v1:0",
        language="en-GB",
        polly_engine="generative",
        ice_servers="none",
        ice_host_candidates="loopback",
        max_request_bytes=4096,
        connect_timeout_seconds=12.5,
        credential_refresh_seconds=600,
        log_level="DEBUG",
    )


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"AGENT_PIPELINE": "whisper"}, "AGENT_PIPELINE"),
        ({}, "AWS_REGION"),
        ({"AGENT_PIPELINE": "cascade", "AWS_REGION": "us-east-1"}, "AGENT_BEDROCK_MODEL_ID"),
        ({"AGENT_PIPELINE": "local", "AGENT_PORT": "http"}, "AGENT_PORT"),
        ({"AGENT_PIPELINE": "local", "AGENT_PORT": "70000"}, "AGENT_PORT"),
        ({"AGENT_PIPELINE": "local", "AGENT_ICE_SERVERS": "stun"}, "AGENT_ICE_SERVERS"),
        ({"AGENT_PIPELINE": "local", "AGENT_ICE_HOST_CANDIDATES": "lan"}, "AGENT_ICE_HOST_CANDIDATES"),
        ({"AGENT_PIPELINE": "local", "AGENT_CONNECT_TIMEOUT_SECONDS": "-1"}, "AGENT_CONNECT_TIMEOUT_SECONDS"),
        ({"AGENT_PIPELINE": "local", "AGENT_MAX_REQUEST_BYTES": "10"}, "AGENT_MAX_REQUEST_BYTES"),
        ({"AGENT_PIPELINE": "local", "AGENT_LOG_LEVEL": "loud"}, "AGENT_LOG_LEVEL"),
    ],
)
def test_misconfiguration_names_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        AgentConfig.from_env(environ)


def test_broker_ice_servers_need_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURN_CHANNEL_ARNS", raising=False)
    with pytest.raises(ConfigurationError, match=r"TURN_CHANNEL_ARNS.*AGENT_ICE_SERVERS=none"):
        default_ice_servers(AgentConfig(pipeline="local"))


def test_payload_parsing_accepts_the_pipecat_client_shapes() -> None:
    offer = parse_request({"type": "offer", "data": {"sdp": "v=0\r\n", "type": "offer", "requestData": {"a": 1}}})
    assert offer.kind == "offer"
    assert offer.request_data == {"a": 1}  # type: ignore[union-attr]
    candidates = parse_request(
        {"type": "ice-candidates", "data": {"pc_id": "p", "candidates": [{"candidate": "c", "sdpMid": "0"}]}}
    )
    assert candidates.kind == "ice-candidates"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "TURN_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_python_m_agent_fails_at_start_naming_what_to_set() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent"],
        env=_agent_env(AGENT_PIPELINE="local", AGENT_ICE_SERVERS="broker"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "TURN_CHANNEL_ARNS" in result.stderr


def test_python_m_agent_serves_ping_on_the_configured_loopback_port() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent"],
        env=_agent_env(
            AGENT_PIPELINE="local", AGENT_ICE_SERVERS="none", AGENT_ICE_HOST_CANDIDATES="loopback", AGENT_PORT=str(port)
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    assert b'"Healthy"' in response.read()
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "python -m agent did not serve /ping"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr:
            process.stderr.close()

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
from agent.payloads import MAX_ICE_FIELD_CHARS, MAX_ICE_SERVER_URLS, MAX_ICE_SERVERS, IceServerSpec, parse_request
from agent.server import default_ice_servers

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_serve_nova_sonic_on_loopback_8080() -> None:
    config = AgentConfig.from_env({"AWS_REGION": "us-east-1"})
    assert (config.pipeline, config.host, config.port) == ("nova-sonic", "127.0.0.1", 8080)
    assert (config.ice_servers, config.ice_host_candidates, config.ice_transport_policy) == ("none", "all", "all")
    assert config.greeting == DEFAULT_GREETING
    assert config.effective_voice == "matthew"
    assert config.metrics == "emf"  # AgentCore ships stdout to CloudWatch, which reads the EMF lines


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
            "AGENT_METRICS": "LOG",
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
        metrics="log",
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
        ({"AGENT_PIPELINE": "local", "AGENT_METRICS": "otel"}, "AGENT_METRICS must be one of emf, log"),
    ],
)
def test_misconfiguration_names_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        AgentConfig.from_env(environ)


def test_relay_only_needs_no_ice_server_source_the_invocation_brings_them() -> None:
    config = AgentConfig.from_env({"AGENT_PIPELINE": "local", "AGENT_ICE_TRANSPORT_POLICY": "relay"})
    assert (config.ice_servers, config.ice_transport_policy) == ("none", "relay")


def test_broker_ice_servers_need_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURN_CHANNEL_ARNS", raising=False)
    with pytest.raises(ConfigurationError, match=r"TURN_CHANNEL_ARNS.*AGENT_ICE_SERVERS=none"):
        default_ice_servers(AgentConfig(pipeline="local", ice_servers="broker"))


def test_the_default_agent_does_not_load_the_broker_pool() -> None:
    script = (
        "import sys\n"
        "from agent.config import AgentConfig\n"
        "from agent.server import create_app\n"
        "create_app(AgentConfig.from_env({'AGENT_PIPELINE': 'local'}))\n"
        "print(sorted(name for name in sys.modules if name in ('broker.core', 'broker.kvs', 'broker.limiter')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=_agent_env(), capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_payload_parsing_accepts_the_pipecat_client_shapes() -> None:
    offer = parse_request({"type": "offer", "data": {"sdp": "v=0\r\n", "type": "offer", "requestData": {"a": 1}}})
    assert offer.kind == "offer"
    assert offer.request_data == {"a": 1}  # type: ignore[union-attr]
    candidates = parse_request(
        {"type": "ice-candidates", "data": {"pc_id": "p", "candidates": [{"candidate": "c", "sdpMid": "0"}]}}
    )
    assert candidates.kind == "ice-candidates"


OFFER = {"sdp": "v=0\r\n", "type": "offer"}


def test_an_offer_carries_the_ice_servers_its_invocation_brought() -> None:
    kvs_host = "35-90-63-38.t-ae7dd61a.kinesisvideo.us-west-2.amazonaws.com"
    kvs_like = [
        {
            "urls": [
                f"turn:{kvs_host}:443?transport=udp",
                f"turns:{kvs_host}:443?transport=udp",
                f"turns:{kvs_host}:443?transport=tcp",
            ],
            "username": "1700000000:abc+/=",
            "credential": "c2VjcmV0",
        },
        {"urls": ["stun:stun.kinesisvideo.us-west-2.amazonaws.com:443"]},
    ]
    offer = parse_request({"type": "offer", "data": OFFER, "iceServers": kvs_like})
    assert offer.ice_servers == (  # type: ignore[union-attr]
        IceServerSpec(urls=tuple(kvs_like[0]["urls"]), username="1700000000:abc+/=", credential="c2VjcmV0"),
        IceServerSpec(urls=("stun:stun.kinesisvideo.us-west-2.amazonaws.com:443",)),
    )
    assert "c2VjcmV0" not in repr(offer) and "abc+/=" not in repr(offer)
    assert parse_request({"type": "offer", "data": OFFER}).ice_servers is None  # type: ignore[union-attr]
    assert parse_request({"type": "offer", "data": OFFER, "iceServers": []}).ice_servers == ()  # type: ignore[union-attr]


def test_ice_servers_up_to_every_limit_are_accepted() -> None:
    longest = "x" * MAX_ICE_FIELD_CHARS
    url = "turn:" + "h" * (MAX_ICE_FIELD_CHARS - len("turn::65535?transport=tcp")) + ":65535?transport=tcp"
    assert len(url) == MAX_ICE_FIELD_CHARS
    server = {"urls": [url] * MAX_ICE_SERVER_URLS, "username": longest, "credential": longest}
    offer = parse_request({"type": "offer", "data": OFFER, "iceServers": [server] * MAX_ICE_SERVERS})
    assert len(offer.ice_servers or ()) == MAX_ICE_SERVERS  # type: ignore[union-attr]


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

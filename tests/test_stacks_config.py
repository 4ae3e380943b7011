"""Fast tests of the CDK app's inputs: context parsing, the deployment environment, the Lambda bundle hash.

Nothing here synthesizes the full stack; see ``test_stacks.py`` for the templates.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment

from broker.api.service import Transport
from stacks.agent_runtime import AgentPipeline
from stacks.builder import build_app, stack_environment
from stacks.config import AppConfig, ContextError
from stacks.lambda_bundle import BROKER_DIRECTORY, asset_hash, source_files
from stacks.turn_pool import CredentialReuse

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_CONTEXT: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def config_with(**overrides: Any) -> AppConfig:
    return AppConfig.from_mapping({**CDK_CONTEXT, **overrides})


def test_cdk_json_defaults_give_a_valid_config() -> None:
    config = config_with()
    assert config.stack_name == "PipecatVoiceAgent"
    assert config.turn_pool.peak_sessions_per_sec == 10
    assert config.turn_pool.channel_count_override is None
    assert config.turn_pool.credential_reuse is CredentialReuse.PER_SESSION
    assert config.network.nat_gateways == 1
    assert config.agent_runtime.pipeline is AgentPipeline.NOVA_SONIC
    assert config.broker_api.jwt is None
    assert config.broker_api.allowed_origins == ("http://localhost:7860",)
    assert config.observability.turn_latency_p95_ms == 2000
    assert config.observability.agent_pipeline == "nova-sonic"
    assert config.broker_api.transports == (Transport.WEBRTC, Transport.WEBSOCKET)
    assert config.broker_api.websocket_url_expires_seconds == 60


def test_offered_transports_and_the_url_expiry_come_from_context() -> None:
    config = config_with(brokerTransports="websocket, websocket", websocketUrlExpirySeconds="300")
    assert config.broker_api.transports == (Transport.WEBSOCKET,)
    assert config.broker_api.websocket_url_expires_seconds == 300
    assert config_with(brokerTransports=["webrtc"]).broker_api.transports == (Transport.WEBRTC,)


def test_command_line_strings_are_parsed_like_cdk_json_values() -> None:
    # `-c key=value` always arrives as a string.
    config = config_with(
        peakSessionsPerSecond="12.5",
        callsPerSession="1",
        channelCount="7",
        natGateways="2",
        allowedOrigins="https://a.example.com, https://b.example.com:8443",
        jwtIssuerUrl="https://login.example.com/tenant",
        jwtAudience="web,mobile",
        turnCredentialReuse="shared",
        agentPipeline="cascade",
        turnLatencyAlarmP95Ms="1200",
    )
    assert config.turn_pool.peak_sessions_per_sec == 12.5
    assert config.turn_pool.calls_per_session == 1
    assert config.turn_pool.channel_count == 7
    assert config.network.nat_gateways == 2
    assert config.broker_api.allowed_origins == ("https://a.example.com", "https://b.example.com:8443")
    assert config.broker_api.jwt is not None
    assert config.broker_api.jwt.issuer_url == "https://login.example.com/tenant"
    assert config.broker_api.jwt.audience == ("web", "mobile")
    assert config.turn_pool.credential_reuse is CredentialReuse.SHARED
    assert config.agent_runtime.pipeline is AgentPipeline.CASCADE
    assert config.observability.turn_latency_p95_ms == 1200
    assert config.observability.agent_pipeline == "cascade"  # the dimension the agent's metrics carry


def test_channel_count_null_means_sized_from_the_peak() -> None:
    assert config_with(channelCount="null").turn_pool.channel_count_override is None
    assert config_with(channelCount=None).turn_pool.channel_count_override is None


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"peakSessionsPerSecond": -1}, "peakSessionsPerSecond", "must be > 0"),
        ({"peakSessionsPerSecond": 0}, "peakSessionsPerSecond", "must be > 0"),
        ({"peakSessionsPerSecond": "lots"}, "peakSessionsPerSecond", "must be a number"),
        ({"peakSessionsPerSecond": "nan"}, "peakSessionsPerSecond", "finite"),
        ({"peakSessionsPerSecond": None}, "peakSessionsPerSecond", "is missing"),
        ({"callsPerSession": 1.5}, "callsPerSession", "whole number"),
        ({"channelHeadroom": -0.1}, "channelHeadroom", "must be >= 0"),
        ({"channelCount": 0}, "channelCount", "between 1 and"),
        ({"natGateways": 3}, "natGateways", "between 1 and 2"),
        ({"agentPipeline": "whisper"}, "agentPipeline", "must be one of nova-sonic, cascade, local"),
        ({"turnCredentialReuse": "sometimes"}, "turnCredentialReuse", "per-session, shared"),
        ({"allowedOrigins": ["https://app.example.com/path"]}, "allowedOrigins", "not an origin"),
        ({"allowedOrigins": ["https://app.example.com/"]}, "allowedOrigins", "not an origin"),
        ({"allowedOrigins": ["http://app.example.com"]}, "allowedOrigins", "http only for localhost"),
        ({"allowedOrigins": ["app.example.com"]}, "allowedOrigins", "not an origin"),
        ({"allowedOrigins": ["https://app.example.com:99999"]}, "allowedOrigins", "not an origin"),
        ({"allowedOrigins": ["*"]}, "allowedOrigins", "any web page"),
        ({"allowedOrigins": []}, "allowedOrigins", "must not be empty"),
        ({"jwtIssuerUrl": "https://login.example.com"}, "jwtAudience", "must be set when jwtIssuerUrl is"),
        ({"jwtAudience": "web"}, "jwtIssuerUrl", "must be set when jwtAudience is"),
        ({"jwtIssuerUrl": "http://login.example.com", "jwtAudience": "web"}, "jwtIssuerUrl", "invalid"),
        ({"idleSessionTimeoutSeconds": 30}, "idleSessionTimeoutSeconds", "between 60 and 28800"),
        ({"idleSessionTimeoutSeconds": 7200, "maxSessionLifetimeSeconds": 3600}, "idleSessionTimeoutSeconds", "longer"),
        ({"pollyVoiceId": "matthew; rm"}, "pollyVoiceId", "invalid"),
        ({"stackName": "1-starts-with-a-digit"}, "stackName", "invalid"),
        ({"turnLatencyAlarmP95Ms": "fast"}, "turnLatencyAlarmP95Ms", "whole number"),
        ({"turnLatencyAlarmP95Ms": 1500.5}, "turnLatencyAlarmP95Ms", "whole number"),
        ({"turnLatencyAlarmP95Ms": 50}, "turnLatencyAlarmP95Ms", "between 100 and 60000"),
        ({"turnLatencyAlarmP95Ms": None}, "turnLatencyAlarmP95Ms", "is missing"),
        ({"brokerTransports": ["webrtc", "daily"]}, "brokerTransports", "'daily'; the transports are webrtc,websocket"),
        ({"brokerTransports": "smallwebrtc"}, "brokerTransports", "the transports are webrtc,websocket"),
        ({"brokerTransports": []}, "brokerTransports", "must not be empty"),
        ({"brokerTransports": None}, "brokerTransports", "is missing"),
        ({"websocketUrlExpirySeconds": 301}, "websocketUrlExpirySeconds", "between 1 and 300"),
        ({"websocketUrlExpirySeconds": 0}, "websocketUrlExpirySeconds", "between 1 and 300"),
        ({"websocketUrlExpirySeconds": 59.5}, "websocketUrlExpirySeconds", "whole number"),
    ],
)
def test_bad_context_names_the_key_and_how_to_set_it(overrides: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ContextError) as caught:
        config_with(**overrides)
    message = str(caught.value)
    assert caught.value.key == key
    assert f"context key '{key}'" in message
    assert fragment in message
    assert f"-c {key}=" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"peakSessionsPerSecond": -5},
        {"agentPipeline": "unknown"},
        {"allowedOrigins": "https://ok.example.com,not-an-origin"},
    ],
)
def test_bad_context_fails_the_app_before_any_resource_exists(overrides: dict[str, Any], tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path), context={**CDK_CONTEXT, **overrides})
    with pytest.raises(ContextError, match=r"-c \w+="):
        build_app(app, env=Environment())
    assert app.node.children == []


def test_stack_is_environment_agnostic_unless_the_cli_names_one() -> None:
    agnostic = stack_environment({})
    assert agnostic.account is None
    assert agnostic.region is None
    named = stack_environment({"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "eu-west-1"})
    assert named.account == "123456789012"
    assert named.region == "eu-west-1"


@pytest.fixture
def broker_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "broker"
    shutil.copytree(BROKER_DIRECTORY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_bundle_hash_is_stable_and_ignores_bytecode(broker_copy: Path) -> None:
    before = asset_hash(broker_copy)
    (broker_copy / "__pycache__").mkdir(exist_ok=True)
    (broker_copy / "__pycache__" / "core.cpython-312.pyc").write_bytes(b"\x00bytecode")
    (broker_copy / "stray.pyc").write_bytes(b"\x00bytecode")
    assert asset_hash(broker_copy) == before
    assert all("__pycache__" not in path.parts and path.suffix != ".pyc" for path in source_files(broker_copy))


def test_bundle_hash_follows_sources_and_pinned_requirements(broker_copy: Path) -> None:
    before = asset_hash(broker_copy)
    requirements = broker_copy / "requirements-lambda.txt"
    requirements.write_text(requirements.read_text() + "extra-package==1.0\n")
    after_requirements = asset_hash(broker_copy)
    assert after_requirements != before
    (broker_copy / "limiter.py").write_text((broker_copy / "limiter.py").read_text() + "\n# changed\n")
    assert asset_hash(broker_copy) not in {before, after_requirements}


def test_lambda_requirements_are_all_pinned() -> None:
    lines = (BROKER_DIRECTORY / "requirements-lambda.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert requirements
    assert all("==" in line for line in requirements)
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"aws-lambda-powertools", "cachetools", "botocore", "pydantic"} <= names
    assert not {"boto3", "s3transfer"} & names  # the broker uses botocore alone (see the file's comment)


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.lower().split("==", 1) for line in lines if "==" in line)


def test_the_lambda_runs_the_versions_the_tests_run() -> None:
    """Every package the Lambda bundles that the project also installs is pinned to the same version."""
    bundled = pins(BROKER_DIRECTORY / "requirements-lambda.txt")
    installed = pins(BROKER_DIRECTORY.parent / "requirements.txt")
    shared = bundled.keys() & installed.keys()
    assert {"aws-lambda-powertools", "botocore", "pydantic", "aws-xray-sdk", "cachetools"} <= shared
    assert {name: bundled[name] for name in shared} == {name: installed[name] for name in shared}

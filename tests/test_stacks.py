"""The synthesized templates: security, networking and limits, cdk-nag, cfn-lint and a snapshot.

Each app is synthesized once per module (synth takes seconds) with cdk-nag attached, exactly as
``app.py`` builds it: a finding that is not acknowledged fails the fixture and every test using it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from agent import telemetry as agent_telemetry
from broker.services import AWS_SERVICES
from broker.sizing import recommended_channel_count
from broker.telemetry import METRICS_NAMESPACE, SERVICE_DIMENSION, SERVICE_NAME, MetricName
from stacks.builder import build_app
from stacks.config import AppConfig
from stacks.observability import MIN_TURNS_FOR_PERCENTILE
from stacks.turn_pool import (
    CHANNELS_PER_STACK,
    CREATION_BATCH,
    DISCOVERY_ACTION,
    ENDPOINT_ACTION,
    ICE_CREDENTIAL_ACTIONS,
    TurnChannelPool,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_CONTEXT: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
ASSET_HASH = re.compile(r"[0-9a-f]{64}")
ROUTE_KEYS = {"POST /start", "POST /sessions/{sessionId}/api/offer", "PATCH /sessions/{sessionId}/api/offer"}

ACCOUNT = "123456789012"
REGION = "eu-west-1"
EXTERNAL_IDP_CONTEXT = {
    "agentPipeline": "cascade",
    "bedrockModelId": "us.amazon.nova-lite-v1:0",
    "channelCount": 12,
    "turnCredentialReuse": "shared",
    "natGateways": 2,
    "jwtIssuerUrl": "https://login.example.com/tenant",
    "jwtAudience": ["web-client", "mobile-client"],
    "allowedOrigins": ["https://voice.example.com", "http://localhost:7860"],
    "turnLatencyAlarmP95Ms": 1800,
    "brokerTransports": ["webrtc"],
}


@dataclass(frozen=True)
class Synthesized:
    """One synthesized app: its stack, template, the pool's nested templates and the assembly directory."""

    stack: Stack
    template: Template
    template_json: dict[str, Any]
    pool_json: list[dict[str, Any]]
    outdir: Path

    @property
    def template_files(self) -> list[Path]:
        """The stack's template and every nested template, as cfn-lint and CloudFormation see them."""
        return sorted(self.outdir.glob("*.template.json"))


def synthesize(
    tmp_path_factory: pytest.TempPathFactory, env: Environment | None = None, **overrides: Any
) -> Synthesized:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = App(outdir=str(outdir), context={**CDK_CONTEXT, **overrides})
    stack = build_app(app, env=env or Environment())
    assembly = app.synth()  # cdk-nag runs here and raises on any unacknowledged finding
    template_json = assembly.get_stack_by_name(stack.stack_name).template
    pool_json = [json.loads((outdir / part.template_file).read_text()) for part in stack.pool.parts]
    return Synthesized(stack, Template.from_json(template_json), template_json, pool_json, outdir)


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """cdk.json as it is: nova-sonic, a Cognito user pool, the pool sized from 10 sessions/s."""
    return synthesize(tmp_path_factory)


@pytest.fixture(scope="module")
def external_idp_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The other branches: cascade over an inference profile, an external IdP, an explicit pool size.

    Deployed to a named account and region, as the CLI does with credentials: ARNs then carry
    literal partitions and regions, which the cdk-nag acknowledgments must still match.
    """
    zones = {f"availability-zones:account={ACCOUNT}:region={REGION}": [f"{REGION}a", f"{REGION}b", f"{REGION}c"]}
    return synthesize(
        tmp_path_factory, env=Environment(account=ACCOUNT, region=REGION), **zones, **EXTERNAL_IDP_CONTEXT
    )


@pytest.fixture(scope="module", params=["default", "external_idp"])
def any_app(request: pytest.FixtureRequest) -> Synthesized:
    app: Synthesized = request.getfixturevalue(f"{request.param}_app")
    return app


def resources(synth: Synthesized, resource_type: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = synth.template.find_resources(resource_type)
    return found


def only(synth: Synthesized, resource_type: str) -> tuple[str, dict[str, Any]]:
    found = resources(synth, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.items()))


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(synth: Synthesized) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement, from policies and from roles' inline policies, with its owner's logical id."""
    for logical_id, policy in resources(synth, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield logical_id, statement
    for logical_id, role in resources(synth, "AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                yield logical_id, statement


def role_statements(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    """The statements of the policies attached to one role."""
    statements = []
    for policy in resources(synth, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def channels_of(pool_json: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every channel of the pool, in name order, from its nested templates."""
    found = [
        resource
        for template in pool_json
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::KinesisVideo::SignalingChannel"
    ]
    return sorted(found, key=lambda channel: channel["Properties"]["Name"])


def pool_arn_pattern() -> dict[str, Any]:
    """The ARN pattern of the pool's channels, as the template spells it."""
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":kinesisvideo:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":channel/PipecatVoiceAgent-turn-*/*",
            ],
        ]
    }


def runtime_id(synth: Synthesized) -> str:
    return only(synth, "AWS::BedrockAgentCore::Runtime")[0]


def runtime_role_id(synth: Synthesized) -> str:
    role_arn = only(synth, "AWS::BedrockAgentCore::Runtime")[1]["Properties"]["RoleArn"]
    role_id: str = role_arn["Fn::GetAtt"][0]
    return role_id


def functions_by_handler(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        function["Properties"]["Handler"]: function for function in resources(synth, "AWS::Lambda::Function").values()
    }


def broker_function(synth: Synthesized) -> dict[str, Any]:
    return functions_by_handler(synth)["broker.lambda_handler.handler"]


def function_role_id(synth: Synthesized) -> str:
    role_id: str = broker_function(synth)["Properties"]["Role"]["Fn::GetAtt"][0]
    return role_id


# --- TURN channel pool -------------------------------------------------------------------------


def test_default_pool_is_sized_for_callers_that_do_not_coordinate(default_app: Synthesized) -> None:
    expected = recommended_channel_count(
        CDK_CONTEXT["peakSessionsPerSecond"],
        calls_per_session=CDK_CONTEXT["callsPerSession"],
        headroom=CDK_CONTEXT["channelHeadroom"],
        max_throttle_rate=CDK_CONTEXT["maxThrottleRate"],
    )
    assert len(channels_of(default_app.pool_json)) == expected == default_app.stack.pool.channel_count
    default_app.template.resource_count_is("AWS::KinesisVideo::SignalingChannel", 0)  # all in the nested stack
    default_app.template.resource_count_is("AWS::CloudFormation::Stack", 1)


def test_channel_count_override_wins(external_idp_app: Synthesized) -> None:
    assert len(channels_of(external_idp_app.pool_json)) == EXTERNAL_IDP_CONTEXT["channelCount"]


def pool_json(tmp_path: Path, **overrides: Any) -> list[dict[str, Any]]:
    """Only the pool, in its own stack, from the same context parsing as the app (and with cdk-nag)."""
    app = App(outdir=str(tmp_path), context={**CDK_CONTEXT, **overrides})
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = Stack(app, "PipecatVoiceAgent")
    pool = TurnChannelPool(stack, "TurnPool", settings=AppConfig.from_context(app.node.try_get_context).turn_pool)
    return [Template.from_stack(part).to_json() for part in pool.parts]


@pytest.mark.parametrize(
    ("peak", "calls", "headroom"),
    [(0.5, 2, 0.25), (1, 2, 0.25), (7, 2, 0.25), (12.5, 2, 0.5), (15, 1, 0), (30, 1, 0.1)],
)
def test_pool_size_equals_the_sizing_function(tmp_path: Path, peak: float, calls: int, headroom: float) -> None:
    templates = pool_json(tmp_path, peakSessionsPerSecond=peak, callsPerSession=calls, channelHeadroom=headroom)
    assert len(channels_of(templates)) == recommended_channel_count(peak, calls_per_session=calls, headroom=headroom)


def test_pool_override_ignores_the_peak(tmp_path: Path) -> None:
    assert len(channels_of(pool_json(tmp_path, peakSessionsPerSecond=1000, channelCount="3"))) == 3


def test_a_pool_of_any_size_is_split_into_nested_stacks_created_in_batches(tmp_path: Path) -> None:
    count = recommended_channel_count(1000)  # about 1,500 channels: more than one stack may hold
    templates = pool_json(tmp_path, peakSessionsPerSecond=1000)
    assert len(templates) == -(-count // CHANNELS_PER_STACK) > 1
    assert all(len(template["Resources"]) <= CHANNELS_PER_STACK < 500 for template in templates)
    names = [channel["Properties"]["Name"] for channel in channels_of(templates)]
    assert names == sorted(f"PipecatVoiceAgent-turn-{index:03d}" for index in range(count))
    for template in templates:
        channels = list(template["Resources"].items())
        # Each channel waits for the one CREATION_BATCH before it: never more creations in flight.
        for position, (_, channel) in enumerate(channels):
            expected = [channels[position - CREATION_BATCH][0]] if position >= CREATION_BATCH else None
            assert channel.get("DependsOn") == expected


def test_channels_are_single_master_with_stack_unique_names(default_app: Synthesized) -> None:
    channels = channels_of(default_app.pool_json)
    names = [channel["Properties"]["Name"] for channel in channels]
    assert names == [f"PipecatVoiceAgent-turn-{index:03d}" for index in range(len(names))]
    assert {channel["Properties"]["Type"] for channel in channels} == {"SINGLE_MASTER"}


def policies_of_role(synth: Synthesized, role_id: str) -> set[str]:
    return {
        logical_id
        for logical_id, policy in resources(synth, "AWS::IAM::Policy").items()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
    }


def manifest_role_id(synth: Synthesized) -> str:
    function = functions_by_handler(synth)["broker.pool_manifest.handler"]
    role_id: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role_id


def test_only_the_broker_mints_and_only_the_manifest_lists_the_pools_channels(any_app: Synthesized) -> None:
    granted = [
        (owner, statement)
        for owner, statement in policy_statements(any_app)
        if any(action.startswith("kinesisvideo:") for action in as_list(statement["Action"]))
    ]
    broker = policies_of_role(any_app, function_role_id(any_app))
    manifest = policies_of_role(any_app, manifest_role_id(any_app))
    # The agent gets its TURN credentials with each offer: its role has no KVS permission at all.
    assert {owner for owner, _ in granted} == broker | manifest and len(broker | manifest) == 2

    def actions_of(owners: set[str]) -> dict[tuple[str, ...], dict[str, Any]]:
        return {tuple(sorted(as_list(st["Action"]))): st for who, st in granted if who in owners}

    pool_arns = "channel/PipecatVoiceAgent-turn-*/*"
    # The broker mints credentials (and looks an endpoint up again after a failure); it never lists.
    (minting,) = actions_of(broker).items()
    assert minting[0] == tuple(sorted(ICE_CREDENTIAL_ACTIONS)) and pool_arns in json.dumps(minting[1]["Resource"])
    # The manifest's function lists the pool and looks its endpoints up; it mints nothing.
    writer = actions_of(manifest)
    assert set(writer) == {(ENDPOINT_ACTION,), (DISCOVERY_ACTION,)}
    assert pool_arns in json.dumps(writer[(ENDPOINT_ACTION,)]["Resource"])
    assert writer[(DISCOVERY_ACTION,)]["Resource"] == "*"  # ListSignalingChannels has no resource type


def manifest_secret_id(synth: Synthesized) -> str:
    secrets = resources(synth, "AWS::SecretsManager::Secret")
    (secret_id,) = [key for key, secret in secrets.items() if "TURN pool" in secret["Properties"]["Description"]]
    return secret_id


def test_the_manifest_is_written_after_the_channels_and_read_by_the_broker(default_app: Synthesized) -> None:
    secret_id = manifest_secret_id(default_app)
    _, manifest = only(default_app, "Custom::TurnPoolManifest")
    token = manifest["Properties"].pop("ServiceToken")
    assert token["Fn::GetAtt"][0].startswith("TurnPoolManifestFunction") and token["Fn::GetAtt"][1] == "Arn"
    assert manifest["Properties"] == {
        "Prefix": "PipecatVoiceAgent-turn-",
        "ChannelCount": str(default_app.stack.pool.channel_count),
        "SecretArn": {"Ref": secret_id},
    }
    nested = resources(default_app, "AWS::CloudFormation::Stack")
    assert set(manifest["DependsOn"]) >= set(nested)  # every channel exists before it is listed
    # Only the manifest function writes the secret, and only with PutSecretValue.
    writers = [
        (owner, statement)
        for owner, statement in policy_statements(default_app)
        if any(action.startswith("secretsmanager:Put") or "Update" in action for action in as_list(statement["Action"]))
    ]
    assert [(owner, statement["Action"], statement["Resource"]) for owner, statement in writers] == [
        (
            *policies_of_role(default_app, manifest_role_id(default_app)),
            "secretsmanager:PutSecretValue",
            {"Ref": secret_id},
        )
    ]
    readers = [
        owner
        for owner, statement in policy_statements(default_app)
        if "secretsmanager:GetSecretValue" in as_list(statement["Action"])
        and {"Ref": secret_id} in as_list(statement["Resource"])
    ]
    assert set(readers) == policies_of_role(default_app, function_role_id(default_app))
    env = broker_function(default_app)["Properties"]["Environment"]["Variables"]
    assert env["TURN_POOL_MANIFEST_SECRET_ARN"] == {"Ref": secret_id}


def test_the_runtime_gets_no_pool_configuration(any_app: Synthesized) -> None:
    variables = only(any_app, "AWS::BedrockAgentCore::Runtime")[1]["Properties"]["EnvironmentVariables"]
    assert not [name for name in variables if name.startswith("TURN_")]


def test_no_iam_statement_has_a_wildcard_action(any_app: Synthesized) -> None:
    for owner, statement in policy_statements(any_app):
        for action in as_list(statement.get("Action", [])):
            assert action != "*" and not action.endswith(":*") and "*" not in action, (owner, action)
        assert "NotAction" not in statement, owner


def test_no_managed_policies_are_attached(any_app: Synthesized) -> None:
    for logical_id, role in resources(any_app, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], logical_id


# --- Network -----------------------------------------------------------------------------------


def test_vpc_has_flow_logs_and_the_configured_nat_gateways(
    default_app: Synthesized, external_idp_app: Synthesized
) -> None:
    default_app.template.resource_count_is("AWS::EC2::NatGateway", CDK_CONTEXT["natGateways"])
    external_idp_app.template.resource_count_is("AWS::EC2::NatGateway", EXTERNAL_IDP_CONTEXT["natGateways"])
    default_app.template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
    subnets = resources(default_app, "AWS::EC2::Subnet").values()
    assert len(subnets) == 4
    assert len({json.dumps(subnet["Properties"]["AvailabilityZone"]) for subnet in subnets}) == 2


def private_subnet_refs(synth: Synthesized) -> list[dict[str, str]]:
    return [
        {"Ref": logical_id}
        for logical_id, subnet in resources(synth, "AWS::EC2::Subnet").items()
        if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Properties"]["Tags"]
    ]


def runtime_security_group(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    network = only(synth, "AWS::BedrockAgentCore::Runtime")[1]["Properties"]["NetworkConfiguration"]
    groups = network["NetworkModeConfig"]["SecurityGroups"]
    assert len(groups) == 1
    group_id = groups[0]["Fn::GetAtt"][0]
    return group_id, resources(synth, "AWS::EC2::SecurityGroup")[group_id]


def test_runtime_runs_in_vpc_mode_in_the_private_subnets(default_app: Synthesized) -> None:
    private = private_subnet_refs(default_app)
    assert len(private) == 2
    default_app.template.has_resource_properties(
        "AWS::BedrockAgentCore::Runtime",
        {
            "NetworkConfiguration": {
                "NetworkMode": "VPC",
                "NetworkModeConfig": {
                    "Subnets": Match.array_equals(private),
                    "SecurityGroups": [{"Fn::GetAtt": [Match.string_like_regexp("RuntimeSecurityGroup"), "GroupId"]}],
                },
            }
        },
    )


def test_runtime_security_group_allows_only_tcp_and_udp_443_out(default_app: Synthesized) -> None:
    group_id, group = runtime_security_group(default_app)
    egress = group["Properties"]["SecurityGroupEgress"]
    assert sorted((rule["IpProtocol"], rule["FromPort"], rule["ToPort"], rule["CidrIp"]) for rule in egress) == [
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("udp", 443, 443, "0.0.0.0/0"),
    ]
    assert "SecurityGroupIngress" not in group["Properties"]
    for kind in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
        for logical_id, rule in resources(default_app, kind).items():
            assert {"Fn::GetAtt": [group_id, "GroupId"]} not in rule["Properties"].values(), logical_id


# --- Agent runtime -----------------------------------------------------------------------------


def test_runtime_environment_lifecycle_and_tracing(default_app: Synthesized) -> None:
    default_app.template.has_resource_properties(
        "AWS::BedrockAgentCore::Runtime",
        {
            "AgentRuntimeArtifact": {"ContainerConfiguration": {"ContainerUri": Match.any_value()}},
            "EnvironmentVariables": {
                "AWS_REGION": {"Ref": "AWS::Region"},
                "AGENT_PIPELINE": "nova-sonic",
                "AGENT_NOVA_SONIC_MODEL_ID": CDK_CONTEXT["novaSonicModelId"],
                "AGENT_BEDROCK_MODEL_ID": CDK_CONTEXT["bedrockModelId"],
                "AGENT_METRICS": "emf",
            },
            "LifecycleConfiguration": {
                "IdleRuntimeSessionTimeout": CDK_CONTEXT["idleSessionTimeoutSeconds"],
                "MaxLifetime": CDK_CONTEXT["maxSessionLifetimeSeconds"],
            },
        },
    )
    default_app.template.has_resource_properties("AWS::Logs::DeliveryDestination", {"DeliveryDestinationType": "XRAY"})


def test_every_agent_variable_the_stack_sets_is_one_the_agent_reads(
    default_app: Synthesized, tmp_path_factory: pytest.TempPathFactory
) -> None:
    agent_config = (REPO_ROOT / "agent" / "config.py").read_text()
    cascade = synthesize(tmp_path_factory, agentPipeline="cascade")
    for app in (default_app, cascade):
        (runtime,) = resources(app, "AWS::BedrockAgentCore::Runtime").values()
        names = [name for name in runtime["Properties"]["EnvironmentVariables"] if name.startswith("AGENT_")]
        assert names
        for name in names:
            assert f'"{name}"' in agent_config, f"the agent never reads {name}"
    (runtime,) = resources(cascade, "AWS::BedrockAgentCore::Runtime").values()
    assert runtime["Properties"]["EnvironmentVariables"]["AGENT_VOICE"] == CDK_CONTEXT["pollyVoiceId"]
    (runtime,) = resources(default_app, "AWS::BedrockAgentCore::Runtime").values()
    assert "AGENT_VOICE" not in runtime["Properties"]["EnvironmentVariables"]


def test_agent_image_is_arm64_built_from_the_repository_root(default_app: Synthesized) -> None:
    manifest = json.loads((default_app.outdir / "PipecatVoiceAgent.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["platform"] == "linux/arm64"
    assert image["source"]["dockerFile"] == "agent/Dockerfile"
    context = default_app.outdir / image["source"]["directory"]
    # Only what agent/Dockerfile.dockerignore admits: the agent and the broker library.
    assert sorted(path.name for path in context.iterdir()) == ["agent", "broker"]
    assert not list(context.rglob("__pycache__"))


def bedrock_statements(synth: Synthesized) -> list[dict[str, Any]]:
    return [
        statement
        for statement in role_statements(synth, runtime_role_id(synth))
        if any(action.startswith("bedrock:") for action in as_list(statement["Action"]))
    ]


def test_nova_sonic_runtime_may_invoke_only_the_nova_sonic_model(default_app: Synthesized) -> None:
    (statement,) = bedrock_statements(default_app)
    assert as_list(statement["Action"]) == ["bedrock:InvokeModel"]
    resource = json.dumps(statement["Resource"])
    assert f"::foundation-model/{CDK_CONTEXT['novaSonicModelId']}" in resource
    assert not any(
        action.startswith(("transcribe:", "polly:"))
        for statement in role_statements(default_app, runtime_role_id(default_app))
        for action in as_list(statement["Action"])
    )


def test_cascade_runtime_may_invoke_the_inference_profile_and_its_model(external_idp_app: Synthesized) -> None:
    (statement,) = bedrock_statements(external_idp_app)
    assert sorted(as_list(statement["Action"])) == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    resources_json = [json.dumps(resource) for resource in as_list(statement["Resource"])]
    assert len(resources_json) == 2
    assert any(":inference-profile/us.amazon.nova-lite-v1:0" in resource for resource in resources_json)
    assert any(":bedrock:*::foundation-model/amazon.nova-lite-v1:0" in resource for resource in resources_json)
    external_idp_app.template.has_resource_properties(
        "AWS::BedrockAgentCore::Runtime",
        {"EnvironmentVariables": Match.object_like({"AGENT_PIPELINE": "cascade"})},
    )
    external_idp_app.template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Environment": {"Variables": Match.object_like({"TURN_CREDENTIAL_REUSE": "shared"})}},
    )


def test_local_pipeline_gets_no_model_permissions(tmp_path_factory: pytest.TempPathFactory) -> None:
    local = synthesize(tmp_path_factory, agentPipeline="local")
    assert bedrock_statements(local) == []


# --- Broker API ------------------------------------------------------------------------------


def test_broker_lambda_is_arm64_python_with_its_environment(default_app: Synthesized) -> None:
    default_app.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Architectures": ["arm64"],
            "Runtime": "python3.12",
            "Handler": "broker.lambda_handler.handler",
            "Environment": {
                "Variables": {
                    "TURN_CHANNEL_PREFIX": "PipecatVoiceAgent-turn-",
                    "TURN_CREDENTIAL_REUSE": "per-session",
                    "AGENT_INVOKER": "agentcore",
                    "AGENT_RUNTIME_ARN": {"Fn::GetAtt": [runtime_id(default_app), "AgentRuntimeArn"]},
                    "ALLOWED_ORIGINS": ",".join(CDK_CONTEXT["allowedOrigins"]),
                    "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                    "SESSION_SIGNING_KEY_SECRET_ARN": {"Ref": secret_id(default_app)},
                    "BROKER_TRANSPORTS": "webrtc,websocket",
                    "WEBSOCKET_URL_EXPIRES_SECONDS": "60",
                }
            },
        },
    )


def secret_id(app: Synthesized) -> str:
    """The session signing key's logical id."""
    secrets = resources(app, "AWS::SecretsManager::Secret")
    (key,) = [key for key in secrets if key != manifest_secret_id(app)]
    return key


def test_broker_reads_only_its_session_signing_key_and_the_pool_manifest(default_app: Synthesized) -> None:
    default_app.template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True}},
    )
    reads = [
        statement
        for statement in role_statements(default_app, function_role_id(default_app))
        if any(action.startswith("secretsmanager:") for action in as_list(statement["Action"]))
    ]
    assert len(reads) == 1
    assert sorted(map(json.dumps, as_list(reads[0]["Resource"]))) == sorted(
        json.dumps({"Ref": key}) for key in (secret_id(default_app), manifest_secret_id(default_app))
    )
    assert set(as_list(reads[0]["Action"])) == {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}


def test_broker_bundle_holds_the_broker_package_and_its_dependencies(default_app: Synthesized) -> None:
    code = broker_function(default_app)["Properties"]["Code"]
    bundle = default_app.outdir / f"asset.{code['S3Key'].removesuffix('.zip')}"
    assert (bundle / "broker" / "__init__.py").is_file()
    assert (bundle / "aws_lambda_powertools").is_dir()
    assert (bundle / "cachetools").is_dir()
    assert (bundle / "pydantic").is_dir() and (bundle / "aws_xray_sdk").is_dir()
    assert list((bundle / "pydantic_core").glob("*aarch64*.so"))  # ARM64 wheels, not this machine's
    assert (bundle / "broker" / "lambda_handler.py").is_file()
    assert not (bundle / "broker" / "requirements-lambda.txt").exists()
    # Bytecode ships compiled (unchecked-hash: no timestamps), so cold starts do not compile sources.
    pyc = next((bundle / "broker" / "__pycache__").glob("lambda_handler.cpython-312.pyc"))
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01  # hash-based, unchecked
    assert list((bundle / "pydantic" / "__pycache__").glob("*.cpython-312.pyc"))
    # botocore, not boto3, and botocore's data for the services the broker calls only.
    assert not (bundle / "boto3").exists() and not (bundle / "s3transfer").exists()
    data = bundle / "botocore" / "data"
    assert {entry.name for entry in data.iterdir() if entry.is_dir()} == set(AWS_SERVICES)
    assert (data / "endpoints.json").is_file() and (data / "partitions.json").is_file()


def agentcore_statements(synth: Synthesized) -> list[dict[str, Any]]:
    """The broker role's statements about AgentCore."""
    return [
        statement
        for statement in role_statements(synth, function_role_id(synth))
        if any(action.startswith("bedrock-agentcore:") for action in as_list(statement["Action"]))
    ]


def this_runtime_and_its_endpoints(synth: Synthesized) -> list[Any]:
    """``[runtime ARN, runtime ARN/*]`` as the template spells them."""
    arn = {"Fn::GetAtt": [runtime_id(synth), "AgentRuntimeArn"]}
    return [arn, {"Fn::Join": ["", [arn, "/*"]]}]


def test_broker_may_invoke_and_open_the_websocket_of_only_this_agent_runtime(default_app: Synthesized) -> None:
    (statement,) = agentcore_statements(default_app)
    assert statement["Effect"] == "Allow"
    # The WebSocket action: a presigned URL is authorized as the role that signed it.
    assert sorted(as_list(statement["Action"])) == [
        "bedrock-agentcore:InvokeAgentRuntime",
        "bedrock-agentcore:InvokeAgentRuntimeWithWebSocketStream",
    ]
    assert as_list(statement["Resource"]) == this_runtime_and_its_endpoints(default_app)


def test_without_websocket_offered_the_broker_cannot_open_the_websocket(external_idp_app: Synthesized) -> None:
    (statement,) = agentcore_statements(external_idp_app)
    assert as_list(statement["Action"]) == ["bedrock-agentcore:InvokeAgentRuntime"]
    assert as_list(statement["Resource"]) == this_runtime_and_its_endpoints(external_idp_app)
    variables = broker_function(external_idp_app)["Properties"]["Environment"]["Variables"]
    assert variables["BROKER_TRANSPORTS"] == "webrtc"
    assert "WEBSOCKET_URL_EXPIRES_SECONDS" not in variables


def test_the_runtime_speaks_http_which_serves_its_websocket_too(any_app: Synthesized) -> None:
    # AgentCore has no WebSocket protocol setting: an HTTP runtime's container serves /ws on 8080.
    any_app.template.has_resource_properties("AWS::BedrockAgentCore::Runtime", {"ProtocolConfiguration": "HTTP"})


def test_every_route_requires_the_jwt_authorizer(any_app: Synthesized) -> None:
    authorizer_id, _ = only(any_app, "AWS::ApiGatewayV2::Authorizer")
    routes = resources(any_app, "AWS::ApiGatewayV2::Route").values()
    assert {route["Properties"]["RouteKey"] for route in routes} == ROUTE_KEYS
    for route in routes:
        assert route["Properties"]["AuthorizationType"] == "JWT"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}


def test_default_app_authorizes_cognito_tokens_of_its_own_client(default_app: Synthesized) -> None:
    pool_id, _ = only(default_app, "AWS::Cognito::UserPool")
    client_id, _ = only(default_app, "AWS::Cognito::UserPoolClient")
    default_app.template.has_resource_properties(
        "AWS::Cognito::UserPool", {"AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True}}
    )
    default_app.template.has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "JWT",
            "IdentitySource": ["$request.header.Authorization"],
            "JwtConfiguration": {
                "Audience": [{"Ref": client_id}],
                "Issuer": {"Fn::Join": ["", Match.array_with([{"Ref": pool_id}])]},
            },
        },
    )
    outputs = default_app.template.find_outputs("*")
    assert {"UserPoolId", "UserPoolClientId"} <= set(outputs)


def test_external_identity_provider_replaces_cognito(external_idp_app: Synthesized) -> None:
    external_idp_app.template.resource_count_is("AWS::Cognito::UserPool", 0)
    external_idp_app.template.has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "JWT",
            "JwtConfiguration": {
                "Issuer": EXTERNAL_IDP_CONTEXT["jwtIssuerUrl"],
                "Audience": EXTERNAL_IDP_CONTEXT["jwtAudience"],
            },
        },
    )
    assert "UserPoolId" not in external_idp_app.template.find_outputs("*")


def test_cors_allows_only_the_configured_origins(external_idp_app: Synthesized) -> None:
    external_idp_app.template.has_resource_properties(
        "AWS::ApiGatewayV2::Api",
        {
            "ProtocolType": "HTTP",
            "CorsConfiguration": {
                "AllowOrigins": EXTERNAL_IDP_CONTEXT["allowedOrigins"],
                "AllowMethods": Match.array_equals(["POST", "PATCH", "OPTIONS"]),
                "AllowHeaders": Match.array_equals(["authorization", "content-type"]),
            },
        },
    )


def test_stage_is_throttled_and_access_logged(default_app: Synthesized) -> None:
    default_app.template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "AutoDeploy": True,
            "DefaultRouteSettings": {
                "ThrottlingRateLimit": CDK_CONTEXT["apiThrottleRateLimit"],
                "ThrottlingBurstLimit": CDK_CONTEXT["apiThrottleBurstLimit"],
            },
            "AccessLogSettings": {
                "DestinationArn": {"Fn::GetAtt": [Match.string_like_regexp("AccessLogs"), "Arn"]},
                "Format": Match.string_like_regexp(r"\$context\.requestId"),
            },
        },
    )


# --- Observability and outputs ---------------------------------------------------------------


def math_alarms(synth: Synthesized) -> dict[frozenset[str], dict[str, Any]]:
    """The metric-math alarms, by the ids of their queries."""
    return {
        frozenset(query["Id"] for query in alarm["Properties"]["Metrics"]): alarm["Properties"]
        for alarm in resources(synth, "AWS::CloudWatch::Alarm").values()
        if "Metrics" in alarm["Properties"]
    }


def test_the_throttle_alarm_fires_above_the_rate_the_pool_was_sized_for(default_app: Synthesized) -> None:
    alarms = math_alarms(default_app)
    assert len(alarms) == 2  # throttles per call, and the agent's turn latency
    alarm = next(alarm for ids, alarm in alarms.items() if "throttles" in ids)
    assert alarm["Threshold"] == CDK_CONTEXT["maxThrottleRate"]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    by_id = {query["Id"]: query for query in alarm["Metrics"]}
    assert by_id["throttles"]["MetricStat"]["Metric"]["MetricName"] == MetricName.KVS_THROTTLES
    assert by_id["calls"]["MetricStat"]["Metric"]["MetricName"] == MetricName.KVS_CALLS
    for query in ("throttles", "calls"):  # the totals over both peers
        metric = by_id[query]["MetricStat"]["Metric"]
        assert metric["Dimensions"] == [{"Name": SERVICE_DIMENSION, "Value": SERVICE_NAME}]
        assert metric["Namespace"] == METRICS_NAMESPACE
    ratio = next(query for query in alarm["Metrics"] if query.get("ReturnData", True) and "Expression" in query)
    assert "throttles / calls" in ratio["Expression"]


def test_the_dashboard_shows_each_peers_calls_and_throttles(default_app: Synthesized) -> None:
    body = json.dumps(only(default_app, "AWS::CloudWatch::Dashboard")[1]["Properties"]["DashboardBody"])
    for peer in ("browser", "agent"):
        assert f'\\"peer\\",\\"{peer}\\"' in body
    assert "KVS throttles per call" in body


def test_alarms_watch_the_metrics_the_broker_emits(default_app: Synthesized) -> None:
    for metric, threshold in (
        (MetricName.POOL_EXHAUSTED, 1),
        (MetricName.REQUEST_LATENCY, CDK_CONTEXT["latencyAlarmP99Ms"]),
    ):
        default_app.template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": METRICS_NAMESPACE,
                "MetricName": metric,
                "Dimensions": [{"Name": SERVICE_DIMENSION, "Value": SERVICE_NAME}],
                "Threshold": threshold,
            },
        )
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "Errors", "Namespace": "AWS/Lambda"}
    )
    default_app.template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": MetricName.REQUEST_LATENCY, "ExtendedStatistic": "p99"}
    )
    default_app.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


@pytest.mark.parametrize(("app", "pipeline"), [("default_app", "nova-sonic"), ("external_idp_app", "cascade")])
def test_the_turn_latency_alarm_reads_the_agents_p95_with_the_threshold_from_context(
    app: str, pipeline: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(app)
    context = {**CDK_CONTEXT, **(EXTERNAL_IDP_CONTEXT if app == "external_idp_app" else {})}
    alarm = math_alarms(synth)[frozenset({"p95", "turns", "expr_1"})]
    assert alarm["Threshold"] == context["turnLatencyAlarmP95Ms"]
    assert (alarm["ComparisonOperator"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
        "GreaterThanThreshold",
        5,
        3,
    )
    assert alarm["TreatMissingData"] == "notBreaching"
    by_id = {query["Id"]: query for query in alarm["Metrics"]}
    assert by_id["expr_1"]["Expression"] == f"IF(turns >= {MIN_TURNS_FOR_PERCENTILE}, p95, 0)"
    for query, statistic in (("p95", "p95"), ("turns", "SampleCount")):
        stat = by_id[query]["MetricStat"]
        assert (stat["Stat"], stat["Period"]) == (statistic, 60)
        assert stat["Metric"] == {
            "Namespace": agent_telemetry.METRICS_NAMESPACE,
            "MetricName": agent_telemetry.MetricName.TURN_LATENCY,
            # The pipeline-only series: one percentile over every transport.
            "Dimensions": [{"Name": agent_telemetry.PIPELINE_DIMENSION, "Value": pipeline}],
        }
        assert by_id[query]["ReturnData"] is False


def dashboard_widgets(synth: Synthesized) -> list[dict[str, Any]]:
    """The dashboard's widgets, from its body (a Fn::Join of literals and references)."""
    body = only(synth, "AWS::CloudWatch::Dashboard")[1]["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    text = "".join(part if isinstance(part, str) else "REF" for part in parts)
    widgets: list[dict[str, Any]] = json.loads(text)["widgets"]
    return widgets


def test_the_dashboard_shows_turn_latency_time_to_first_word_and_each_services_share(
    default_app: Synthesized,
) -> None:
    by_title = {
        widget["properties"].get("title", ""): widget["properties"] for widget in dashboard_widgets(default_app)
    }
    names = agent_telemetry.MetricName
    namespace, pipeline = agent_telemetry.METRICS_NAMESPACE, CDK_CONTEXT["agentPipeline"]

    def graphed(title_start: str) -> list[list[Any]]:
        (properties,) = [props for title, props in by_title.items() if title.startswith(title_start)]
        metrics: list[list[Any]] = properties["metrics"]
        return metrics

    turn = graphed("Turn latency")
    rollup = [namespace, names.TURN_LATENCY, agent_telemetry.PIPELINE_DIMENSION, pipeline]
    assert {(m[-1]["stat"], m[-1]["label"]) for m in turn if m[:4] == rollup and len(m) == 5} >= {
        ("p50", "p50"),
        ("p95", "p95"),
        ("SampleCount", "Turns"),
    }
    per_transport = {m[5] for m in turn if m[:2] == [namespace, names.TURN_LATENCY] and len(m) == 7}
    assert per_transport == set(agent_telemetry.TRANSPORTS)
    (properties,) = [props for title, props in by_title.items() if title.startswith("Turn latency")]
    assert properties["annotations"]["horizontal"][0]["value"] == CDK_CONTEXT["turnLatencyAlarmP95Ms"]
    first_word = graphed("Time to first word")
    assert {m[-1]["stat"] for m in first_word if m[1] == names.TIME_TO_FIRST_WORD} == {"p50", "p95", "SampleCount"}
    for metric_name in (names.SERVICE_TTFB, names.SERVICE_PROCESSING):
        searches = [
            m[0]["expression"]
            for props in by_title.values()
            for m in props.get("metrics", [])
            if "expression" in m[0] and metric_name in m[0]["expression"]
        ]
        assert searches == [
            f'SEARCH(\'{{{namespace},pipeline,service}} MetricName="{metric_name}" pipeline="{pipeline}"\', '
            "'p95', 60)"
        ]
    alarms = next(props for props in by_title.values() if props.get("title") == "Alarms")
    assert len(alarms["alarms"]) == 5


def test_outputs(default_app: Synthesized) -> None:
    outputs = default_app.template.find_outputs("*")
    assert {"ApiUrl", "AgentRuntimeArn", "TurnChannelPrefix", "TurnChannelCount", "UserPoolId"} <= set(outputs)
    assert outputs["TurnChannelPrefix"]["Value"] == "PipecatVoiceAgent-turn-"
    assert outputs["TurnChannelCount"]["Value"] == str(default_app.stack.pool.channel_count)


# --- The checks themselves ---------------------------------------------------------------------


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path), context=CDK_CONTEXT)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = Stack(app, "Careless")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["kinesisvideo:GetIceServerConfig"], resources=["*"]))
    with pytest.raises(RuntimeError, match=r"AwsSolutions-IAM5\[Resource::\*\]"):
        app.synth()


def test_cfn_lint_finds_nothing(default_app: Synthesized, external_idp_app: Synthesized) -> None:
    for synth, region in ((default_app, "us-east-1"), (external_idp_app, REGION)):
        assert len(synth.template_files) == 2  # the stack and the pool's nested stack
        for template in synth.template_files:
            matches = lint_file(template, ManualArgs(regions=[region]))
            assert [str(match) for match in matches] == []


def test_a_stack_for_200_sessions_per_second_synthesizes_clean(tmp_path_factory: pytest.TempPathFactory) -> None:
    big = synthesize(tmp_path_factory, peakSessionsPerSecond=200)  # cdk-nag runs here
    assert len(channels_of(big.pool_json)) == recommended_channel_count(200) > 200
    lambda_env = broker_function(big)["Properties"]["Environment"]["Variables"]
    assert len(json.dumps(lambda_env)) < 4096  # the pool's size is in no environment variable
    for template in big.template_files:
        assert [str(match) for match in lint_file(template, ManualArgs(regions=["us-east-1"]))] == []


def test_bad_context_fails_cdk_synth_with_a_clear_message(tmp_path: Path) -> None:
    # The CDK CLI hands context to app.py through CDK_CONTEXT_JSON; no AWS call is made.
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, "peakSessionsPerSecond": "-3"}),
        "CDK_OUTDIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode != 0
    assert "error: context key 'peakSessionsPerSecond' must be > 0, got -3" in result.stderr
    assert "-c peakSessionsPerSecond=" in result.stderr


# --- Snapshot ----------------------------------------------------------------------------------


def mask_asset_hashes(*, data: Any, path: Any) -> Any:
    """Asset hashes change with every edit of broker/ or agent/: the snapshot is about the rest."""
    return ASSET_HASH.sub("<asset-hash>", data) if isinstance(data, str) else data


def test_template_snapshot(default_app: Synthesized, snapshot: SnapshotAssertion) -> None:
    assert default_app.template_json == snapshot(extension_class=JSONSnapshotExtension, matcher=mask_asset_hashes)


def test_pool_template_snapshot(default_app: Synthesized, snapshot: SnapshotAssertion) -> None:
    assert default_app.pool_json == snapshot(extension_class=JSONSnapshotExtension, matcher=mask_asset_hashes)

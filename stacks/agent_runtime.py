"""Agent runtime: the Pipecat voice agent container on Bedrock AgentCore Runtime, in the VPC."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Annotations, ArnFormat, CfnResource, Duration, IgnoreMode, Stack
from aws_cdk import aws_bedrockagentcore as agentcore
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.checks import acknowledge_wildcard, nag_arn, redundant_depends_on
from stacks.network import Network

REPO_ROOT = Path(__file__).resolve().parent.parent
AGENT_DOCKERFILE = "agent/Dockerfile"
"""The image is built from the repository root, so it gets ``broker/`` from the same commit."""

WEBSOCKET_INVOKE_ACTION = "bedrock-agentcore:InvokeAgentRuntimeWithWebSocketStream"
"""What opening the runtime's ``/ws`` WebSocket is authorized as, for SigV4 headers and presigned
URLs alike: the URL's signer must hold it (the browser that uses the URL holds no AWS identity)."""

_CROSS_REGION_PROFILE = re.compile(r"^(?:us|us-gov|eu|apac|ca|jp|au|global)\.(?P<model>.+)$")
"""Model ids like ``us.amazon.nova-lite-v1:0`` name a cross-region inference profile."""


class AgentPipeline(enum.StrEnum):
    """The agent's speech pipeline (``AGENT_PIPELINE``)."""

    NOVA_SONIC = "nova-sonic"
    CASCADE = "cascade"
    LOCAL = "local"


@dataclass(frozen=True)
class AgentRuntimeSettings:
    """What the agent runs and for how long a session may live.

    Attributes:
        pipeline: ``nova-sonic`` (speech to speech), ``cascade`` (Transcribe, Bedrock, Polly) or
            ``local`` (offline; no AWS AI service).
        nova_sonic_model_id: Bedrock model id for the ``nova-sonic`` pipeline.
        bedrock_model_id: Bedrock model id (or cross-region inference profile id) for ``cascade``.
        polly_voice_id: Polly voice for ``cascade``.
        idle_session_timeout_seconds: An idle session ends after this long (60 s to 8 h).
        max_lifetime_seconds: No session outlives this (60 s to 8 h).
        build_context: The image's build context (the repository root).
        dockerfile: The Dockerfile, relative to ``build_context``; ``<dockerfile>.dockerignore``
            next to it says which files enter the context.
    """

    pipeline: AgentPipeline = AgentPipeline.NOVA_SONIC
    nova_sonic_model_id: str = "amazon.nova-2-sonic-v1:0"
    bedrock_model_id: str = "amazon.nova-lite-v1:0"
    polly_voice_id: str = "Matthew"
    idle_session_timeout_seconds: int = 900
    max_lifetime_seconds: int = 28_800
    build_context: Path = REPO_ROOT
    dockerfile: str = AGENT_DOCKERFILE


def model_arns(scope: Construct, model_id: str) -> list[str]:
    """Return the ARNs an invocation of ``model_id`` is authorized against.

    A foundation model id gives its ARN in the stack's region. A cross-region inference profile id
    gives the profile's ARN and the model's ARN in every region the profile may route to.
    """
    stack = Stack.of(scope)
    profile = _CROSS_REGION_PROFILE.match(model_id)
    if profile is None:
        return [
            stack.format_arn(
                service="bedrock",
                account="",
                resource="foundation-model",
                resource_name=model_id,
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            )
        ]
    return [
        stack.format_arn(
            service="bedrock",
            resource="inference-profile",
            resource_name=model_id,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        ),
        f"arn:{stack.partition}:bedrock:*::foundation-model/{profile.group('model')}",
    ]


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    """Return the patterns of ``<dockerfile>.dockerignore``, which BuildKit applies to that Dockerfile.

    CDK only reads ``.dockerignore`` at the context root, so the same patterns are handed to the
    asset: the staged context (and its hash) then holds exactly what the image build sees.

    Raises:
        FileNotFoundError: The Dockerfile has no ignore file; without one the whole repository
            (virtualenv and node_modules included) would be staged.
    """
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = ignore_file.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class AgentRuntime(Construct):
    """The agent container (ARM64) on AgentCore Runtime in VPC mode, in the private subnets.

    The execution role the L2 construct creates holds what AgentCore itself needs (image pull,
    runtime logs, traces, its own metrics namespace). This construct adds the configured pipeline's
    model calls and nothing else: the agent's TURN credentials come with each offer from the broker,
    so the runtime has no KVS permission and no pool configuration.

    Attributes:
        runtime: The ``Runtime`` L2 construct.
        runtime_arn: The runtime's ARN.
        role: The runtime's execution role.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: AgentRuntimeSettings,
        network: Network,
    ) -> None:
        super().__init__(scope, construct_id)
        dockerfile = settings.build_context / settings.dockerfile
        if not dockerfile.is_file():
            raise FileNotFoundError(f"the agent image is built from {dockerfile}, which does not exist")
        stack = Stack.of(self)
        self.runtime = agentcore.Runtime(
            self,
            "Runtime",
            description="Pipecat voice agent (SmallWebRTC), TURN credentials from the broker's KVS channel pool",
            agent_runtime_artifact=agentcore.AgentRuntimeArtifact.from_asset(
                str(settings.build_context),
                file=settings.dockerfile,
                platform=ecr_assets.Platform.LINUX_ARM64,
                exclude=dockerignore_patterns(dockerfile),
                ignore_mode=IgnoreMode.DOCKER,
            ),
            network_configuration=agentcore.RuntimeNetworkConfiguration.using_vpc(
                self,
                vpc=network.vpc,
                vpc_subnets=network.private_subnets,
                security_groups=[network.runtime_security_group],
            ),
            environment_variables={
                "AWS_REGION": stack.region,
                "AGENT_PIPELINE": settings.pipeline.value,
                "AGENT_NOVA_SONIC_MODEL_ID": settings.nova_sonic_model_id,
                "AGENT_BEDROCK_MODEL_ID": settings.bedrock_model_id,
                # Turn latency as EMF on stdout: AgentCore ships it to the runtime's log group, where
                # CloudWatch extracts the metrics the dashboard and the turn latency alarm read.
                "AGENT_METRICS": "emf",
                # The Polly voice is the cascade pipeline's; the others keep their own default voice.
                **({"AGENT_VOICE": settings.polly_voice_id} if settings.pipeline.value == "cascade" else {}),
            },
            lifecycle_configuration=agentcore.LifecycleConfiguration(
                idle_runtime_session_timeout=Duration.seconds(settings.idle_session_timeout_seconds),
                max_lifetime=Duration.seconds(settings.max_lifetime_seconds),
            ),
            tracing_enabled=True,
        )
        Annotations.of(self.runtime).acknowledge_info(
            "aws-cdk-lib.aws-bedrockagentcore:containerUriValidationSkipped",
            "the image URI is the asset's ECR location, known only at deploy time",
        )
        self.runtime_arn = self.runtime.agent_runtime_arn
        self.role = self.runtime.role
        self._grant_pipeline(settings)
        self._acknowledge_service_wildcards(settings)
        redundant_depends_on(
            [
                child
                for child in self.runtime.node.find_all()
                if isinstance(child, CfnResource)
                and child.cfn_resource_type in {"AWS::BedrockAgentCore::Runtime", "AWS::Logs::Delivery"}
            ]
        )

    def grant_websocket_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to open this runtime's WebSocket, itself or through URLs it presigns.

        Scoped like the L2's ``grant_invoke_runtime``: the runtime and its endpoints (qualifiers).
        """
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[WEBSOCKET_INVOKE_ACTION],
            resource_arns=[self.runtime_arn, f"{self.runtime_arn}/*"],
        )

    def _grant_pipeline(self, settings: AgentRuntimeSettings) -> None:
        """Allow the model and speech calls of the configured pipeline only."""
        if settings.pipeline is AgentPipeline.NOVA_SONIC:
            self.runtime.add_to_role_policy(
                iam.PolicyStatement(
                    sid="NovaSonicSpeechToSpeech",
                    # InvokeModelWithBidirectionalStream is authorized as bedrock:InvokeModel.
                    actions=["bedrock:InvokeModel"],
                    resources=model_arns(self, settings.nova_sonic_model_id),
                )
            )
        elif settings.pipeline is AgentPipeline.CASCADE:
            arns = model_arns(self, settings.bedrock_model_id)
            self.runtime.add_to_role_policy(
                iam.PolicyStatement(
                    sid="BedrockLlm",
                    actions=["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                    resources=arns,
                )
            )
            self.runtime.add_to_role_policy(
                iam.PolicyStatement(
                    sid="SpeechServices",
                    actions=[
                        "transcribe:StartStreamTranscription",
                        "transcribe:StartStreamTranscriptionWebSocket",
                        "polly:SynthesizeSpeech",
                    ],
                    resources=["*"],
                )
            )

    def _acknowledge_service_wildcards(self, settings: AgentRuntimeSettings) -> None:
        """Explain each wildcard in the execution role; the L2 construct adds all but the speech ones."""
        role = self.runtime.role
        runtime_logs = "log-group:/aws/bedrock-agentcore/runtimes/*"
        acknowledge_wildcard(
            role,
            f"Resource::{nag_arn(self, 'logs', runtime_logs)}",
            "AgentCore creates the runtime's log groups under this prefix with names it chooses "
            "(runtime id and endpoint)",
        )
        acknowledge_wildcard(
            role,
            f"Resource::{nag_arn(self, 'logs', runtime_logs + ':log-stream:*')}",
            "log streams AgentCore names per session, inside the runtime log groups only",
        )
        acknowledge_wildcard(
            role,
            f"Resource::{nag_arn(self, 'logs', 'log-group:*')}",
            "logs:DescribeLogGroups lists groups and cannot be scoped to one; it is the only action here",
        )
        acknowledge_wildcard(
            role,
            "Resource::"
            + nag_arn(self, "bedrock-agentcore", "workload-identity-directory/default/workload-identity/*"),
            "the runtime's workload identity, created by AgentCore under a name it chooses in the "
            "account's default directory",
        )
        speech = (
            "; Transcribe streaming has no resource type and Polly SynthesizeSpeech only scopes to "
            "lexicons, none of which are used"
            if settings.pipeline is AgentPipeline.CASCADE
            else ""
        )
        acknowledge_wildcard(
            role,
            "Resource::*",
            "actions without resource-level permissions: ecr:GetAuthorizationToken (account-wide "
            "by design), X-Ray segments and sampling, and cloudwatch:PutMetricData restricted by "
            f"condition to the bedrock-agentcore namespace{speech}",
        )
        profile = _CROSS_REGION_PROFILE.match(settings.bedrock_model_id)
        if settings.pipeline is AgentPipeline.CASCADE and profile is not None:
            acknowledge_wildcard(
                role,
                "Resource::"
                + nag_arn(
                    self,
                    "bedrock",
                    f"foundation-model/{profile.group('model')}",
                    any_region=True,
                    with_account=False,
                ),
                "a cross-region inference profile routes to this one model in the regions it covers; "
                "the region is the only wildcard",
            )

"""TURN channel pool: KVS signaling channels used only to mint TURN credentials.

The pool is found by name, not by a list of ARNs: every channel is named ``<stack>-turn-NNN``. At
deploy time a custom resource lists them and resolves each one's endpoint into the pool manifest (a
secret, see :mod:`broker.pool_manifest`), which each broker instance reads once at cold start, so no
instance lists the pool or looks an endpoint up. Nothing about the pool's size has to fit in an
environment variable, an IAM policy or a stack output, so a pool of any size deploys: its channels
live in nested stacks of at most ``CHANNELS_PER_STACK`` (CloudFormation allows 500 resources per
stack).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from aws_cdk import ArnFormat, CustomResource, Duration, NestedStack, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisvideo as kinesisvideo
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from broker.sizing import DEFAULT_MAX_THROTTLE_RATE, recommended_channel_count
from stacks.checks import acknowledge, acknowledge_wildcard, nag_arn
from stacks.lambda_bundle import broker_function

ENDPOINT_ACTION = "kinesisvideo:GetSignalingChannelEndpoint"
ICE_CREDENTIAL_ACTIONS = (ENDPOINT_ACTION, "kinesisvideo:GetIceServerConfig")
"""What a caller needs to mint TURN credentials from a channel (and nothing else)."""
DISCOVERY_ACTION = "kinesisvideo:ListSignalingChannels"
"""How the pool is found by name. It has no resource type: it is granted on ``*``."""
MANIFEST_HANDLER = "broker.pool_manifest.handler"

CHANNELS_PER_STACK = 400
"""Channels per nested stack: under CloudFormation's 500 resources per stack, with room to spare."""
CREATION_BATCH = 20
"""Channels created at once. Each channel waits for the one ``CREATION_BATCH`` before it, so a deploy
never has more than this many ``CreateSignalingChannel`` calls in flight (KVS allows 50 per second per
account) however large the pool."""


class CredentialReuse(enum.StrEnum):
    """How the broker reuses TURN credentials (``TURN_CREDENTIAL_REUSE``)."""

    PER_SESSION = "per-session"
    SHARED = "shared"


@dataclass(frozen=True)
class TurnPoolSettings:
    """How many channels the pool holds and how callers use them.

    The channel count comes from :func:`broker.sizing.recommended_channel_count`, the same model as
    the sizing CLI's ``recommended_channels`` (callers that do not coordinate, throttled on at most
    ``max_throttle_rate`` of their calls), unless ``channel_count_override`` is set.

    Attributes:
        peak_sessions_per_sec: Peak rate of new sessions per second.
        calls_per_session: ``GetIceServerConfig`` calls one session makes (browser + agent = 2).
        headroom: Spare capacity as a fraction, e.g. 0.25 (the minimum pool's arithmetic).
        max_throttle_rate: Throttles per call the pool is sized for; the throttle alarm fires above it.
        channel_count_override: An explicit channel count, or ``None`` to size from the peak.
        credential_reuse: ``per-session`` or ``shared`` credentials.
    """

    peak_sessions_per_sec: float
    calls_per_session: int = 2
    headroom: float = 0.25
    max_throttle_rate: float = DEFAULT_MAX_THROTTLE_RATE
    channel_count_override: int | None = None
    credential_reuse: CredentialReuse = CredentialReuse.PER_SESSION

    @property
    def channel_count(self) -> int:
        """The number of channels the pool creates."""
        if self.channel_count_override is not None:
            return self.channel_count_override
        return recommended_channel_count(
            self.peak_sessions_per_sec,
            calls_per_session=self.calls_per_session,
            headroom=self.headroom,
            max_throttle_rate=self.max_throttle_rate,
        )


class TurnChannelPool(Construct):
    """N ``SINGLE_MASTER`` signaling channels named ``<stack>-turn-NNN``, in nested stacks.

    Channels are numbered from 0, so growing the pool adds channels and leaves the existing ones alone.

    Attributes:
        name_prefix: What every channel name of the pool begins with (``TURN_CHANNEL_PREFIX``).
        channel_count: How many channels the pool holds.
        parts: The nested stacks holding the channels, ``CHANNELS_PER_STACK`` at most each.
        channels: The ``AWS::KinesisVideo::SignalingChannel`` resources, in order.
        channel_arn_pattern: An ARN pattern matching the pool's channels and no channel of another stack.
        credential_reuse: The credential reuse mode callers should use.
        max_throttle_rate: Throttles per call the pool is sized for.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: TurnPoolSettings) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.name_prefix = f"{stack.stack_name}-turn-"
        self.channel_count = settings.channel_count
        self.credential_reuse = settings.credential_reuse
        self.max_throttle_rate = settings.max_throttle_rate
        self.parts: list[NestedStack] = []
        self.channels: list[kinesisvideo.CfnSignalingChannel] = []
        for part_index in range(math.ceil(self.channel_count / CHANNELS_PER_STACK)):
            self._part(part_index)
        self.channel_arn_pattern = stack.format_arn(
            service="kinesisvideo",
            resource="channel",
            resource_name=f"{self.name_prefix}*/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        self.manifest_secret = self._manifest_secret()
        self.manifest_function = self._manifest_function()
        self.manifest = self._manifest()

    def _part(self, part_index: int) -> None:
        """One nested stack of channels; it starts once the previous part is created."""
        part = NestedStack(self, f"Part{part_index}", description=f"TURN channel pool, part {part_index}")
        if self.parts:
            part.add_dependency(self.parts[-1])
        first = part_index * CHANNELS_PER_STACK
        for index in range(first, min(first + CHANNELS_PER_STACK, self.channel_count)):
            channel = kinesisvideo.CfnSignalingChannel(
                part, f"Channel{index:03d}", name=f"{self.name_prefix}{index:03d}", type="SINGLE_MASTER"
            )
            if index - first >= CREATION_BATCH:
                channel.add_dependency(self.channels[index - CREATION_BATCH])
            self.channels.append(channel)
        self.parts.append(part)

    def _manifest_secret(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "Manifest",
            description="The TURN pool's channel ARNs and endpoints, written by its custom resource at each deploy",
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            secret,
            "SMG4",
            "not a credential: the pool's channel ARNs and signaling endpoints, rewritten by the pool's "
            "custom resource at every deploy that changes the pool; there is nothing to rotate",
        )
        return secret

    def _manifest_function(self) -> lambda_.Function:
        """The custom resource's function: the broker's own code, with its own role and log group."""
        log_group = logs.LogGroup(
            self, "ManifestLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        role = iam.Role(
            self,
            "ManifestRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="TURN pool manifest: list the pool, look up its endpoints, write the manifest secret",
        )
        function = broker_function(
            self,
            "ManifestFunction",
            description="Writes the TURN pool manifest (channel ARNs and endpoints) at deploy time",
            handler=MANIFEST_HANDLER,
            memory_size=512,
            timeout=Duration.minutes(5),
            role=role,
            log_group=log_group,
        )
        self._grant_manifest_writer(role)
        return function

    def _manifest(self) -> CustomResource:
        """Runs the function once the channels exist, and again whenever the pool changes."""
        manifest = CustomResource(
            self,
            "PoolManifest",
            service_token=self.manifest_function.function_arn,
            resource_type="Custom::TurnPoolManifest",
            properties={
                "Prefix": self.name_prefix,
                "ChannelCount": str(self.channel_count),
                "SecretArn": self.manifest_secret.secret_arn,
            },
        )
        for part in self.parts:
            manifest.node.add_dependency(part)
        return manifest

    @property
    def broker_environment(self) -> dict[str, str]:
        """What a broker needs to use the pool: its name prefix, the manifest's secret, the reuse mode."""
        return {
            "TURN_CHANNEL_PREFIX": self.name_prefix,
            "TURN_POOL_MANIFEST_SECRET_ARN": self.manifest_secret.secret_arn,
            "TURN_CREDENTIAL_REUSE": self.credential_reuse.value,
        }

    def grant_ice_credentials(self, grantee: iam.IRole) -> None:
        """Let ``grantee`` read the pool and mint TURN credentials from its channels, and nothing more.

        Grants reading the manifest secret, and ``GetSignalingChannelEndpoint`` (an endpoint is looked
        up again after its channel fails) and ``GetIceServerConfig`` on channels named with the pool's
        prefix. The manifest names the pool, so the grantee never lists it.
        """
        self.manifest_secret.grant_read(grantee)
        self._grant_on_channels(grantee, ICE_CREDENTIAL_ACTIONS)

    def _grant_manifest_writer(self, role: iam.IRole) -> None:
        """List the pool, look up its channels' endpoints, and write the manifest secret: no more."""
        self._grant_on_channels(role, (ENDPOINT_ACTION,))
        iam.Grant.add_to_principal(grantee=role, actions=[DISCOVERY_ACTION], resource_arns=["*"])
        acknowledge_wildcard(
            role,
            "Resource::*",
            "kinesisvideo:ListSignalingChannels has no resource type; the pool's channels are listed by "
            "their name prefix, once per deploy",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["secretsmanager:PutSecretValue"], resources=[self.manifest_secret.secret_arn])
        )

    def _grant_on_channels(self, grantee: iam.IRole, actions: tuple[str, ...]) -> None:
        iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[self.channel_arn_pattern])
        acknowledge_wildcard(
            grantee,
            f"Resource::{nag_arn(self, 'kinesisvideo', f'channel/{self.name_prefix}*/*')}",
            f"the TURN pool's channels: every channel named {self.name_prefix}NNN (the name prefix is the "
            "stack's own), whatever their creation time; listing hundreds of ARNs would not fit in a policy",
        )

"""TURN channel pool: KVS signaling channels used only to mint TURN credentials."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aws_cdk import Fn, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisvideo as kinesisvideo
from constructs import Construct

from broker.sizing import channel_count

ICE_CREDENTIAL_ACTIONS = (
    "kinesisvideo:GetSignalingChannelEndpoint",
    "kinesisvideo:GetIceServerConfig",
)
"""What a caller needs to mint TURN credentials from a channel (and nothing else)."""

ENVIRONMENT_VALUE_LIMIT = 2048
"""AgentCore Runtime's limit on one environment variable's value (Lambda's total is 4 KB)."""

_LONGEST_PARTITION = "aws-us-gov"
_LONGEST_REGION = "ap-southeast-2"
_CHANNEL_ARN_TEMPLATE = "arn:{partition}:kinesisvideo:{region}:123456789012:channel/{name}/1700000000000"
"""A channel ARN ends with the channel's creation time in milliseconds (13 digits)."""


class PoolTooLargeError(ValueError):
    """The pool's channel ARNs would not fit in one environment variable."""


class CredentialReuse(enum.StrEnum):
    """How the broker and the agent reuse TURN credentials (``TURN_CREDENTIAL_REUSE``)."""

    PER_SESSION = "per-session"
    SHARED = "shared"


@dataclass(frozen=True)
class TurnPoolSettings:
    """How many channels the pool holds and how callers use them.

    The channel count comes from :func:`broker.sizing.channel_count`, the same arithmetic as the
    sizing CLI, unless ``channel_count_override`` is set.

    Attributes:
        peak_sessions_per_sec: Peak rate of new sessions per second.
        calls_per_session: ``GetIceServerConfig`` calls one session makes (browser + agent = 2).
        headroom: Spare capacity as a fraction, e.g. 0.25.
        channel_count_override: An explicit channel count, or ``None`` to size from the peak.
        credential_reuse: ``per-session`` or ``shared`` credentials.
    """

    peak_sessions_per_sec: float
    calls_per_session: int = 2
    headroom: float = 0.25
    channel_count_override: int | None = None
    credential_reuse: CredentialReuse = CredentialReuse.PER_SESSION

    @property
    def channel_count(self) -> int:
        """The number of channels the pool creates."""
        if self.channel_count_override is not None:
            return self.channel_count_override
        return channel_count(
            self.peak_sessions_per_sec, calls_per_session=self.calls_per_session, headroom=self.headroom
        )


class TurnChannelPool(Construct):
    """N ``SINGLE_MASTER`` signaling channels named ``<stack>-turn-NNN``.

    Channels are numbered from 0, so growing the pool adds channels and leaves the existing ones
    (and their ARNs) alone.

    Attributes:
        channels: The ``AWS::KinesisVideo::SignalingChannel`` resources, in order.
        channel_arns: Their ARNs (tokens).
        channel_arns_csv: The ARNs joined with commas, for ``TURN_CHANNEL_ARNS``.
        credential_reuse: The credential reuse mode callers should use.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: TurnPoolSettings) -> None:
        super().__init__(scope, construct_id)
        count = settings.channel_count
        stack = Stack.of(self)
        prefix = f"{stack.stack_name}-turn-"
        arns_length = len(",".join(self._longest_arn(stack, f"{prefix}{index:03d}") for index in range(count)))
        if arns_length > ENVIRONMENT_VALUE_LIMIT:
            raise PoolTooLargeError(
                f"{count} channel ARNs need up to {arns_length} characters in TURN_CHANNEL_ARNS, more "
                f"than the {ENVIRONMENT_VALUE_LIMIT} an AgentCore environment variable holds: lower "
                "peakSessionsPerSecond or channelHeadroom, use -c turnCredentialReuse=shared with a smaller "
                "-c channelCount=N (shared credentials make KVS calls independent of the session rate), "
                "or shorten the stack name (-c stackName=...)"
            )
        self.credential_reuse = settings.credential_reuse
        self.channels = [
            kinesisvideo.CfnSignalingChannel(
                self, f"Channel{index:03d}", name=f"{prefix}{index:03d}", type="SINGLE_MASTER"
            )
            for index in range(count)
        ]
        self.channel_arns: list[str] = [channel.attr_arn for channel in self.channels]
        self.channel_arns_csv: str = Fn.join(",", self.channel_arns)

    @staticmethod
    def _longest_arn(stack: Stack, name: str) -> str:
        """Return the longest ARN the channel ``name`` can have in ``stack``'s environment."""
        return _CHANNEL_ARN_TEMPLATE.format(
            partition=_LONGEST_PARTITION if Token.is_unresolved(stack.partition) else stack.partition,
            region=_LONGEST_REGION if Token.is_unresolved(stack.region) else stack.region,
            name=name,
        )

    def grant_ice_credentials(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` mint TURN credentials from this pool's channels, and nothing more.

        Grants ``GetSignalingChannelEndpoint`` and ``GetIceServerConfig`` on exactly the pool's
        channel ARNs.
        """
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=list(ICE_CREDENTIAL_ACTIONS), resource_arns=self.channel_arns
        )

"""The ``nova-sonic`` pipeline: Amazon Nova Sonic speech to speech, with bridged role credentials.

Pipecat's Nova Sonic service signs with explicit credentials, and opens a new model session every
few minutes (session continuation) for the whole call. :class:`BridgedNovaSonicLLMService` gives each
new session's client a credential resolver backed by a :class:`~agent.credentials.CredentialBridge`,
so a call of up to 8 hours keeps signing with the runtime role's current temporary credentials.

A session's events are signed one by one, each chained to the request's signature with the request's
signing key: credentials must not change within a session. Each client (one per session) therefore
keeps the first set it resolves, and the bridge renews sets while they still have longer to live than
a session lasts (``AGENT_CREDENTIAL_REFRESH_SECONDS``, 600 s, against Nova Sonic's 480 s).
"""

from __future__ import annotations

import asyncio
import functools
import os
from datetime import UTC, datetime
from typing import Any, Final

from agent.bot import BotPipeline
from agent.config import AgentConfig
from agent.credentials import CredentialBridge, boto3_credential_source
from agent.exceptions import ConfigurationError

try:
    from aws_sdk_bedrock_runtime.client import BedrockRuntimeClient
    from aws_sdk_bedrock_runtime.config import Config
    from pipecat.services.aws.nova_sonic.llm import AWSNovaSonicLLMService
    from pipecat.services.aws.nova_sonic.session_continuation import SessionContinuationParams
    from smithy_aws_core.auth.sigv4 import SigV4AuthScheme
    from smithy_aws_core.identity.components import AWSCredentialsIdentity, AWSIdentityProperties
    from smithy_core.aio.interfaces.identity import IdentityResolver
    from smithy_core.shapes import ShapeID
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "the nova-sonic pipeline needs pipecat-ai[aws-nova-sonic] (pip install -r agent/requirements.txt)"
    ) from exc

from pipecat.frames.frames import LLMRunFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)

from agent.pipelines.common import silero_vad

ENDPOINT_VARIABLE: Final = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
"""The AWS SDKs' service-specific endpoint variable for Bedrock runtime.

botocore honours it; smithy's Bedrock runtime client under Nova Sonic does not, so the builder reads
it. A local stand-in (or a closed loopback port, in ``bench.cold_start``) then receives the model
sessions instead of AWS.
"""


class BridgedCredentialsResolver(IdentityResolver[AWSCredentialsIdentity, AWSIdentityProperties]):
    """A smithy identity resolver for one model session: the bridge's credentials, read once.

    The request and every event of the session sign with the same set, as the event signature chain
    requires; the next session's client reads the bridge again.
    """

    def __init__(self, bridge: CredentialBridge) -> None:
        self._bridge = bridge
        self._identity: AWSCredentialsIdentity | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> BridgedCredentialsResolver:
        # The client deep-copies its config for every operation; the bridge (and its lock) is shared
        # state, never copied: without this the first model session fails with "cannot pickle
        # '_thread.lock' object".
        return self

    async def get_identity(self, *, properties: AWSIdentityProperties) -> AWSCredentialsIdentity:
        """Return this session's credentials: the bridge's current ones, the first time."""
        if self._identity is None:
            credentials = await asyncio.to_thread(self._bridge.current)
            expiration = (
                datetime.fromtimestamp(credentials.expires_at, tz=UTC) if credentials.expires_at is not None else None
            )
            self._identity = AWSCredentialsIdentity(
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
                expiration=expiration,
            )
        return self._identity


class BridgedNovaSonicLLMService(AWSNovaSonicLLMService):
    """Nova Sonic whose every model session signs with the bridge's current credentials.

    Args:
        bridge: Source of the credentials.
        region: Region of Bedrock.
        endpoint_uri: Bedrock runtime's URL (default: the region's public endpoint).
        **kwargs: Passed to ``AWSNovaSonicLLMService`` (settings, audio config ...).
    """

    def __init__(
        self, *, bridge: CredentialBridge, region: str, endpoint_uri: str | None = None, **kwargs: Any
    ) -> None:
        initial = bridge.current()
        super().__init__(
            access_key_id=initial.access_key_id,
            secret_access_key=initial.secret_access_key,
            session_token=initial.session_token,
            region=region,
            **kwargs,
        )
        self._bridge = bridge
        self._bedrock_region = region
        self._endpoint_uri = endpoint_uri or f"https://bedrock-runtime.{region}.amazonaws.com"

    def create_client(self) -> BedrockRuntimeClient:
        """Create the Bedrock runtime client of one model session, signing with the bridge's current credentials."""
        config = Config(
            endpoint_uri=self._endpoint_uri,
            region=self._bedrock_region,
            aws_credentials_identity_resolver=BridgedCredentialsResolver(self._bridge),
            auth_schemes={ShapeID("aws.auth#sigv4"): SigV4AuthScheme(service="bedrock")},
        )
        return BedrockRuntimeClient(config=config)


@functools.cache
def _default_bridge(refresh_margin: float) -> CredentialBridge:
    # One bridge per process: calls share the role's credentials and their renewal.
    return CredentialBridge(boto3_credential_source(), refresh_margin=refresh_margin)


def build_nova_sonic(config: AgentConfig, *, bridge: CredentialBridge | None = None) -> BotPipeline:
    """Silero VAD (user turns) -> Nova Sonic speech to speech.

    The model sessions go to :data:`ENDPOINT_VARIABLE` when it is set, else to the region's endpoint.

    Args:
        config: Region, model id, voice, system prompt and greeting.
        bridge: Credentials (default: the boto3 default chain, renewed before expiry).

    Raises:
        ConfigurationError: No region or no AWS credentials.
    """
    if not config.region:
        raise ConfigurationError("AWS_REGION is not set: the nova-sonic pipeline needs Bedrock's region")
    bridge = bridge or _default_bridge(config.credential_refresh_seconds)
    llm = BridgedNovaSonicLLMService(
        bridge=bridge,
        region=config.region,
        endpoint_uri=os.environ.get(ENDPOINT_VARIABLE) or None,
        settings=AWSNovaSonicLLMService.Settings(
            model=config.nova_sonic_model_id,
            voice=config.effective_voice,
            system_instruction=config.system_prompt,
        ),
        session_continuation=SessionContinuationParams(transition_threshold_seconds=config.nova_sonic_rotate_seconds),
    )
    messages: list[Any] = []
    if config.greeting:
        messages.append({"role": "user", "content": f"Greet me by saying exactly: {config.greeting}"})
    aggregators = LLMContextAggregatorPair(
        LLMContext(messages=messages), user_params=LLMUserAggregatorParams(vad_analyzer=silero_vad())
    )
    return BotPipeline(
        name="nova-sonic",
        processors=[aggregators.user(), llm],
        after_output=[aggregators.assistant()],
        opening_frames=[LLMRunFrame()] if config.greeting else [],
        audio_in_sample_rate=16000,
        audio_out_sample_rate=24000,
    )

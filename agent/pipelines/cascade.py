"""The ``cascade`` pipeline: Amazon Transcribe -> Amazon Bedrock -> Amazon Polly, all AWS.

The three Pipecat services use the default AWS credential chain through aiobotocore, which renews
the runtime role's temporary credentials by itself; no bridge is needed here.
"""

from __future__ import annotations

from agent.bot import BotPipeline
from agent.config import AgentConfig
from agent.exceptions import ConfigurationError

try:
    from pipecat.services.aws.llm import AWSBedrockLLMService
    from pipecat.services.aws.stt import AWSTranscribeSTTService
    from pipecat.services.aws.tts import AWSPollyTTSService
except ImportError as exc:
    raise ConfigurationError(
        "the cascade pipeline needs pipecat-ai[aws] (aiobotocore): pip install 'pipecat-ai[aws]==1.14.0'"
    ) from exc

from pipecat.frames.frames import Frame, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)

from agent.pipelines.common import silero_vad


def build_cascade(config: AgentConfig) -> BotPipeline:
    """Transcribe -> Silero VAD user turns -> Bedrock (``AGENT_BEDROCK_MODEL_ID``) -> Polly.

    Args:
        config: Region, model id, language, voice, system prompt and greeting.

    Raises:
        ConfigurationError: No region or no model id.
    """
    if not config.region or not config.bedrock_model_id:
        raise ConfigurationError(
            "the cascade pipeline needs AWS_REGION and AGENT_BEDROCK_MODEL_ID (a Bedrock model id or inference profile)"
        )
    stt = AWSTranscribeSTTService(
        region=config.region, settings=AWSTranscribeSTTService.Settings(language=config.language)
    )
    llm = AWSBedrockLLMService(
        aws_region=config.region,
        settings=AWSBedrockLLMService.Settings(model=config.bedrock_model_id, system_instruction=config.system_prompt),
    )
    tts = AWSPollyTTSService(
        region=config.region,
        settings=AWSPollyTTSService.Settings(
            voice=config.effective_voice, language=config.language, engine=config.polly_engine
        ),
    )
    # Polly speaks the greeting verbatim (no model call); it joins the context as the assistant's turn.
    opening: list[Frame] = [TTSSpeakFrame(text=config.greeting)] if config.greeting else []
    aggregators = LLMContextAggregatorPair(LLMContext(), user_params=LLMUserAggregatorParams(vad_analyzer=silero_vad()))
    return BotPipeline(
        name="cascade",
        processors=[stt, aggregators.user(), llm, tts],
        after_output=[aggregators.assistant()],
        opening_frames=opening,
    )

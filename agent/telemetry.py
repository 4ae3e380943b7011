"""Names shared by the agent's latency metrics and the CDK dashboard and alarm that read them.

The agent publishes CloudWatch metrics in Embedded Metric Format (JSON lines on stdout, which
AgentCore Runtime ships to the runtime's log group, where CloudWatch extracts them) under
``METRICS_NAMESPACE``. A turn's figures carry the dimensions ``pipeline`` and ``transport`` and are
published a second time with ``pipeline`` alone, so the alarm reads one percentile over every
transport (CloudWatch cannot merge percentiles of separate series). A service's figures add
``service`` (the Pipecat service's class name). The observability construct builds its dashboard and
alarm from these same constants, so a rename cannot silently break either.

This module imports nothing but the standard library: the CDK app imports it.
"""

from __future__ import annotations

from typing import Final, Literal

METRICS_NAMESPACE: Final = "PipecatAgentCore/VoiceAgent"
"""Beside the broker's ``PipecatAgentCore/TurnBroker``: same prefix, its own dimensions."""

PIPELINE_DIMENSION: Final = "pipeline"
TRANSPORT_DIMENSION: Final = "transport"
SERVICE_DIMENSION: Final = "service"

TransportName = Literal["webrtc", "websocket"]
"""How the call's media travels: SmallWebRTC (peer to peer, through TURN) or AgentCore's WebSocket."""
TRANSPORTS: Final[tuple[TransportName, ...]] = ("webrtc", "websocket")

TURN_DIMENSION_SETS: Final[tuple[tuple[str, ...], ...]] = (
    (PIPELINE_DIMENSION, TRANSPORT_DIMENSION),
    (PIPELINE_DIMENSION,),
)
"""Each turn metric is one series per pipeline and transport, and one per pipeline (the alarm's)."""
SERVICE_DIMENSION_SETS: Final[tuple[tuple[str, ...], ...]] = (
    (PIPELINE_DIMENSION, TRANSPORT_DIMENSION, SERVICE_DIMENSION),
    (PIPELINE_DIMENSION, SERVICE_DIMENSION),
)
"""Each service metric is one series per pipeline, transport and service, and one per pipeline and service."""

UNIT: Final = "Milliseconds"


class MetricName:
    """Metric names the agent emits, all in milliseconds."""

    TURN_LATENCY: Final = "TurnLatencyMs"
    """From the moment the user stopped speaking (VAD stop minus its ``stop_secs``) to the bot's first
    audio, once per user turn the bot answers."""
    TIME_TO_FIRST_WORD: Final = "TimeToFirstWordMs"
    """From the client connecting to the bot's first audio (the greeting), once per call."""
    SERVICE_TTFB: Final = "ServiceTtfbMs"
    """A service's time to first byte (STT: end of speech to final transcript; LLM: request to first
    token; TTS: text to first audio), once per piece of work."""
    SERVICE_PROCESSING: Final = "ServiceProcessingMs"
    """A service's processing time (e.g. a whole synthesis or decode), once per piece of work."""

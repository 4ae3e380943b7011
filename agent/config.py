"""Agent settings, read once from environment variables at start.

Every behaviour a deployment may want to change (pipeline, prompt, voice, model ids, greeting, limits)
is a variable here, never a code edit. A missing or invalid value raises
:class:`~agent.exceptions.ConfigurationError` naming the variable to set.

==================================  =================================================================
Variable                            Meaning (default)
==================================  =================================================================
``AGENT_PIPELINE``                  ``nova-sonic`` (default), ``cascade`` or ``local``
``AGENT_HOST`` / ``AGENT_PORT``     Address the HTTP server binds (``127.0.0.1`` / ``8080``)
``AWS_REGION``                      Region of Bedrock, Transcribe and Polly (or ``AWS_DEFAULT_REGION``)
``AGENT_SYSTEM_PROMPT``             System prompt of the LLM pipelines
``AGENT_GREETING``                  What the agent says first; empty for silence until spoken to
``AGENT_VOICE``                     Voice: Nova Sonic (``matthew``), Polly (``Joanna``), espeak-ng
                                    (``en-us``)
``AGENT_NOVA_SONIC_MODEL_ID``       Nova Sonic model (``amazon.nova-2-sonic-v1:0``)
``AGENT_BEDROCK_MODEL_ID``          Bedrock model or inference profile of ``cascade`` (required there)
``AGENT_LANGUAGE``                  Language of Transcribe and Polly (``en-US``)
``AGENT_POLLY_ENGINE``              Polly engine of ``cascade`` (``neural``)
``AGENT_ICE_SERVERS``               ICE servers of an offer that brings none: ``none`` (default: host
                                    candidates only) or ``broker`` (TURN from the KVS pool, for an
                                    agent run standalone). The broker API sends each offer's servers
                                    inside the invocation (``iceServers``), so deployments keep ``none``
``AGENT_ICE_HOST_CANDIDATES``       ``all`` interfaces (default) or ``loopback`` only (one-machine local
                                    mode: media stays on 127.0.0.1)
``AGENT_ICE_TRANSPORT_POLICY``      ``all`` (default) or ``relay``: offer only TURN relay candidates, so
                                    every byte of media goes through the TURN server (an offer left
                                    without a TURN server is then refused: ``ice_servers_missing``)
``AGENT_MAX_REQUEST_BYTES``         Largest accepted invocation body (262144)
``AGENT_MAX_FRAME_BYTES``           Largest accepted ``/ws`` message (1049600: the 1 MiB the browser's
                                    WebSocket transport allows itself, plus protobuf's framing)
``AGENT_CONNECT_TIMEOUT_SECONDS``   A call whose peer never connects ends after this (60)
``AGENT_CREDENTIAL_REFRESH_SECONDS`` Bridged AWS credentials are renewed this long before expiry (600:
                                    longer than a Nova Sonic session, which signs with one set)
``AGENT_NOVA_SONIC_ROTATE_SECONDS``  Age at which Nova Sonic's session is rotated, at the next answer
                                    (360; the service ends a session at 480)
``AGENT_LOG_LEVEL``                 ``INFO`` (Pipecat's own logs never go below INFO: they hold SDP)
``AGENT_METRICS``                   Where each turn's latency figures go besides the log: ``emf``
                                    (default: CloudWatch Embedded Metric Format lines on stdout, which
                                    AgentCore ships to CloudWatch) or ``log`` (the log line only, for
                                    local mode)
==================================  =================================================================

With ``AGENT_ICE_SERVERS=broker`` the broker's own variables (``TURN_CHANNEL_ARNS``,
``TURN_CREDENTIAL_REUSE`` ...) configure where TURN credentials come from; see
:meth:`broker.BrokerConfig.from_env`. Each agent process then has a limiter of its own, which has seen
none of the fleet's calls: fine for one agent, a source of throttles for many.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

from agent.exceptions import ConfigurationError

PipelineName = Literal["nova-sonic", "cascade", "local"]
IceServerSource = Literal["broker", "none"]
HostCandidates = Literal["all", "loopback"]
TransportPolicy = Literal["all", "relay"]
MetricsOutput = Literal["emf", "log"]

PIPELINE_NAMES: Final[tuple[str, ...]] = get_args(PipelineName)
ICE_SERVER_SOURCES: Final[tuple[str, ...]] = get_args(IceServerSource)
HOST_CANDIDATES: Final[tuple[str, ...]] = get_args(HostCandidates)
LOG_LEVELS: Final[tuple[str, ...]] = ("DEBUG", "INFO", "WARNING", "ERROR")
METRICS_OUTPUTS: Final[tuple[str, ...]] = get_args(MetricsOutput)

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a friendly voice assistant. Your answers are spoken aloud, so keep them short and "
    "conversational, and never use lists, markdown or emoji."
)
DEFAULT_GREETING: Final = "Hello! How can I help you today?"
DEFAULT_VOICES: Final[Mapping[str, str]] = {"nova-sonic": "matthew", "cascade": "Joanna", "local": "en-us"}
DEFAULT_MAX_FRAME_BYTES: Final = (1 << 20) + 1024
"""Largest ``/ws`` message accepted by default.

``@pipecat-ai/websocket-transport`` sends its microphone as protobuf audio frames of 512 bytes of
16 kHz PCM (16 ms, ~530 bytes framed) and refuses to send an RTVI message whose JSON exceeds 1 MiB
(its ``maxMessageSize``); protobuf wraps that JSON in under 16 bytes. So every frame a browser sends
fits with room to spare, and nothing larger is ever buffered: 1 MiB is 2,000 times an audio frame, yet
small beside the agent's memory.
"""
MIN_FRAME_BYTES: Final = 4096
"""Smallest ``AGENT_MAX_FRAME_BYTES`` allowed: well above an audio frame (~530 bytes) and the RTVI
messages a client sends as it connects (~200 bytes), so no setting refuses an ordinary call."""


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one agent process (see the module docstring for the variables).

    Attributes:
        pipeline: Which voice pipeline each call runs.
        host: Address the HTTP server binds.
        port: Port the HTTP server binds.
        region: AWS region of the model services (required by ``nova-sonic`` and ``cascade``).
        system_prompt: System prompt of the LLM pipelines.
        greeting: First words of the agent in each call; empty for none.
        voice: Voice of the pipeline's speech synthesis.
        nova_sonic_model_id: Nova Sonic model id.
        bedrock_model_id: Bedrock model id or inference profile of the ``cascade`` pipeline.
        language: Language code of speech recognition and synthesis (``en-US``).
        polly_engine: Polly engine (``standard``, ``neural``, ``long-form``, ``generative``).
        ice_servers: Where an offer's ICE servers come from when its invocation brings none.
        ice_host_candidates: Interfaces whose addresses are offered as host candidates.
        ice_transport_policy: ``relay`` to gather TURN relay candidates only.
        max_request_bytes: Largest invocation body accepted.
        max_frame_bytes: Largest ``/ws`` message accepted (larger ones end their call, close code 1009).
        connect_timeout_seconds: How long an answered call waits for its peer to connect.
        credential_refresh_seconds: Bridged AWS credentials are renewed this long before they expire;
            more than a Nova Sonic session lasts, since a session's events all sign with one set.
        nova_sonic_rotate_seconds: Age of a Nova Sonic session after which Pipecat opens the next one
            (session continuation) when the assistant next speaks.
        log_level: Level of the agent's own logs.
        metrics: ``emf`` to print each turn's latency metrics on stdout as CloudWatch EMF as well as
            logging them, ``log`` to log them only.
    """

    pipeline: PipelineName = "nova-sonic"
    host: str = "127.0.0.1"
    port: int = 8080
    region: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    greeting: str = DEFAULT_GREETING
    voice: str | None = None
    nova_sonic_model_id: str = "amazon.nova-2-sonic-v1:0"
    bedrock_model_id: str | None = None
    language: str = "en-US"
    polly_engine: str = "neural"
    ice_servers: IceServerSource = "none"
    ice_host_candidates: HostCandidates = "all"
    ice_transport_policy: TransportPolicy = "all"
    max_request_bytes: int = 256 * 1024
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    connect_timeout_seconds: float = 60.0
    credential_refresh_seconds: float = 600.0
    nova_sonic_rotate_seconds: float = 360.0
    log_level: str = "INFO"
    metrics: MetricsOutput = "emf"

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINE_NAMES:
            raise ConfigurationError(
                f"AGENT_PIPELINE must be one of {', '.join(PIPELINE_NAMES)}, got {self.pipeline!r}"
            )
        if self.ice_servers not in ICE_SERVER_SOURCES:
            raise ConfigurationError(
                f"AGENT_ICE_SERVERS must be one of {', '.join(ICE_SERVER_SOURCES)}, got {self.ice_servers!r}"
            )
        if self.ice_host_candidates not in HOST_CANDIDATES:
            raise ConfigurationError(
                f"AGENT_ICE_HOST_CANDIDATES must be one of {', '.join(HOST_CANDIDATES)}, "
                f"got {self.ice_host_candidates!r}"
            )
        if self.ice_transport_policy not in get_args(TransportPolicy):
            raise ConfigurationError(
                f"AGENT_ICE_TRANSPORT_POLICY must be 'all' or 'relay', got {self.ice_transport_policy!r}"
            )
        self._check_numbers()
        if self.pipeline in ("nova-sonic", "cascade") and not self.region:
            raise ConfigurationError(
                f"AWS_REGION is not set: the {self.pipeline} pipeline needs the region of its AWS "
                "model services (AgentCore sets it; locally export AWS_REGION=us-east-1)"
            )
        if self.pipeline == "cascade" and not self.bedrock_model_id:
            raise ConfigurationError(
                "AGENT_BEDROCK_MODEL_ID is not set: the cascade pipeline needs a Bedrock model id or "
                "inference profile, e.g. AGENT_BEDROCK_MODEL_ID=us.amazon.nova-2-lite-v1:0"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigurationError(f"AGENT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.metrics not in METRICS_OUTPUTS:
            raise ConfigurationError(f"AGENT_METRICS must be one of {', '.join(METRICS_OUTPUTS)}, got {self.metrics!r}")

    def _check_numbers(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"AGENT_PORT must be a TCP port (1-65535), got {self.port}")
        for limit, size, floor in (
            ("AGENT_MAX_REQUEST_BYTES", self.max_request_bytes, 1024),
            ("AGENT_MAX_FRAME_BYTES", self.max_frame_bytes, MIN_FRAME_BYTES),
        ):
            if size < floor:
                raise ConfigurationError(f"{limit} must be >= {floor}, got {size}")
        for name, value in (
            ("AGENT_CONNECT_TIMEOUT_SECONDS", self.connect_timeout_seconds),
            ("AGENT_CREDENTIAL_REFRESH_SECONDS", self.credential_refresh_seconds),
            ("AGENT_NOVA_SONIC_ROTATE_SECONDS", self.nova_sonic_rotate_seconds),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a number > 0, got {value}")

    @property
    def effective_voice(self) -> str:
        """The configured voice, or the pipeline's default one."""
        return self.voice or DEFAULT_VOICES[self.pipeline]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """Read the settings from environment variables.

        Raises:
            ConfigurationError: A variable is invalid, or one the chosen pipeline needs is missing.
        """
        env = os.environ if environ is None else environ

        def text(name: str, default: str) -> str:
            raw = env.get(name)
            return default if raw is None else raw.strip()

        def optional(name: str) -> str | None:
            return env.get(name, "").strip() or None

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None

        def integer(name: str, default: int) -> int:
            value = number(name, default)
            if value != int(value):
                raise ConfigurationError(f"{name} must be a whole number, got {value}")
            return int(value)

        defaults = cls(pipeline="local")  # the one pipeline whose defaults need no region
        return cls(
            pipeline=cast(PipelineName, text("AGENT_PIPELINE", "nova-sonic").lower()),
            host=text("AGENT_HOST", defaults.host) or defaults.host,
            port=integer("AGENT_PORT", defaults.port),
            region=optional("AWS_REGION") or optional("AWS_DEFAULT_REGION"),
            system_prompt=text("AGENT_SYSTEM_PROMPT", defaults.system_prompt) or defaults.system_prompt,
            greeting=text("AGENT_GREETING", defaults.greeting),
            voice=optional("AGENT_VOICE"),
            nova_sonic_model_id=optional("AGENT_NOVA_SONIC_MODEL_ID") or defaults.nova_sonic_model_id,
            bedrock_model_id=optional("AGENT_BEDROCK_MODEL_ID"),
            language=optional("AGENT_LANGUAGE") or defaults.language,
            polly_engine=optional("AGENT_POLLY_ENGINE") or defaults.polly_engine,
            ice_servers=cast(IceServerSource, text("AGENT_ICE_SERVERS", defaults.ice_servers).lower()),
            ice_host_candidates=cast(HostCandidates, text("AGENT_ICE_HOST_CANDIDATES", "all").lower()),
            ice_transport_policy=cast(TransportPolicy, text("AGENT_ICE_TRANSPORT_POLICY", "all").lower()),
            max_request_bytes=integer("AGENT_MAX_REQUEST_BYTES", defaults.max_request_bytes),
            max_frame_bytes=integer("AGENT_MAX_FRAME_BYTES", defaults.max_frame_bytes),
            connect_timeout_seconds=number("AGENT_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout_seconds),
            credential_refresh_seconds=number("AGENT_CREDENTIAL_REFRESH_SECONDS", defaults.credential_refresh_seconds),
            nova_sonic_rotate_seconds=number("AGENT_NOVA_SONIC_ROTATE_SECONDS", defaults.nova_sonic_rotate_seconds),
            log_level=text("AGENT_LOG_LEVEL", defaults.log_level).upper(),
            metrics=cast(MetricsOutput, text("AGENT_METRICS", defaults.metrics).lower()),
        )

"""The app's settings, read once from CDK context (``cdk.json`` and ``-c key=value``).

Every key has a default in ``cdk.json``. Values from ``cdk.json`` arrive typed (numbers, lists,
``null``); values from ``-c`` arrive as strings, so every parser accepts both. A missing or invalid
value raises :class:`ContextError`, whose message names the key and shows how to set it.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from broker.api.service import Transport
from broker.api.websocket_urls import MAX_EXPIRES_SECONDS
from broker.exceptions import SizingError
from stacks.agent_runtime import AgentPipeline, AgentRuntimeSettings
from stacks.broker_api import BrokerApiSettings, JwtSettings
from stacks.network import NetworkSettings
from stacks.observability import ObservabilitySettings
from stacks.turn_pool import CredentialReuse, TurnPoolSettings

MIN_SESSION_SECONDS: Final = 60
MAX_SESSION_SECONDS: Final = 28_800
"""AgentCore accepts idle timeouts and lifetimes from 60 s to 8 h."""

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN = re.compile(
    rf"^(?:https://{_HOST_LABEL}(?:\.{_HOST_LABEL})*|http://(?:localhost|127\.0\.0\.1))(?::(?P<port>\d{{1,5}}))?$"
)
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9.:_-]{0,199}$")
_VOICE_ID = re.compile(r"^[A-Z][A-Za-z]{1,39}$")
_JWT_ISSUER = re.compile(r"^https://[^\s/?#]+(?:/[^\s?#]*)?$")
_MAX_PORT = 65_535
_ISSUER_EXAMPLE = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE"
_ORIGINS_EXAMPLE = "https://app.example.com,http://localhost:7860"

T = TypeVar("T")
EnumT = TypeVar("EnumT", bound=enum.StrEnum)


class ContextError(ValueError):
    """A context value is missing or invalid; the message names the key and how to set it."""

    def __init__(self, key: str, problem: str, example: str) -> None:
        super().__init__(
            f"context key '{key}' {problem}. Set it in cdk.json under \"context\" or on the "
            f"command line, e.g. -c {key}={example}"
        )
        self.key = key


@dataclass(frozen=True)
class AppConfig:
    """Everything the app builds, one settings value per construct."""

    stack_name: str
    network: NetworkSettings
    turn_pool: TurnPoolSettings
    agent_runtime: AgentRuntimeSettings
    broker_api: BrokerApiSettings
    observability: ObservabilitySettings

    @classmethod
    def from_context(cls, context: Callable[[str], Any]) -> AppConfig:
        """Build the settings from a context lookup such as ``app.node.try_get_context``.

        Raises:
            ContextError: A value is missing or invalid.
        """
        reader = _ContextReader(context)
        turn_pool = _turn_pool(reader)
        agent_runtime = _agent_runtime(reader)
        return cls(
            stack_name=reader.string("stackName", "PipecatVoiceAgent", _STACK_NAME),
            network=NetworkSettings(nat_gateways=reader.integer("natGateways", "2", minimum=1, maximum=2)),
            turn_pool=turn_pool,
            agent_runtime=agent_runtime,
            broker_api=_broker_api(reader),
            observability=ObservabilitySettings(
                p99_latency_ms=reader.integer("latencyAlarmP99Ms", "1500", minimum=1, maximum=60_000),
                # The pool is sized for this rate: the alarm says when the fleet sees more.
                max_throttles_per_call=turn_pool.max_throttle_rate,
                turn_latency_p95_ms=reader.integer("turnLatencyAlarmP95Ms", "2000", minimum=100, maximum=60_000),
                agent_pipeline=agent_runtime.pipeline.value,
            ),
        )

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> AppConfig:
        """Build the settings from a plain mapping of context keys (handy in tests)."""
        return cls.from_context(context.get)


def _turn_pool(reader: _ContextReader) -> TurnPoolSettings:
    settings = TurnPoolSettings(
        peak_sessions_per_sec=reader.number("peakSessionsPerSecond", "10", exclusive_minimum=0),
        calls_per_session=reader.integer("callsPerSession", "2", minimum=1, maximum=10),
        headroom=reader.number("channelHeadroom", "0.25", minimum=0),
        max_throttle_rate=reader.number("maxThrottleRate", "0.01", exclusive_minimum=0, exclusive_maximum=1),
        channel_count_override=reader.optional(
            "channelCount", lambda key: reader.integer(key, "8", minimum=1, maximum=10_000)
        ),
        credential_reuse=reader.choice("turnCredentialReuse", CredentialReuse),
    )
    try:
        _ = settings.channel_count
    except SizingError as exc:
        raise ContextError(
            "peakSessionsPerSecond",
            f"with callsPerSession, channelHeadroom and maxThrottleRate cannot size the pool ({exc})",
            "10",
        ) from exc
    return settings


def _agent_runtime(reader: _ContextReader) -> AgentRuntimeSettings:
    idle = reader.integer("idleSessionTimeoutSeconds", "900", minimum=MIN_SESSION_SECONDS, maximum=MAX_SESSION_SECONDS)
    lifetime = reader.integer(
        "maxSessionLifetimeSeconds", "28800", minimum=MIN_SESSION_SECONDS, maximum=MAX_SESSION_SECONDS
    )
    if idle > lifetime:
        raise ContextError(
            "idleSessionTimeoutSeconds",
            f"is {idle}, longer than maxSessionLifetimeSeconds ({lifetime})",
            str(lifetime),
        )
    return AgentRuntimeSettings(
        pipeline=reader.choice("agentPipeline", AgentPipeline),
        nova_sonic_model_id=reader.string("novaSonicModelId", "amazon.nova-2-sonic-v1:0", _MODEL_ID),
        bedrock_model_id=reader.string("bedrockModelId", "amazon.nova-lite-v1:0", _MODEL_ID),
        polly_voice_id=reader.string("pollyVoiceId", "Matthew", _VOICE_ID),
        idle_session_timeout_seconds=idle,
        max_lifetime_seconds=lifetime,
    )


def _broker_api(reader: _ContextReader) -> BrokerApiSettings:
    origins = reader.string_list("allowedOrigins", _ORIGINS_EXAMPLE)
    for origin in origins:
        _check_origin(origin)
    issuer = reader.optional("jwtIssuerUrl", lambda key: reader.string(key, _ISSUER_EXAMPLE, _JWT_ISSUER))
    audience = reader.optional("jwtAudience", lambda key: reader.string_list(key, "my-client-id"))
    unset_both = "leave both unset to create a Cognito user pool"
    if issuer is None and audience is not None:
        raise ContextError("jwtIssuerUrl", f"must be set when jwtAudience is ({unset_both})", _ISSUER_EXAMPLE)
    if audience is None and issuer is not None:
        raise ContextError("jwtAudience", f"must be set when jwtIssuerUrl is ({unset_both})", "my-client-id")
    rate = reader.integer("apiThrottleRateLimit", "50", minimum=1, maximum=10_000)
    burst = reader.integer("apiThrottleBurstLimit", "100", minimum=1, maximum=5_000)
    return BrokerApiSettings(
        allowed_origins=origins,
        jwt=None if issuer is None or audience is None else JwtSettings(issuer_url=issuer, audience=audience),
        throttle_rate_limit=rate,
        throttle_burst_limit=burst,
        transports=_transports(reader),
        websocket_url_expires_seconds=reader.integer(
            "websocketUrlExpirySeconds", "60", minimum=1, maximum=MAX_EXPIRES_SECONDS
        ),
    )


def _transports(reader: _ContextReader) -> tuple[Transport, ...]:
    example = ",".join(transport.value for transport in Transport)
    names = reader.string_list("brokerTransports", example)
    unknown = [name for name in names if name not in {transport.value for transport in Transport}]
    if unknown:
        raise ContextError(
            "brokerTransports", f"holds {', '.join(map(repr, unknown))}; the transports are {example}", example
        )
    return tuple(dict.fromkeys(Transport(name) for name in names))


def _check_origin(origin: str) -> None:
    if origin == "*":
        raise ContextError(
            "allowedOrigins", "must list origins; '*' would let any web page call the API", _ORIGINS_EXAMPLE
        )
    match = _ORIGIN.match(origin)
    if match is None or (match.group("port") is not None and not 0 < int(match.group("port")) <= _MAX_PORT):
        raise ContextError(
            "allowedOrigins",
            f"holds {origin!r}, which is not an origin: write scheme://host[:port] in lowercase with no "
            "path or trailing slash, https (http only for localhost or 127.0.0.1)",
            _ORIGINS_EXAMPLE,
        )


class _ContextReader:
    """Typed access to context values, raising :class:`ContextError` with the key's name."""

    def __init__(self, context: Callable[[str], Any]) -> None:
        self._context = context

    def _raw(self, key: str, example: str) -> Any:
        value = self._context(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ContextError(key, "is missing", example)
        return value.strip() if isinstance(value, str) else value

    def optional(self, key: str, parse: Callable[[str], T]) -> T | None:
        value = self._context(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "null", "none"}):
            return None
        return parse(key)

    def number(
        self,
        key: str,
        example: str,
        *,
        minimum: float | None = None,
        exclusive_minimum: float | None = None,
        exclusive_maximum: float | None = None,
    ) -> float:
        value = self._raw(key, example)
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ContextError(key, f"must be a number, got {value!r}", example) from None
        if not math.isfinite(number):
            raise ContextError(key, f"must be a finite number, got {value!r}", example)
        if minimum is not None and number < minimum:
            raise ContextError(key, f"must be >= {minimum:g}, got {number:g}", example)
        if exclusive_minimum is not None and number <= exclusive_minimum:
            raise ContextError(key, f"must be > {exclusive_minimum:g}, got {number:g}", example)
        if exclusive_maximum is not None and number >= exclusive_maximum:
            raise ContextError(key, f"must be < {exclusive_maximum:g}, got {number:g}", example)
        return number

    def integer(self, key: str, example: str, *, minimum: int, maximum: int) -> int:
        value = self._raw(key, example)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ContextError(key, f"must be a whole number, got {value!r}", example)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ContextError(key, f"must be a whole number, got {value!r}", example) from None
        if not minimum <= number <= maximum:
            raise ContextError(key, f"must be between {minimum} and {maximum}, got {number}", example)
        return number

    def string(self, key: str, example: str, pattern: re.Pattern[str]) -> str:
        value = self._raw(key, example)
        if not isinstance(value, str) or pattern.match(value) is None:
            raise ContextError(key, f"has an invalid value {value!r}", example)
        return value

    def string_list(self, key: str, example: str) -> tuple[str, ...]:
        value = self._raw(key, example)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise ContextError(key, f"must be a list of strings or a comma-separated string, got {value!r}", example)
        stripped = tuple(item.strip() for item in items if item.strip())
        if not stripped:
            raise ContextError(key, "must not be empty", example)
        return stripped

    def choice(self, key: str, choices: type[EnumT]) -> EnumT:
        allowed = [member.value for member in choices]
        value = self._raw(key, allowed[0])
        try:
            return choices(value)
        except ValueError:
            raise ContextError(key, f"must be one of {', '.join(allowed)}, got {value!r}", allowed[0]) from None

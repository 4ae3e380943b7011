"""Build the broker API's service from environment variables (shared by the Lambda and local adapters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.session

from broker.api.agents import AgentCoreInvoker, AgentInvoker, HttpAgentInvoker
from broker.api.service import ApiSettings, BrokerService, MetricsSink, Transport
from broker.api.sessions import MIN_KEY_BYTES, SessionIssuer
from broker.api.websocket_urls import (
    DEFAULT_EXPIRES_SECONDS,
    ENDPOINT_VARIABLE,
    MAX_EXPIRES_SECONDS,
    WebSocketUrlSigner,
    endpoint_url,
)
from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import ConfigurationError
from broker.kvs import KvsSignaling
from broker.pool_manifest import PoolManifest

MANIFEST_VARIABLE = "TURN_POOL_MANIFEST_SECRET_ARN"
TRANSPORTS_VARIABLE = "BROKER_TRANSPORTS"
EXPIRY_VARIABLE = "WEBSOCKET_URL_EXPIRES_SECONDS"


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {raw!r}")
    return value


def session_key(
    env: Mapping[str, str], *, secrets_client: Any | None = None, session: botocore.session.Session | None = None
) -> bytes:
    """Return the session signing key: ``SESSION_SIGNING_KEY``, or the Secrets Manager secret it names.

    ``secrets_client`` (tests) or a client from ``session`` (default: a new one) reads the secret.

    Raises:
        ConfigurationError: Neither is set, or the key is shorter than 32 bytes.
    """
    key = env.get("SESSION_SIGNING_KEY", "")
    secret_arn = env.get("SESSION_SIGNING_KEY_SECRET_ARN", "")
    if not key and secret_arn:
        if secrets_client is None:
            secrets_client = (session or botocore.session.Session()).create_client("secretsmanager")
        key = secrets_client.get_secret_value(SecretId=secret_arn)["SecretString"]
    if not key:
        raise ConfigurationError(
            "set SESSION_SIGNING_KEY_SECRET_ARN (the stack does) or SESSION_SIGNING_KEY (local runs) "
            "so that session ids can be bound to their caller"
        )
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigurationError(f"the session signing key must be at least {MIN_KEY_BYTES} bytes")
    return key.encode()


def agent_invoker(env: Mapping[str, str], *, session: botocore.session.Session | None = None) -> AgentInvoker:
    """Return the agent invoker ``AGENT_INVOKER`` names (``agentcore`` or ``local``).

    Raises:
        ConfigurationError: A required variable is missing or the name is unknown.
    """
    kind = env.get("AGENT_INVOKER", "agentcore").strip()
    timeout = _number(env, "AGENT_ANSWER_TIMEOUT_SECONDS", ApiSettings.answer_timeout_seconds)
    if kind == "agentcore":
        arn = env.get("AGENT_RUNTIME_ARN", "").strip()
        if not arn.startswith("arn:"):
            raise ConfigurationError("AGENT_RUNTIME_ARN must be the agent runtime's ARN (a stack output)")
        return AgentCoreInvoker(
            arn,
            qualifier=env.get("AGENT_RUNTIME_QUALIFIER") or None,
            read_timeout=timeout,
            session=session,
            # Read from ``env`` as the WebSocket signer reads it, so both reach the same endpoint even
            # when ``env`` is not this process's environment (local mode).
            endpoint_url=env.get(ENDPOINT_VARIABLE, "").strip() or None,
        )
    if kind == "local":
        try:
            return HttpAgentInvoker(env.get("LOCAL_AGENT_URL", "http://127.0.0.1:8080"))
        except ValueError as exc:
            raise ConfigurationError(f"LOCAL_AGENT_URL: {exc}") from exc
    raise ConfigurationError(f"AGENT_INVOKER must be 'agentcore' or 'local', got {kind!r}")


def offered_transports(env: Mapping[str, str]) -> frozenset[Transport]:
    """The transports ``BROKER_TRANSPORTS`` names (comma-separated; default ``webrtc``).

    Raises:
        ConfigurationError: A name is unknown, or none is given.
    """
    raw = env.get(TRANSPORTS_VARIABLE, "").strip() or Transport.WEBRTC.value
    names = [name.strip() for name in raw.split(",") if name.strip()]
    known = ", ".join(transport.value for transport in Transport)
    try:
        transports = frozenset(Transport(name) for name in names)
    except ValueError:
        raise ConfigurationError(f"{TRANSPORTS_VARIABLE} must list transports from {known}, got {raw!r}") from None
    if not transports:
        raise ConfigurationError(f"{TRANSPORTS_VARIABLE} must name at least one of {known}")
    return transports


def websocket_url_signer(env: Mapping[str, str], *, session: botocore.session.Session) -> WebSocketUrlSigner:
    """The signer of the agent runtime's WebSocket URLs, with credentials from ``session``.

    ``AGENT_RUNTIME_ARN`` and ``AGENT_RUNTIME_QUALIFIER`` name the runtime (as for invocations), the
    region is ``AWS_REGION`` (``AWS_DEFAULT_REGION``), ``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE`` moves the
    endpoint (local mode), and ``WEBSOCKET_URL_EXPIRES_SECONDS`` (1-300, default 60) bounds each URL.

    Raises:
        ConfigurationError: A variable is missing or invalid, or ``session`` has no credentials.
    """
    arn = env.get("AGENT_RUNTIME_ARN", "").strip()
    if not arn.startswith("arn:"):
        raise ConfigurationError("AGENT_RUNTIME_ARN must be the agent runtime's ARN (a stack output)")
    region = (
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or session.get_config_variable("region") or ""
    ).strip()
    if not region:
        raise ConfigurationError("AWS_REGION must be set to sign the agent's WebSocket URLs")
    expires = _number(env, EXPIRY_VARIABLE, DEFAULT_EXPIRES_SECONDS)
    if not expires.is_integer() or expires > MAX_EXPIRES_SECONDS:
        raise ConfigurationError(f"{EXPIRY_VARIABLE} must be a whole number of seconds from 1 to {MAX_EXPIRES_SECONDS}")
    return WebSocketUrlSigner(
        arn,
        region=region,
        credentials=session.get_credentials(),
        endpoint_url=endpoint_url(env, region, session=session),
        qualifier=env.get("AGENT_RUNTIME_QUALIFIER") or None,
        expires_seconds=int(expires),
    )


def ice_broker(
    env: Mapping[str, str], *, session: botocore.session.Session, secrets_client: Any | None = None
) -> IceBroker:
    """The broker of ICE servers, over the pool the environment names.

    With ``TURN_POOL_MANIFEST_SECRET_ARN`` (the deployed stack) the pool and every channel's endpoint
    come from that one secret, so no instance lists the pool or looks an endpoint up at cold start;
    otherwise ``TURN_CHANNEL_PREFIX`` (listed once) or ``TURN_CHANNEL_ARNS``.

    Raises:
        ConfigurationError: A variable is missing or invalid, or the manifest is unreadable.
    """
    config = BrokerConfig.from_env(env)
    kvs = KvsSignaling(region=config.region, session=session, endpoint_cache_seconds=config.endpoint_cache_seconds)
    manifest_arn = env.get(MANIFEST_VARIABLE, "").strip()
    if not manifest_arn:
        return IceBroker(config, kvs=kvs)
    client = secrets_client or session.create_client("secretsmanager")
    manifest = PoolManifest.from_json(client.get_secret_value(SecretId=manifest_arn)["SecretString"])
    kvs.pin_endpoints(manifest.endpoints)
    return IceBroker(config, channel_arns=manifest.channel_arns, kvs=kvs)


def build_service(
    env: Mapping[str, str],
    *,
    metrics: MetricsSink | None = None,
    ice: IceBroker | None = None,
    agent: AgentInvoker | None = None,
    session: botocore.session.Session | None = None,
) -> BrokerService:
    """Build the service from environment variables; ``ice`` and ``agent`` override what they would build.

    ``session`` (default: a new one) creates every client and holds the credentials WebSocket URLs
    are signed with; local mode passes one with its offline credentials, leaving the process's
    environment alone.

    Raises:
        ConfigurationError: A variable is missing or invalid; the message names it.
    """
    settings = ApiSettings(
        answer_timeout_seconds=_number(env, "AGENT_ANSWER_TIMEOUT_SECONDS", ApiSettings.answer_timeout_seconds),
        max_body_bytes=int(_number(env, "API_MAX_BODY_BYTES", ApiSettings.max_body_bytes)),
        transports=offered_transports(env),
    )
    # One botocore session for every client: each session loads botocore's data files again. botocore,
    # not boto3: boto3 adds nothing the broker uses and its import pulls in s3transfer (~14 ms of cold start).
    session = session or botocore.session.Session()
    secrets = (
        session.create_client("secretsmanager")
        if env.get("SESSION_SIGNING_KEY_SECRET_ARN") or env.get(MANIFEST_VARIABLE)
        else None
    )
    if ice is None:
        ice = ice_broker(env, session=session, secrets_client=secrets)
    agent = agent or agent_invoker(env, session=session)
    # After the clients: they have loaded the endpoint data the signer reads, so it costs nothing more.
    signer = websocket_url_signer(env, session=session) if Transport.WEBSOCKET in settings.transports else None
    return BrokerService(
        ice=ice,
        sessions=SessionIssuer(session_key(env, secrets_client=secrets, session=session)),
        agent=agent,
        metrics=metrics,
        settings=settings,
        websocket_urls=signer,
    )

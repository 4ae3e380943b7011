"""Build the broker API's service from environment variables (shared by the Lambda and local adapters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.session

from broker.api.agents import AgentCoreInvoker, AgentInvoker, HttpAgentInvoker
from broker.api.service import ApiSettings, BrokerService, MetricsSink
from broker.api.sessions import MIN_KEY_BYTES, SessionIssuer
from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import ConfigurationError
from broker.kvs import KvsSignaling
from broker.pool_manifest import PoolManifest

MANIFEST_VARIABLE = "TURN_POOL_MANIFEST_SECRET_ARN"


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
            arn, qualifier=env.get("AGENT_RUNTIME_QUALIFIER") or None, read_timeout=timeout, session=session
        )
    if kind == "local":
        try:
            return HttpAgentInvoker(env.get("LOCAL_AGENT_URL", "http://127.0.0.1:8080"))
        except ValueError as exc:
            raise ConfigurationError(f"LOCAL_AGENT_URL: {exc}") from exc
    raise ConfigurationError(f"AGENT_INVOKER must be 'agentcore' or 'local', got {kind!r}")


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
) -> BrokerService:
    """Build the service from environment variables; ``ice`` and ``agent`` override what they would build.

    Raises:
        ConfigurationError: A variable is missing or invalid; the message names it.
    """
    settings = ApiSettings(
        answer_timeout_seconds=_number(env, "AGENT_ANSWER_TIMEOUT_SECONDS", ApiSettings.answer_timeout_seconds),
        max_body_bytes=int(_number(env, "API_MAX_BODY_BYTES", ApiSettings.max_body_bytes)),
    )
    # One botocore session for every client: each session loads botocore's data files again. botocore,
    # not boto3: boto3 adds nothing the broker uses and its import pulls in s3transfer (~14 ms of cold start).
    session = botocore.session.Session()
    secrets = (
        session.create_client("secretsmanager")
        if env.get("SESSION_SIGNING_KEY_SECRET_ARN") or env.get(MANIFEST_VARIABLE)
        else None
    )
    if ice is None:
        ice = ice_broker(env, session=session, secrets_client=secrets)
    return BrokerService(
        ice=ice,
        sessions=SessionIssuer(session_key(env, secrets_client=secrets, session=session)),
        agent=agent or agent_invoker(env, session=session),
        metrics=metrics,
        settings=settings,
    )

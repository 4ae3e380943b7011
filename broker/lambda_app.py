"""The broker API as an AWS Lambda function behind an API Gateway HTTP API with a JWT authorizer.

Imported once per execution environment by :mod:`broker.lambda_handler` (the entry point), so
everything expensive happens here, at import: the botocore clients (KVS, AgentCore and Secrets
Manager, from one botocore session), the session key, the resolver. The X-Ray SDK costs ~150 ms to
import, so the Tracer exists only when the function runs with active tracing (Lambda then sets
``AWS_XRAY_DAEMON_ADDRESS``), and it patches botocore alone. Environment: the broker's ``TURN_*`` variables,
``AGENT_INVOKER`` (``agentcore`` or ``local``), ``AGENT_RUNTIME_ARN`` / ``AGENT_RUNTIME_QUALIFIER``
or ``LOCAL_AGENT_URL``, ``SESSION_SIGNING_KEY_SECRET_ARN`` (a Secrets Manager secret) or
``SESSION_SIGNING_KEY`` (the key itself, for local runs), and ``BROKER_TRANSPORTS`` (``webrtc``,
``websocket``; default ``webrtc``) with ``WEBSOCKET_URL_EXPIRES_SECONDS`` (1-300, default 60) for the
presigned WebSocket URLs, signed with the function's own credentials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from broker.api.config import build_service
from broker.api.resolver import build_resolver, handle_event
from broker.api.service import Unit
from broker.telemetry import METRICS_NAMESPACE, PEER_DIMENSION, SERVICE_DIMENSION, SERVICE_NAME, MetricName, Peer

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)


def tracing_active(env: Mapping[str, str]) -> bool:
    """Whether X-Ray active tracing is on for this function (and not turned off for Powertools)."""
    return bool(env.get("AWS_XRAY_DAEMON_ADDRESS")) and env.get("POWERTOOLS_TRACE_DISABLED", "").lower() != "true"


tracer = (
    Tracer(service=SERVICE_NAME, auto_patch=False, patch_modules=["botocore"]) if tracing_active(os.environ) else None
)
# The broker library logs through the standard logging module: give it the same JSON format.
copy_config_to_registered_loggers(source_logger=logger, include={"broker"})


class PowertoolsMetrics:
    """Per-request metrics as CloudWatch EMF through Powertools (flushed by ``log_metrics``).

    A request that fetched a peer's TURN credentials publishes its metrics under a second dimension
    set with ``peer`` added, so the same data points are both the totals and the per-peer figures.
    """

    def __init__(self) -> None:
        self._peer: Peer | None = None

    def begin_request(self) -> None:
        """Forget the previous request's peer (Powertools clears its dimension sets at each flush)."""
        self._peer = None

    def add(self, name: str, value: float, unit: Unit, *, peer: Peer | None = None) -> None:
        """Record one data point."""
        if peer is not None and self._peer is None:
            self._peer = peer
            metrics.add_dimensions(**{SERVICE_DIMENSION: SERVICE_NAME, PEER_DIMENSION: peer})
        metrics.add_metric(
            name=name, unit=MetricUnit.Milliseconds if unit == "Milliseconds" else MetricUnit.Count, value=value
        )


sink = PowertoolsMetrics()
service = build_service(os.environ, metrics=sink)
app = build_resolver(service)


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Serve one API Gateway HTTP API request."""
    started = time.monotonic()
    sink.begin_request()
    try:
        response: dict[str, Any] = handle_event(app, event, context, service.settings.max_body_bytes)
        return response
    finally:
        metrics.add_metric(
            name=MetricName.REQUEST_LATENCY, unit=MetricUnit.Milliseconds, value=(time.monotonic() - started) * 1000
        )


_traced = tracer.capture_lambda_handler(_handle, capture_response=False) if tracer else _handle
handler = logger.inject_lambda_context(
    metrics.log_metrics(_traced), correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False
)
"""The function: ``broker.lambda_handler.handler`` is this, imported with the collector paused."""

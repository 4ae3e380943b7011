"""Names shared by the broker's metrics and the CDK dashboard and alarms that read them.

The broker emits CloudWatch metrics in Embedded Metric Format (Powertools Metrics) under
``METRICS_NAMESPACE`` with the dimension ``service=SERVICE_NAME``. A request that fetched TURN
credentials publishes its metrics a second time with ``peer`` added (``browser`` for ``/start``,
``agent`` for an offer), so the dashboard shows both peers apart and the alarms read the totals. The
observability construct builds its alarms from these same constants, so a rename cannot silently break
an alarm.
"""

from __future__ import annotations

from typing import Final, Literal

METRICS_NAMESPACE: Final = "PipecatAgentCore/TurnBroker"
SERVICE_NAME: Final = "turn-broker"
SERVICE_DIMENSION: Final = "service"
PEER_DIMENSION: Final = "peer"

Peer = Literal["browser", "agent"]
"""Whose TURN credentials a request fetched: the browser's (``/start``) or the agent's (an offer)."""
PEERS: Final[tuple[Peer, ...]] = ("browser", "agent")


class MetricName:
    """Metric names the broker emits (one data point per request unless noted)."""

    KVS_CALLS: Final = "KvsCalls"
    """Count of GetIceServerConfig calls made to KVS."""
    KVS_THROTTLES: Final = "KvsThrottles"
    """Count of ClientLimitExceededException answers (each one absorbed by failover)."""
    POOL_EXHAUSTED: Final = "PoolExhausted"
    """Count of requests refused because no channel could serve within the bounded wait."""
    CREDENTIAL_LATENCY: Final = "CredentialLatencyMs"
    """Milliseconds spent obtaining ICE servers for one request."""
    CACHE_HITS: Final = "CredentialCacheHits"
    """Count of requests served from a shared credential set without calling KVS."""
    REQUEST_LATENCY: Final = "RequestLatencyMs"
    """Milliseconds the broker API spent on one request, end to end."""

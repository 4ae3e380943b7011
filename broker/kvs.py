"""The two KVS calls the broker makes, with endpoints cached and botocore clients created once."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from cachetools import TTLCache

from broker import redaction
from broker.exceptions import KvsError

logger = logging.getLogger(__name__)
redaction.install()


THROTTLED = "ClientLimitExceededException"
LIST_ATTEMPTS = 6
"""``ListSignalingChannels`` allows 50 calls per second per account: a burst of cold starts may be
throttled, and botocore does not retry that, so discovery retries it with jittered backoff."""
LIST_PAGE_SIZE = 10_000
# Errors after which another channel may well succeed, and after which the cached endpoint is
# suspect (the channel moved, was deleted, or its endpoint stopped answering).
_CHANNEL_FAILURES = frozenset({"ResourceNotFoundException"})

DEFAULT_CLIENT_CONFIG = Config(
    # Transient errors (5xx, connection resets) are retried by botocore itself. It does NOT retry
    # ClientLimitExceededException: the broker fails over to another channel instead.
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=2,
    read_timeout=3,
    max_pool_connections=64,
    user_agent_extra="pipecat-turn-broker",
)


def _wrap(exc: Exception, *, channel_arn: str, operation: str) -> KvsError:
    """Turn a botocore error into a ``KvsError`` that says whether another channel may help."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        channel_failure = code in _CHANNEL_FAILURES or status >= 500
        message = f"{operation} failed for {channel_arn}: {code} (HTTP {status})"
    else:
        code = type(exc).__name__
        # Unreachable or cut off: the channel's endpoint may have moved. Anything else (no credentials,
        # no region, invalid parameters) is the caller's configuration, which another channel won't fix.
        channel_failure = isinstance(exc, BotoConnectionError | HTTPClientError)
        message = f"{operation} failed for {channel_arn}: {code}"
    return KvsError(message, channel_arn=channel_arn, code=code, channel_failure=channel_failure)


class KvsSignaling:
    """Calls ``GetSignalingChannelEndpoint`` (cached per channel) and ``GetIceServerConfig``, and finds a pool.

    Thread-safe. botocore clients cost tens of milliseconds to create, so the control-plane client is
    created once and one signaling client per endpoint URL is kept for the life of the object.

    Args:
        region: AWS region of the channels.
        control_client: A ``kinesisvideo`` client to use (tests point one at the local emulator);
            by default one is created, honouring ``AWS_ENDPOINT_URL_KINESIS_VIDEO``.
        session: The botocore session that creates clients (default: a new one).
        client_config: botocore config for the clients (default: standard retries, short timeouts).
        endpoint_cache_seconds: How long an endpoint is cached.
        clock: Monotonic clock for the cache.
    """

    def __init__(
        self,
        *,
        region: str,
        control_client: Any | None = None,
        session: botocore.session.Session | None = None,
        client_config: Config | None = None,
        endpoint_cache_seconds: float = 6 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._region = region
        self._session = session or botocore.session.Session()
        self._config = client_config or DEFAULT_CLIENT_CONFIG
        self._lock = threading.Lock()
        self._control = control_client or self._session.create_client(
            "kinesisvideo", region_name=region, config=self._config
        )
        self._endpoints: TTLCache[str, str] = TTLCache(maxsize=100_000, ttl=endpoint_cache_seconds, timer=clock)
        self._pinned: dict[str, str] = {}  # from the pool manifest: kept until the channel fails
        self._signaling_clients: dict[str, Any] = {}
        self.endpoint_lookups = 0

    def endpoint(self, channel_arn: str) -> str:
        """Return the channel's HTTPS signaling endpoint, from the cache when it is there.

        Raises:
            KvsError: ``GetSignalingChannelEndpoint`` failed.
        """
        with self._lock:
            cached = self._pinned.get(channel_arn) or self._endpoints.get(channel_arn)
        if cached is not None:
            return cached
        try:
            answer = self._control.get_signaling_channel_endpoint(
                ChannelARN=channel_arn,
                SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS"], "Role": "MASTER"},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _wrap(exc, channel_arn=channel_arn, operation="GetSignalingChannelEndpoint") from exc
        endpoints: dict[str, str] = {
            e["Protocol"]: e["ResourceEndpoint"] for e in answer.get("ResourceEndpointList", ())
        }
        url = endpoints.get("HTTPS")
        if not url:
            raise KvsError(
                f"GetSignalingChannelEndpoint returned no HTTPS endpoint for {channel_arn}",
                channel_arn=channel_arn,
                code="NoHttpsEndpoint",
            )
        with self._lock:
            self._endpoints[channel_arn] = url
            self.endpoint_lookups += 1
        logger.debug("endpoint of %s cached", channel_arn)
        return url

    def list_channel_arns(
        self,
        prefix: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> tuple[str, ...]:
        """Return the ARNs of every ``ACTIVE`` channel whose name begins with ``prefix``, sorted by name.

        One ``ListSignalingChannels`` call per 10,000 channels (``BEGINS_WITH`` is applied by KVS).
        Throttled calls are retried up to ``LIST_ATTEMPTS`` times, waiting 50 ms, 100 ms, 200 ms ...
        times a random factor in [0.5, 1.5), so cold starts that collide spread out.

        Raises:
            KvsError: The listing failed, or stayed throttled through every attempt.
        """
        jitter = rng or random.Random()
        channels: list[tuple[str, str]] = []
        token: str | None = None
        attempt = 0
        while True:
            request: dict[str, Any] = {
                "MaxResults": LIST_PAGE_SIZE,
                "ChannelNameCondition": {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix},
            }
            if token:
                request["NextToken"] = token
            try:
                page = self._control.list_signaling_channels(**request)
            except (ClientError, BotoCoreError) as exc:
                wrapped = _wrap(exc, channel_arn=f"{prefix}*", operation="ListSignalingChannels")
                attempt += 1
                if wrapped.throttled and attempt < LIST_ATTEMPTS:
                    sleep(0.05 * 2 ** (attempt - 1) * jitter.uniform(0.5, 1.5))
                    continue
                raise wrapped from exc
            channels.extend(
                (info["ChannelName"], info["ChannelARN"])
                for info in page.get("ChannelInfoList", ())
                if info.get("ChannelStatus") == "ACTIVE" and str(info.get("ChannelName", "")).startswith(prefix)
            )
            token = page.get("NextToken")
            if not token:
                break
        logger.info("pool %s*: %d active channels", prefix, len(channels))
        return tuple(arn for _, arn in sorted(channels))

    def pin_endpoints(self, endpoints: Mapping[str, str]) -> None:
        """Know these channels' endpoints (the pool manifest's) until a channel fails: no lookup, no expiry."""
        with self._lock:
            self._pinned.update(endpoints)

    def forget(self, channel_arn: str) -> None:
        """Drop the known endpoint of a channel (after an error that suggests it moved)."""
        with self._lock:
            self._pinned.pop(channel_arn, None)
            self._endpoints.pop(channel_arn, None)

    def _signaling_client(self, endpoint_url: str) -> Any:
        with self._lock:
            client = self._signaling_clients.get(endpoint_url)
            if client is None:
                client = self._session.create_client(
                    "kinesis-video-signaling",
                    region_name=self._region,
                    endpoint_url=endpoint_url,
                    config=self._config,
                )
                self._signaling_clients[endpoint_url] = client
            return client

    def get_ice_server_config(self, channel_arn: str, *, client_id: str | None = None) -> list[dict[str, Any]]:
        """Call ``GetIceServerConfig`` for TURN and return its ``IceServerList``.

        Raises:
            KvsError: The call failed; ``code`` is the AWS error code and ``channel_failure`` says
                whether another channel may succeed (the endpoint cache entry is then dropped).
        """
        client = self._signaling_client(self.endpoint(channel_arn))
        request: dict[str, Any] = {"ChannelARN": channel_arn, "Service": "TURN"}
        if client_id:
            request["ClientId"] = client_id
        try:
            answer = client.get_ice_server_config(**request)
        except (ClientError, BotoCoreError) as exc:
            wrapped = _wrap(exc, channel_arn=channel_arn, operation="GetIceServerConfig")
            if wrapped.channel_failure:
                self.forget(channel_arn)
            raise wrapped from exc
        return list(answer.get("IceServerList", ()))

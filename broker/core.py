"""The broker: ICE servers from a pool of KVS channels, spread so no channel is ever throttled."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from broker.config import BrokerConfig
from broker.exceptions import BrokerError, ConfigurationError, CredentialTtlError, KvsError, PoolExhaustedError
from broker.ice import IceServer, IceServerSet, servers_from_kvs
from broker.kvs import KvsSignaling
from broker.scheduling import Channel, ChannelScheduler, CredentialRequest, Wait

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerStats:
    """Counters since the broker was created (for benchmarks, tests and health pages)."""

    kvs_calls: int
    throttles: int
    channel_failures: int
    cache_hits: int
    pool_exhausted: int
    endpoint_lookups: int


class IceBroker:
    """Hands out ICE servers with TURN credentials minted by a pool of KVS signaling channels.

    Each channel gets at most ``calls_per_window`` calls in any sliding window (see
    :mod:`broker.limiter`). A call goes to a channel that can serve now, chosen uniformly among them
    (else to the one that can serve soonest), so that many broker instances spread evenly over the
    pool. A throttled channel rests and the call
    fails over; when nothing can serve within ``max_wait_seconds``, :class:`PoolExhaustedError`
    carries a retry-after. Those decisions are :mod:`broker.scheduling`'s; this class drives them
    with a lock, the clock, ``sleep`` and KVS. Thread-safe: one instance serves a whole process.

    Args:
        config: The settings.
        channel_arns: The pool to spread calls over (default: ``config.channel_arns``, or the channels
            named with ``config.channel_prefix``, listed once here).
        kvs: The KVS caller (default: one built from ``config``).
        clock: Monotonic clock for rate limiting and waiting.
        wall_clock: Epoch clock for credential expiry.
        sleep: How to wait for a channel.
        rng: Source of the random scan offset.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        channel_arns: Sequence[str] | None = None,
        kvs: KvsSignaling | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._kvs = kvs or KvsSignaling(
            region=config.region, endpoint_cache_seconds=config.endpoint_cache_seconds, clock=clock
        )
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        if channel_arns is None and config.channel_prefix is not None:
            channel_arns = self._kvs.list_channel_arns(config.channel_prefix, sleep=sleep, rng=self._rng)
            if not channel_arns:
                raise ConfigurationError(
                    f"TURN_CHANNEL_PREFIX: no ACTIVE signaling channel in {config.region} is named "
                    f"{config.channel_prefix}*"
                )
        self._scheduler = ChannelScheduler.from_config(config, channel_arns=channel_arns, rng=self._rng)
        self._shared_sets: dict[str, IceServerSet] = {}  # per channel ARN, in shared mode
        self._counts = dict.fromkeys(("kvs_calls", "throttles", "channel_failures", "cache_hits", "pool_exhausted"), 0)
        extra = [config.effective_stun_url] if config.include_stun else []
        self._stun = (IceServer(urls=tuple(extra)),) if extra else ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> IceBroker:
        """Build a broker from environment variables (see :meth:`BrokerConfig.from_env`)."""
        return cls(BrokerConfig.from_env(environ), **kwargs)

    def stats(self) -> BrokerStats:
        """Return a snapshot of the counters."""
        with self._lock:
            return BrokerStats(**self._counts, endpoint_lookups=self._kvs.endpoint_lookups)

    def get_ice_servers(self, *, client_id: str | None = None) -> IceServerSet:
        """Return ICE servers with at least ``ttl_margin_seconds`` of validity left.

        Args:
            client_id: Optional ``ClientId`` passed to ``GetIceServerConfig``.

        Raises:
            PoolExhaustedError: No channel could serve within ``max_wait_seconds``.
            KvsError: KVS refused the call for a reason another channel would not change
                (access denied, invalid argument), or every channel failed.
            CredentialTtlError: KVS returned credentials shorter-lived than the safety margin.
        """
        try:
            if self.config.credential_reuse == "shared":
                return self._shared(client_id)
            return self._fetch(client_id)
        except PoolExhaustedError:
            self._count("pool_exhausted")
            raise

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _fetch(self, client_id: str | None) -> IceServerSet:
        """Call ``GetIceServerConfig`` where :class:`CredentialRequest` says, until a channel answers.

        A request that fails still made its calls: the error carries them (``kvs_calls``,
        ``throttles``), so the caller's metrics count every KVS call.
        """
        request = CredentialRequest(self._scheduler, self._clock(), max_wait_seconds=self.config.max_wait_seconds)
        try:
            return self._fetch_for(request, client_id)
        except BrokerError as exc:
            exc.kvs_calls, exc.throttles = request.calls, request.throttles
            raise

    def _fetch_for(self, request: CredentialRequest, client_id: str | None) -> IceServerSet:
        while True:
            with self._lock:
                now = self._clock()
                step = request.next_step(now)
            if isinstance(step, Wait):
                self._sleep(step.until - now)
                continue
            self._count("kvs_calls")
            channel = step.channel
            sent_at = self._wall()
            try:
                entries = self._kvs.get_ice_server_config(channel.arn, client_id=client_id)
            except KvsError as exc:
                self._fail_over(request, channel, exc)
                continue
            with self._lock:
                done = request.on_answer(channel, self._clock())
            return self._build(entries, channel.arn, sent_at, calls=done.calls, throttles=done.throttles)

    def _fail_over(self, request: CredentialRequest, channel: Channel, error: KvsError) -> None:
        """Hand a failed call to the request: return to fail over, or raise what it raises."""
        with self._lock:
            request.on_answer(channel, self._clock(), error)
            self._counts["throttles" if error.throttled else "channel_failures"] += 1
        if error.throttled:
            logger.warning("channel %s throttled; failing over", channel.arn)
        else:
            logger.warning("channel %s failed (%s); failing over", channel.arn, error.code)

    def _build(
        self, entries: list[dict[str, Any]], channel_arn: str, sent_at: float, *, calls: int, throttles: int
    ) -> IceServerSet:
        servers, ttl = servers_from_kvs(entries, transports=self.config.transports)
        if not servers:
            raise BrokerError(
                f"GetIceServerConfig from {channel_arn} returned no TURN URI for TURN_TRANSPORTS="
                f"{','.join(sorted(self.config.transports))}"
            )
        # The TTL started when KVS answered, which was after we asked: counting from the request
        # makes the expiry a little early, never late.
        expires_at = sent_at + ttl
        remaining = expires_at - self._wall()
        if remaining < self.config.ttl_margin_seconds:
            raise CredentialTtlError(
                f"credentials from {channel_arn} have {remaining:.0f} s left, less than "
                f"TURN_TTL_MARGIN_SECONDS={self.config.ttl_margin_seconds:g}"
            )
        logger.info("ICE servers from %s: %d servers, %.0f s left", channel_arn, len(servers), remaining)
        return IceServerSet(
            servers=servers + self._stun,
            expires_at=expires_at,
            channel_arn=channel_arn,
            kvs_calls=calls,
            throttles=throttles,
        )

    def _pick_shared(self, min_remaining: float) -> IceServerSet | None:
        """Return a cached shared set with at least ``min_remaining`` seconds left, if any."""
        now = self._wall()
        with self._lock:
            arns = self._scheduler.arns
            start = self._rng.randrange(len(arns))
            for offset in range(len(arns)):
                cached = self._shared_sets.get(arns[(start + offset) % len(arns)])
                if cached is not None and cached.remaining(now) >= min_remaining:
                    self._counts["cache_hits"] += 1
                    return replace(cached, cache_hit=True)
        return None

    def _shared(self, client_id: str | None) -> IceServerSet:
        """Serve a shared set; refresh it ahead of expiry with one caller while others keep using it."""
        hit = self._pick_shared(self.config.shared_refresh_seconds)
        if hit is not None:
            return hit
        stale = self._pick_shared(self.config.ttl_margin_seconds)
        if stale is not None:
            if not self._refresh_lock.acquire(blocking=False):
                return stale  # another caller is refreshing; this set is still good enough
        elif not self._refresh_lock.acquire(timeout=self.config.max_wait_seconds):
            raise PoolExhaustedError("timed out waiting for the shared TURN credential refresh", retry_after=1.0)
        try:
            hit = self._pick_shared(self.config.shared_refresh_seconds)
            if hit is not None:
                return hit  # refreshed while this caller waited
            try:
                fetched = self._fetch(client_id)
            except BrokerError:
                if stale is not None and stale.remaining(self._wall()) >= self.config.ttl_margin_seconds:
                    logger.warning("shared credential refresh failed; serving the current set")
                    return stale
                raise
            with self._lock:
                self._shared_sets[fetched.channel_arn] = replace(fetched, kvs_calls=0, throttles=0)
            return fetched
        finally:
            self._refresh_lock.release()

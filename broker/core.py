"""The broker: ICE servers from a pool of KVS channels, spread so no channel is ever throttled."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from broker.config import BrokerConfig
from broker.exceptions import BrokerError, CredentialTtlError, KvsError, PoolExhaustedError
from broker.ice import IceServer, IceServerSet, servers_from_kvs
from broker.kvs import KvsSignaling
from broker.limiter import SlidingWindowLimiter

logger = logging.getLogger(__name__)


@dataclass
class _Channel:
    arn: str
    limiter: SlidingWindowLimiter
    cooldown_until: float = float("-inf")
    shared: IceServerSet | None = None


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
    :mod:`broker.limiter`). A call goes to the channel that can serve soonest, scanning from a random
    offset so that many broker instances spread over the pool. A throttled channel rests and the call
    fails over; when nothing can serve within ``max_wait_seconds``, :class:`PoolExhaustedError`
    carries a retry-after. Thread-safe: one instance serves a whole process.

    Args:
        config: The settings.
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
        self._channels = [
            _Channel(arn, SlidingWindowLimiter(config.calls_per_window, config.window_seconds))
            for arn in config.channel_arns
        ]
        self._by_arn = {channel.arn: channel for channel in self._channels}
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

    def _acquire(self, deadline: float, last_failure: KvsError | None, tried: set[str]) -> _Channel:
        """Take a slot on the channel that can serve soonest, waiting until ``deadline`` at most.

        Channels in ``tried`` (failed earlier in this request) are skipped while others remain.
        """
        count = len(self._channels)
        while True:
            with self._lock:
                now = self._clock()
                best, best_at = self._channels[0], float("inf")
                start = self._rng.randrange(count)
                skip = tried if len(tried) < count else set()
                for offset in range(count):
                    channel = self._channels[(start + offset) % count]
                    if channel.arn in skip:
                        continue
                    ready_at = max(channel.cooldown_until, channel.limiter.ready_at(now))
                    if ready_at < best_at:
                        best, best_at = channel, ready_at
                        if ready_at <= now:
                            break
                if best_at <= now:
                    best.limiter.acquire(now)
                    return best
                if best_at > deadline:
                    if last_failure is not None:
                        raise last_failure
                    raise PoolExhaustedError(
                        f"no TURN channel of {count} can serve within {self.config.max_wait_seconds:g} s",
                        retry_after=best_at - now,
                    )
            self._sleep(best_at - now)

    def _release(self, channel: _Channel, failure: KvsError | None) -> None:
        with self._lock:
            now = self._clock()
            channel.limiter.release(now)
            if failure is None:
                return
            rest = self.config.throttle_cooldown_seconds if failure.throttled else self.config.failure_cooldown_seconds
            channel.cooldown_until = max(channel.cooldown_until, now + rest)

    def _fetch(self, client_id: str | None) -> IceServerSet:
        """Call ``GetIceServerConfig`` on the best channel, failing over until one answers."""
        deadline = self._clock() + self.config.max_wait_seconds
        calls = throttles = failures = 0
        last_failure: KvsError | None = None
        tried: set[str] = set()
        while True:
            channel = self._acquire(deadline, last_failure, tried)
            sent_at = self._wall()
            calls += 1
            self._count("kvs_calls")
            try:
                entries = self._kvs.get_ice_server_config(channel.arn, client_id=client_id)
            except KvsError as exc:
                self._release(channel, exc)
                tried.add(channel.arn)
                if exc.throttled:
                    throttles += 1
                    self._count("throttles")
                    logger.warning("channel %s throttled; failing over", channel.arn)
                    continue
                if exc.channel_failure and failures < len(self._channels):
                    failures += 1
                    self._count("channel_failures")
                    last_failure = exc
                    logger.warning("channel %s failed (%s); failing over", channel.arn, exc.code)
                    continue
                raise
            self._release(channel, None)
            return self._build(entries, channel.arn, sent_at, calls=calls, throttles=throttles)

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
            count = len(self._channels)
            start = self._rng.randrange(count)
            for offset in range(count):
                cached = self._channels[(start + offset) % count].shared
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
                self._by_arn[fetched.channel_arn].shared = replace(fetched, kvs_calls=0, throttles=0)
            return fetched
        finally:
            self._refresh_lock.release()

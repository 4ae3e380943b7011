"""The broker's decisions, as pure code: which channel serves a call, and what a KVS answer means.

Nothing here locks, sleeps, reads a clock or calls KVS: every method takes ``now`` and changes only
the state it is given. :class:`broker.core.IceBroker` drives these classes with a lock, the real
clock, ``sleep`` and :class:`broker.kvs.KvsSignaling`; the fleet simulation (``bench.fleet``) drives
the very same classes on a virtual clock, so what it measures is what the broker decides.

- :class:`ChannelScheduler`: one broker's view of the pool (a limiter and a cooldown per channel).
  It picks uniformly at random among the channels that can serve now, so that many brokers that
  never talk spread evenly over the pool, and otherwise says when the soonest one can.
- :class:`CredentialRequest`: one caller's attempt to get credentials: it sends to the best channel
  not yet tried, waits while nothing can serve, fails over after a throttle or a channel failure,
  and gives up with :class:`PoolExhaustedError` (or the last channel failure) past its deadline.

A request alternates :meth:`CredentialRequest.next_step` (``Send`` or ``Wait``) and, after each
``Send``, :meth:`CredentialRequest.on_answer` (``Done`` or ``Retry``)::

    request = CredentialRequest(scheduler, now, max_wait_seconds=2.0)
    while True:
        step = request.next_step(now)  # may raise PoolExhaustedError or the last channel failure
        if isinstance(step, Wait):
            now = sleep_until(step.until)
            continue
        error = call_kvs(step.channel.arn)  # None when KVS answered
        if isinstance(request.on_answer(step.channel, now_after_answer, error), Done):
            break
"""

from __future__ import annotations

import random
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import overload

from broker.config import BrokerConfig
from broker.exceptions import KvsError, PoolExhaustedError
from broker.limiter import SlidingWindowLimiter


@dataclass(eq=False, slots=True)
class Channel:
    """One channel of the pool as one scheduler sees it.

    Attributes:
        arn: The signaling channel's ARN.
        limiter: This scheduler's calls on the channel (see :mod:`broker.limiter`).
        cooldown_until: The channel rests until then after a throttle or a failure.
    """

    arn: str
    limiter: SlidingWindowLimiter
    cooldown_until: float = float("-inf")

    def ready_at(self, now: float) -> float:
        """Return the earliest time (>= ``now`` unless the channel is free) a call could be sent."""
        return max(self.cooldown_until, self.limiter.ready_at(now))


class ChannelScheduler:
    """Spreads one broker's calls over a pool of channels (not thread-safe: callers lock).

    Args:
        channel_arns: The pool, each channel once.
        calls_per_window: Calls allowed per channel in any sliding window (KVS: 5).
        window_seconds: The window's length.
        throttle_cooldown_seconds: How long a channel rests after ``ClientLimitExceededException``.
        failure_cooldown_seconds: How long a channel rests after any other error.
        rng: Source of the random choice among ready channels.

    Attributes:
        channels: Each channel's state, in pool order.
        arns: The pool's ARNs, in the same order.

    Raises:
        ValueError: The pool is empty or lists a channel twice.
    """

    PROBES = 4
    """Random channels :meth:`next_channel` tries before it scans the pool."""

    def __init__(
        self,
        channel_arns: Sequence[str],
        *,
        calls_per_window: int = 5,
        window_seconds: float = 1.0,
        throttle_cooldown_seconds: float = 1.0,
        failure_cooldown_seconds: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not channel_arns:
            raise ValueError("the channel pool is empty")
        if len(set(channel_arns)) != len(channel_arns):
            raise ValueError("the channel pool lists a channel twice")
        self.channels = tuple(
            Channel(arn, SlidingWindowLimiter(calls_per_window, window_seconds)) for arn in channel_arns
        )
        self.arns = tuple(channel.arn for channel in self.channels)
        self.throttle_cooldown_seconds = throttle_cooldown_seconds
        self.failure_cooldown_seconds = failure_cooldown_seconds
        self._rng = rng or random.Random()

    @classmethod
    def from_config(
        cls, config: BrokerConfig, *, channel_arns: Sequence[str] | None = None, rng: random.Random | None = None
    ) -> ChannelScheduler:
        """Build a scheduler with ``config``'s limits over ``channel_arns`` (default: ``config.channel_arns``)."""
        return cls(
            config.channel_arns if channel_arns is None else channel_arns,
            calls_per_window=config.calls_per_window,
            window_seconds=config.window_seconds,
            throttle_cooldown_seconds=config.throttle_cooldown_seconds,
            failure_cooldown_seconds=config.failure_cooldown_seconds,
            rng=rng,
        )

    def __len__(self) -> int:
        return len(self.channels)

    def next_channel(self, now: float, skip: Set[str] = frozenset()) -> tuple[Channel | None, float]:
        """Pick a channel that can serve at ``now``, uniformly at random among those that can.

        Channels in ``skip`` are passed over while others remain; once it covers the whole pool it
        is ignored, so a request that tried every channel may come back to the best of them.

        Uniform, not "the first ready one after a random offset", which gives the channel after a
        busy run of channels that run's share too. First up to ``PROBES`` channels drawn uniformly
        from the whole pool: the first that is ready and not skipped is taken, which is uniform
        among such channels (rejection sampling), and at the recommended pool size most channels
        are ready, so this is O(1) expected. Only when every probe misses does one scan collect
        the ready channels and choose among them uniformly; a choice that is uniform on either
        path is uniform overall. The same scan finds the soonest time when none is ready.

        Returns:
            ``(channel, when)``: a channel that can take a call at ``now`` (``when <= now``), or
            ``None`` and the earliest time one could (``when > now``).
        """
        channels = self.channels
        count = len(channels)
        if len(skip) >= count:
            skip = frozenset()
        randrange = self._rng.randrange
        for _ in range(self.PROBES):
            channel = channels[randrange(count)]
            if channel.arn not in skip:
                ready_at = channel.ready_at(now)
                if ready_at <= now:
                    return channel, ready_at
        ready: list[tuple[Channel, float]] = []
        soonest = float("inf")
        for channel in channels:
            if channel.arn in skip:
                continue
            ready_at = channel.ready_at(now)
            if ready_at <= now:
                ready.append((channel, ready_at))
            else:
                soonest = min(soonest, ready_at)
        if ready:
            return ready[randrange(len(ready))]
        return None, soonest

    def acquire(self, channel: Channel, now: float) -> None:
        """Take a slot on ``channel`` for a call sent at ``now``.

        Raises:
            RuntimeError: The channel cannot take a call at ``now``.
        """
        if channel.cooldown_until > now:
            raise RuntimeError(f"channel {channel.arn} rests until {channel.cooldown_until}")
        channel.limiter.acquire(now)

    def release(self, channel: Channel, now: float, failure: KvsError | None = None) -> None:
        """Record the answer to a call taken with :meth:`acquire`; rest the channel if it failed.

        A throttled channel rests ``throttle_cooldown_seconds``; any other error,
        ``failure_cooldown_seconds``.
        """
        channel.limiter.release(now)
        if failure is None:
            return
        rest = self.throttle_cooldown_seconds if failure.throttled else self.failure_cooldown_seconds
        channel.cooldown_until = max(channel.cooldown_until, now + rest)


@dataclass(frozen=True)
class Send:
    """Call ``GetIceServerConfig`` on ``channel`` now (its slot is taken)."""

    channel: Channel


@dataclass(frozen=True)
class Wait:
    """Nothing can serve yet: ask again at ``until``."""

    until: float


@dataclass(frozen=True)
class Done:
    """``channel`` answered: the request is served after ``calls`` calls, ``throttles`` of them refused."""

    channel: Channel
    calls: int
    throttles: int


@dataclass(frozen=True)
class Retry:
    """The call failed with ``error`` and another channel may serve: ask :meth:`~CredentialRequest.next_step`."""

    error: KvsError


class CredentialRequest:
    """One caller's way through the pool, from its first call to credentials or a typed error.

    Args:
        scheduler: The broker's view of the pool.
        now: When the request started.
        max_wait_seconds: Longest the request waits for a channel (its deadline is ``now`` plus this).

    Attributes:
        deadline: No call is sent after this time.
        tried: Channels that failed or throttled this request (skipped while others remain).
        calls: Calls sent.
        throttles: Calls refused with ``ClientLimitExceededException``.
        failures: Channel failures failed over (at most one per channel of the pool).
        last_failure: The latest channel failure, raised instead of ``PoolExhaustedError`` if the
            deadline passes after one.
    """

    def __init__(self, scheduler: ChannelScheduler, now: float, *, max_wait_seconds: float) -> None:
        self.scheduler = scheduler
        self.max_wait_seconds = max_wait_seconds
        self.deadline = now + max_wait_seconds
        self.tried: set[str] = set()
        self.calls = 0
        self.throttles = 0
        self.failures = 0
        self.last_failure: KvsError | None = None

    def next_step(self, now: float) -> Send | Wait:
        """Take a slot on the channel that can serve soonest, or say when to ask again.

        Raises:
            PoolExhaustedError: No channel can serve before the deadline; ``retry_after`` says when
                the best one could.
            KvsError: The deadline passed after a channel failure: that failure.
        """
        channel, ready_at = self.scheduler.next_channel(now, self.tried)
        if channel is not None:
            self.scheduler.acquire(channel, now)
            self.calls += 1
            return Send(channel)
        if ready_at > self.deadline:
            if self.last_failure is not None:
                raise self.last_failure
            raise PoolExhaustedError(
                f"no TURN channel of {len(self.scheduler)} can serve within {self.max_wait_seconds:g} s",
                retry_after=ready_at - now,
            )
        return Wait(ready_at)

    @overload
    def on_answer(self, channel: Channel, now: float, error: None = None) -> Done: ...
    @overload
    def on_answer(self, channel: Channel, now: float, error: KvsError) -> Retry: ...
    def on_answer(self, channel: Channel, now: float, error: KvsError | None = None) -> Done | Retry:
        """Record the answer to the last ``Send``: ``error`` is ``None`` when KVS served it.

        A throttle fails over (bounded by the deadline); a channel failure (not found, unreachable,
        5xx) fails over at most once per channel of the pool.

        Raises:
            KvsError: ``error``, when another channel would not change it (access denied, invalid
                argument), or when channel failures outnumber the pool.
        """
        self.scheduler.release(channel, now, error)
        if error is None:
            return Done(channel, self.calls, self.throttles)
        self.tried.add(channel.arn)
        if error.throttled:
            self.throttles += 1
            return Retry(error)
        if error.channel_failure and self.failures < len(self.scheduler):
            self.failures += 1
            self.last_failure = error
            return Retry(error)
        raise error

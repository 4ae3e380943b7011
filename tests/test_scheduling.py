"""The broker's pure decisions (broker.scheduling) on a fake clock: no threads, sockets or sleeping."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import KvsError, PoolExhaustedError
from broker.scheduling import Channel, ChannelScheduler, CredentialRequest, Done, Retry, Send, Wait

ARNS = [f"arn:aws:kinesisvideo:us-east-1:123456789012:channel/pool-{k}/1" for k in range(4)]


def throttle(arn: str) -> KvsError:
    return KvsError("throttled", channel_arn=arn, code="ClientLimitExceededException")


def not_found(arn: str) -> KvsError:
    return KvsError("gone", channel_arn=arn, code="ResourceNotFoundException", channel_failure=True)


def scheduler(count: int = 4, *, seed: int = 1, **settings: Any) -> ChannelScheduler:
    return ChannelScheduler(ARNS[:count], rng=random.Random(seed), **settings)


def send(request: CredentialRequest, now: float) -> Channel:
    step = request.next_step(now)
    assert isinstance(step, Send), step
    return step.channel


def fill(pool: ChannelScheduler, channel: Channel, at: float, calls: int = 5) -> None:
    """Use up ``calls`` slots of ``channel`` with calls answered instantly at ``at``."""
    for _ in range(calls):
        pool.acquire(channel, at)
        pool.release(channel, at)


def first_choice(seed: int) -> str:
    channel, _ = ChannelScheduler(ARNS, rng=random.Random(seed)).next_channel(0.0)
    assert channel is not None
    return channel.arn


def test_fresh_schedulers_start_at_random_channels() -> None:
    # Many brokers that never talk: their first calls spread evenly over the pool.
    first = Counter(first_choice(seed) for seed in range(2000))
    assert set(first) == set(ARNS)
    assert all(400 < count < 600 for count in first.values()), first


def test_one_scheduler_spreads_its_own_calls_too() -> None:
    pool = scheduler()
    picks: Counter[str] = Counter()
    for k in range(400):
        channel, when = pool.next_channel(float(k))  # one call a second: every channel is always free
        assert channel is not None and when == float(k)
        picks[channel.arn] += 1
    assert all(60 < count < 140 for count in picks.values()), picks


def pool_of(count: int, *, seed: int = 1) -> ChannelScheduler:
    return ChannelScheduler(
        [f"arn:aws:kinesisvideo:us-east-1:123456789012:channel/big-{k}/1" for k in range(count)],
        rng=random.Random(seed),
    )


def draws(pool: ChannelScheduler, now: float, times: int, skip: frozenset[str] = frozenset()) -> Counter[int]:
    """Which channel (by index) ``next_channel`` picks in ``times`` draws; the state does not change."""
    index = {channel.arn: k for k, channel in enumerate(pool.channels)}
    picks: Counter[int] = Counter()
    for _ in range(times):
        channel, when = pool.next_channel(now, skip)
        assert channel is not None and when <= now
        picks[index[channel.arn]] += 1
    return picks


def test_a_ready_channel_is_chosen_uniformly_and_a_busy_one_never() -> None:
    pool = pool_of(8)
    for channel in pool.channels[4:]:
        fill(pool, channel, 0.5)  # busy until 1.5
    picks = draws(pool, 1.0, 8000)
    assert set(picks) == {0, 1, 2, 3}
    # Each ready channel 25 %: 2000 +- 39 (one standard deviation); the bounds are 5 of them.
    assert all(1800 < count < 2200 for count in picks.values()), picks


def test_the_channel_after_a_run_of_busy_ones_gets_no_more_than_its_share() -> None:
    # A first-ready-after-a-random-offset scan would give channel 7 the share of 1..6 too (7/8).
    pool = pool_of(8)
    for channel in pool.channels[1:7]:
        fill(pool, channel, 0.5)
    picks = draws(pool, 1.0, 4000)
    assert set(picks) == {0, 7}
    assert all(1800 < count < 2200 for count in picks.values()), picks


def test_the_pick_stays_uniform_when_the_random_probes_miss() -> None:
    # 3 ready channels of 64: the probes nearly always miss, so the scan decides, uniformly too.
    pool = pool_of(64)
    ready = {5, 30, 63}
    for k, channel in enumerate(pool.channels):
        if k not in ready:
            fill(pool, channel, 0.5)
    picks = draws(pool, 1.0, 6000)
    assert set(picks) == ready
    assert all(1800 < count < 2200 for count in picks.values()), picks


def test_skipped_channels_are_never_picked_while_others_are_ready() -> None:
    pool = pool_of(8)
    skip = frozenset(pool.arns[:6])
    picks = draws(pool, 0.0, 4000, skip)
    assert set(picks) == {6, 7}
    assert all(1800 < count < 2200 for count in picks.values()), picks


def test_with_no_channel_ready_the_soonest_time_among_those_not_skipped_is_returned() -> None:
    pool = pool_of(40)
    for k, channel in enumerate(pool.channels):
        fill(pool, channel, 0.1 + k * 0.01)  # channel k is free again at 1.1 + k / 100
    pool.channels[3].cooldown_until = 9.0  # its window ends sooner, but it rests longer

    def soonest(skip: frozenset[str] = frozenset()) -> float:
        channel, when = pool.next_channel(1.0, skip)
        assert channel is None
        return when

    assert soonest() == pytest.approx(1.1)
    assert soonest(frozenset(pool.arns[:2])) == pytest.approx(1.12)
    assert soonest(frozenset(pool.arns[:3])) == pytest.approx(1.14)  # channel 3 rests until 9
    assert soonest(frozenset(pool.arns)) == pytest.approx(1.1)  # every channel skipped: the skip is ignored


def test_the_channel_that_can_serve_soonest_is_chosen() -> None:
    pool = scheduler(3, calls_per_window=5, window_seconds=1.0)
    a, b, c = pool.channels
    fill(pool, a, 0.5)  # free again at 1.5
    fill(pool, b, 0.3)  # free again at 1.3
    fill(pool, c, 0.0)
    c.cooldown_until = 1.8  # its window ends at 1.0, but it rests longer
    request = CredentialRequest(pool, 1.0, max_wait_seconds=2.0)
    assert pool.next_channel(1.0) == (None, pytest.approx(1.3))
    assert request.next_step(1.0) == Wait(pytest.approx(1.3))
    assert send(request, 1.3) is b


def test_a_throttled_channel_rests_and_the_request_fails_over() -> None:
    pool = scheduler(2, throttle_cooldown_seconds=1.0)
    request = CredentialRequest(pool, 0.0, max_wait_seconds=2.0)
    first = send(request, 0.0)
    refused = throttle(first.arn)
    assert request.on_answer(first, 0.02, refused) == Retry(refused)
    assert first.cooldown_until == pytest.approx(1.02)
    assert first.arn in request.tried
    second = send(request, 0.02)
    assert second is not first
    assert request.on_answer(second, 0.04) == Done(second, calls=2, throttles=1)


def test_channels_tried_in_this_request_are_skipped_while_others_remain() -> None:
    pool = scheduler(3, throttle_cooldown_seconds=0.0)  # a throttled channel is free again at once
    request = CredentialRequest(pool, 0.0, max_wait_seconds=2.0)
    seen = []
    for k in range(3):
        channel = send(request, k * 0.01)
        seen.append(channel.arn)
        assert isinstance(request.on_answer(channel, k * 0.01, throttle(channel.arn)), Retry)
    assert sorted(seen) == sorted(ARNS[:3])  # three different channels
    assert send(request, 0.05).arn in ARNS[:3]  # every channel tried: the skip set no longer applies


def test_channel_failures_fail_over_at_most_once_per_channel() -> None:
    pool = scheduler(2, failure_cooldown_seconds=0.0)
    request = CredentialRequest(pool, 0.0, max_wait_seconds=2.0)
    for k in range(2):
        channel = send(request, 0.0)
        assert isinstance(request.on_answer(channel, 0.0, not_found(channel.arn)), Retry)
        assert request.failures == k + 1
    channel = send(request, 0.0)
    error = not_found(channel.arn)
    with pytest.raises(KvsError) as caught:
        request.on_answer(channel, 0.0, error)
    assert caught.value is error
    assert request.calls == 3


def test_an_error_another_channel_would_not_change_is_raised_at_once() -> None:
    pool = scheduler(3, failure_cooldown_seconds=30.0)
    request = CredentialRequest(pool, 0.0, max_wait_seconds=2.0)
    channel = send(request, 0.0)
    denied = KvsError("denied", channel_arn=channel.arn, code="AccessDeniedException")
    with pytest.raises(KvsError) as caught:
        request.on_answer(channel, 0.01, denied)
    assert caught.value is denied
    assert channel.cooldown_until == pytest.approx(30.01)  # as before the refactor: any error rests it
    assert channel.limiter.in_flight == 0


def test_an_exhausted_pool_waits_within_the_deadline_then_raises_with_retry_after() -> None:
    pool = scheduler(1)
    (channel,) = pool.channels
    fill(pool, channel, 0.2)  # free again at 1.2
    patient = CredentialRequest(pool, 0.5, max_wait_seconds=2.0)
    assert patient.next_step(0.5) == Wait(pytest.approx(1.2))
    hurried = CredentialRequest(pool, 0.5, max_wait_seconds=0.1)
    with pytest.raises(PoolExhaustedError, match=r"no TURN channel of 1 can serve within 0\.1 s") as caught:
        hurried.next_step(0.5)
    assert caught.value.retry_after == pytest.approx(0.7)


def test_past_the_deadline_after_a_channel_failure_that_failure_is_raised() -> None:
    pool = scheduler(1, failure_cooldown_seconds=30.0)
    request = CredentialRequest(pool, 0.0, max_wait_seconds=2.0)
    channel = send(request, 0.0)
    error = not_found(channel.arn)
    assert isinstance(request.on_answer(channel, 0.05, error), Retry)
    with pytest.raises(KvsError) as caught:
        request.next_step(0.05)  # the only channel rests 30 s, far past the deadline
    assert caught.value is error


def test_a_scheduler_refuses_misuse() -> None:
    pool = scheduler(1)
    (channel,) = pool.channels
    channel.cooldown_until = 5.0
    with pytest.raises(RuntimeError, match="rests"):
        pool.acquire(channel, 1.0)
    with pytest.raises(ValueError, match="empty"):
        ChannelScheduler([])
    with pytest.raises(ValueError, match="twice"):
        ChannelScheduler([ARNS[0], ARNS[0]])


def test_from_config_takes_the_limits_and_an_explicit_pool() -> None:
    config = BrokerConfig(channel_arns=tuple(ARNS), region="us-east-1", calls_per_window=2, throttle_cooldown_seconds=3)
    pool = ChannelScheduler.from_config(config, channel_arns=ARNS[:2])
    assert pool.arns == tuple(ARNS[:2])
    assert pool.throttle_cooldown_seconds == 3
    assert ChannelScheduler.from_config(config).arns == tuple(ARNS)


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeKvs:
    """Answers GetIceServerConfig instantly; throttles the channels named in ``throttled``."""

    endpoint_lookups = 0

    def __init__(self, throttled: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.throttled = throttled
        self.calls: list[str] = []

    def get_ice_server_config(self, channel_arn: str, *, client_id: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(channel_arn)
        if channel_arn in self.throttled:
            raise throttle(channel_arn)
        return [{"Uris": ["turn:h:443?transport=udp"], "Username": "u", "Password": "p", "Ttl": 300}]


def test_ice_broker_drives_the_same_decisions_with_its_clock_and_sleep() -> None:
    clock = FakeClock()
    kvs = FakeKvs(throttled={ARNS[0]})
    config = BrokerConfig(channel_arns=tuple(ARNS), region="us-east-1", max_wait_seconds=2.0)
    broker = IceBroker(config, channel_arns=ARNS[:2], kvs=kvs, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    served = [broker.get_ice_servers() for _ in range(10)]
    assert {ice.channel_arn for ice in served} == {ARNS[1]}  # only the pool it was given, minus the throttled one
    # ARNS[1] takes 5 calls in its window; the sixth caller sleeps until that window has passed.
    assert clock.slept and clock.now >= 101.0
    stats = broker.stats()
    assert stats.kvs_calls == len(kvs.calls) and stats.throttles == kvs.calls.count(ARNS[0])

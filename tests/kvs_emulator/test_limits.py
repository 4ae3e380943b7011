"""KVS's rate limits as the emulator enforces them, and the faults and retries it injects."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.kvs_emulator import EmulatorConfig, FaultSpecError, KvsEmulator
from local.kvs_emulator.limits import BusiestWindow, RateLimiter
from tests.kvs_emulator.support import (
    STANDARD_RETRY,
    FakeClock,
    control_client,
    new_channels,
    signaling_client,
)

# --------------------------------------------------------------------------- rate limits


def test_five_served_then_throttled_and_counted(emu: KvsEmulator, signaling: Any) -> None:
    busy, quiet = new_channels(emu, 2)
    for _ in range(5):
        signaling.get_ice_server_config(ChannelARN=busy)
    for _ in range(2):
        with pytest.raises(signaling.exceptions.ClientLimitExceededException) as raised:
            signaling.get_ice_server_config(ChannelARN=busy)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    signaling.get_ice_server_config(ChannelARN=quiet)

    stats = emu.stats()
    busy_stats = stats["channels"][busy]["GetIceServerConfig"]
    assert busy_stats["calls"] == 7
    assert busy_stats["served"] == 5
    assert busy_stats["throttled"] == 2
    assert busy_stats["faulted"] == 0
    assert busy_stats["max_calls_in_window"] == 7
    assert stats["channels"][quiet]["GetIceServerConfig"]["served"] == 1
    assert stats["operations"]["GetIceServerConfig"]["calls"] == 8
    assert stats["operations"]["GetIceServerConfig"]["throttled"] == 2


def test_standard_retry_mode_does_not_retry_client_limit(
    emu: KvsEmulator, session: boto3.session.Session, kvs: Any
) -> None:
    (arn,) = new_channels(emu)
    client = signaling_client(session, kvs, arn, config=STANDARD_RETRY)
    for _ in range(5):
        client.get_ice_server_config(ChannelARN=arn)
    with pytest.raises(client.exceptions.ClientLimitExceededException):
        client.get_ice_server_config(ChannelARN=arn)
    assert emu.stats()["channels"][arn]["GetIceServerConfig"]["calls"] == 6


@pytest.fixture
def clocked(session: boto3.session.Session) -> Iterator[tuple[KvsEmulator, FakeClock, Any, Any]]:
    """An emulator whose rate windows run on a fake monotonic clock, with its two clients."""
    clock = FakeClock(100.0)
    config = EmulatorConfig(describe_tps_per_account=3, endpoint_tps_per_account=4, create_tps_per_account=2)
    with KvsEmulator(config, monotonic=clock) as emu:
        control = control_client(session, emu.url)
        arns = emu.create_channels(5)
        signaling = signaling_client(session, control, arns[0])
        yield emu, clock, control, signaling


def test_sliding_window_boundaries_on_arrival_time(clocked: tuple[KvsEmulator, FakeClock, Any, Any]) -> None:
    emu, clock, _, signaling = clocked
    arn = emu.channel_arns()[0]

    def outcome() -> str:
        try:
            signaling.get_ice_server_config(ChannelARN=arn)
        except signaling.exceptions.ClientLimitExceededException:
            return "throttled"
        return "served"

    assert [outcome() for _ in range(6)] == ["served"] * 5 + ["throttled"]
    clock.now = 100.999
    assert outcome() == "throttled"
    # The window is (t - 1 s, t]: at exactly 101.0 the five calls made at 100.0 have left it.
    clock.now = 101.0
    assert [outcome() for _ in range(6)] == ["served"] * 5 + ["throttled"]
    stats = emu.stats()["channels"][arn]["GetIceServerConfig"]
    assert stats == {
        "calls": 13,
        "served": 10,
        "throttled": 3,
        "faulted": 0,
        "rejected": 0,
        "errors": 0,
        "slowed": 0,
        "max_calls_in_window": 7,
    }
    assert emu.calls()["channels"][arn]["GetIceServerConfig"] == [100.0] * 6 + [100.999] + [101.0] * 6


def test_throttled_calls_do_not_fill_the_window(clocked: tuple[KvsEmulator, FakeClock, Any, Any]) -> None:
    emu, clock, _, signaling = clocked
    arn = emu.channel_arns()[1]
    for _ in range(5):
        signaling.get_ice_server_config(ChannelARN=arn)
    clock.now = 100.5
    for _ in range(5):
        with pytest.raises(signaling.exceptions.ClientLimitExceededException):
            signaling.get_ice_server_config(ChannelARN=arn)
    # Had the throttled calls counted, (100.0, 101.0] would already hold five of them.
    clock.now = 101.0
    for _ in range(5):
        signaling.get_ice_server_config(ChannelARN=arn)
    stats = emu.stats()["channels"][arn]["GetIceServerConfig"]
    assert (stats["served"], stats["throttled"], stats["max_calls_in_window"]) == (10, 5, 10)


def test_account_limits_span_channels(clocked: tuple[KvsEmulator, FakeClock, Any, Any]) -> None:
    emu, clock, control, _ = clocked
    arns = emu.channel_arns()
    for arn in arns[:3]:
        control.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(control.exceptions.ClientLimitExceededException):
        control.describe_signaling_channel(ChannelARN=arns[3])
    for name in ("a", "b"):
        control.create_signaling_channel(ChannelName=f"acct-{name}")
    with pytest.raises(control.exceptions.ClientLimitExceededException):
        control.create_signaling_channel(ChannelName="acct-c")
    # The clients fixture already made one GetSignalingChannelEndpoint call at t=100.
    for arn in arns[:3]:
        control.get_signaling_channel_endpoint(ChannelARN=arn)
    with pytest.raises(control.exceptions.ClientLimitExceededException):
        control.get_signaling_channel_endpoint(ChannelARN=arns[4])
    clock.now = 101.5
    control.describe_signaling_channel(ChannelARN=arns[3])
    control.create_signaling_channel(ChannelName="acct-c")
    control.get_signaling_channel_endpoint(ChannelARN=arns[4])
    operations = emu.stats()["operations"]
    assert operations["DescribeSignalingChannel"]["throttled"] == 1
    assert operations["CreateSignalingChannel"] == {
        "calls": 4,
        "served": 3,
        "throttled": 1,
        "faulted": 0,
        "rejected": 0,
        "errors": 0,
        "slowed": 0,
        "max_calls_in_window": 3,
    }
    assert operations["GetSignalingChannelEndpoint"]["served"] == 5


def test_describe_is_limited_per_channel_too(emu: KvsEmulator, kvs: Any) -> None:
    busy, quiet = new_channels(emu, 2)
    for _ in range(5):
        kvs.describe_signaling_channel(ChannelName=busy.split("/")[1])  # by name counts for the ARN
    with pytest.raises(kvs.exceptions.ClientLimitExceededException):
        kvs.describe_signaling_channel(ChannelARN=busy)
    kvs.describe_signaling_channel(ChannelARN=quiet)
    stats = emu.stats()["channels"]
    assert stats[busy]["DescribeSignalingChannel"]["throttled"] == 1
    assert stats[quiet]["DescribeSignalingChannel"]["served"] == 1


def test_window_recovers_in_real_time(session: boto3.session.Session) -> None:
    with KvsEmulator(EmulatorConfig(window_seconds=0.25)) as emu:
        (arn,) = emu.create_channels(1)
        client = signaling_client(session, control_client(session, emu.url), arn)
        for _ in range(5):
            client.get_ice_server_config(ChannelARN=arn)
        with pytest.raises(client.exceptions.ClientLimitExceededException):
            client.get_ice_server_config(ChannelARN=arn)
        time.sleep(0.3)
        client.get_ice_server_config(ChannelARN=arn)
        arrivals = emu.calls()["channels"][arn]["GetIceServerConfig"]
        stats = emu.stats()["channels"][arn]["GetIceServerConfig"]
    assert len(arrivals) == stats["calls"] == 7
    busiest = max(sum(1 for s in arrivals if t - 0.25 < s <= t) for t in arrivals)
    assert busiest == stats["max_calls_in_window"] == 6


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.1, 0.25, 0.5, 0.999, 1.0, 1.5]), max_size=40),
)
def test_rate_limiter_matches_a_brute_force_model(limit: int, gaps: list[float]) -> None:
    times = list(itertools.accumulate(gaps, initial=10.0))
    limiter, busiest = RateLimiter(limit, 1.0), BusiestWindow(1.0)
    admitted: list[float] = []
    for now in times:
        expected = sum(1 for t in admitted if now - 1.0 < t <= now) < limit
        assert limiter.has_room(now) == expected
        if expected:
            limiter.record(now)
            admitted.append(now)
        busiest.add(now)
    assert all(sum(1 for t in admitted if end - 1.0 < t <= end) <= limit for end in admitted)
    assert busiest.maximum == max((sum(1 for t in times if end - 1.0 < t <= end) for end in times), default=0)


# --------------------------------------------------------------------------- faults and retries


def test_injected_503_is_retried_by_standard_mode(emu: KvsEmulator, session: boto3.session.Session, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    client = signaling_client(session, kvs, arn, config=STANDARD_RETRY)
    emu.inject_fault(operation="GetIceServerConfig", kind="error", count=1)
    response = client.get_ice_server_config(ChannelARN=arn)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    stats = emu.stats()["channels"][arn]["GetIceServerConfig"]
    assert (stats["calls"], stats["faulted"], stats["served"]) == (2, 1, 1)
    assert emu.stats()["faults"] == []


def test_injected_error_surfaces_when_retries_are_off(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    emu.inject_fault(operation="GetIceServerConfig", kind="error", status=500, count=1)
    with pytest.raises(signaling.exceptions.ClientError) as raised:
        signaling.get_ice_server_config(ChannelARN=arn)
    assert raised.value.response["Error"]["Code"] == "InternalFailure"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_injected_throttle_and_not_found_respect_count_and_channel(emu: KvsEmulator, signaling: Any) -> None:
    target, bystander = new_channels(emu, 2)
    emu.inject_fault(operation="GetIceServerConfig", kind="throttle", count=2, channel_arn=target)
    emu.inject_fault(operation="GetIceServerConfig", kind="not_found", count=1, channel_arn=target)
    signaling.get_ice_server_config(ChannelARN=bystander)
    for _ in range(2):
        with pytest.raises(signaling.exceptions.ClientLimitExceededException):
            signaling.get_ice_server_config(ChannelARN=target)
    with pytest.raises(signaling.exceptions.ResourceNotFoundException):
        signaling.get_ice_server_config(ChannelARN=target)
    signaling.get_ice_server_config(ChannelARN=target)
    stats = emu.stats()
    assert stats["faults"] == []
    target_stats = stats["channels"][target]["GetIceServerConfig"]
    assert (target_stats["faulted"], target_stats["served"], target_stats["throttled"]) == (3, 1, 0)
    assert stats["channels"][bystander]["GetIceServerConfig"]["faulted"] == 0


def test_slow_fault_delays_then_serves(emu: KvsEmulator, signaling: Any, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    emu.inject_fault(operation="*", kind="slow", delay_ms=150, count=1)
    started = time.perf_counter()
    kvs.describe_signaling_channel(ChannelARN=arn)
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    signaling.get_ice_server_config(ChannelARN=arn)
    assert time.perf_counter() - started < 0.1
    stats = emu.stats()["channels"][arn]["DescribeSignalingChannel"]
    assert (stats["slowed"], stats["served"]) == (1, 1)


def test_invalid_fault_specs_are_refused(emu: KvsEmulator) -> None:
    for bad in (
        {"kind": "explode"},
        {"operation": "PutMedia", "kind": "error"},
        {"kind": "slow"},
        {"kind": "error", "status": 200},
        {"kind": "error", "count": 0},
    ):
        with pytest.raises(FaultSpecError):
            emu.inject_fault(**bad)

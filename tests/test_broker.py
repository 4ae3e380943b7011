"""The broker against the KVS emulator over HTTP, with real boto3 clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from broker.core import IceBroker
from broker.exceptions import CredentialTtlError, KvsError, PoolExhaustedError
from local.kvs_emulator import KvsEmulator
from tests.emulator_stats import channel_op, operation_total

Make = Callable[..., IceBroker]
ICE = "GetIceServerConfig"
ENDPOINT = "GetSignalingChannelEndpoint"


class FakeWallClock:
    """An epoch clock that a test moves forward by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_returns_working_turn_credentials(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(2)
    broker = make_broker(arns)
    before = time.time()
    ice = broker.get_ice_servers()
    assert ice.channel_arn in arns
    assert (ice.kvs_calls, ice.throttles, ice.cache_hit) == (1, 0, False)
    assert len(ice.servers) == 2  # like KVS: two servers, each with its own credentials
    secret = emulator.config.turn_secret.encode()
    for server in ice.servers:
        assert server.urls and all(url.startswith("turn:127.0.0.1:") for url in server.urls)
        assert server.username is not None and server.credential is not None
        expected = base64.b64encode(hmac.new(secret, server.username.encode(), hashlib.sha1).digest()).decode()
        assert server.credential == expected  # coturn's TURN REST check will accept it
    assert before + 300 - 2 <= ice.expires_at <= time.time() + 300
    dicts = ice.to_dicts()
    assert set(dicts[0]) == {"urls", "username", "credential"}
    assert operation_total(emulator, ICE, "served") == 1


def test_endpoints_are_cached_per_channel(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(2)
    broker = make_broker(arns)
    for _ in range(8):
        broker.get_ice_servers()
    assert operation_total(emulator, ICE, "served") == 8
    # one endpoint lookup per channel used, counted at the emulator, not eight
    assert operation_total(emulator, ENDPOINT, "calls") == len({arn for arn in arns if channel_op(emulator, arn, ICE)})
    assert broker.stats().endpoint_lookups == operation_total(emulator, ENDPOINT, "calls")


def test_a_channel_that_disappears_is_failed_over_and_its_endpoint_dropped(
    emulator: KvsEmulator, make_broker: Make
) -> None:
    arns = emulator.create_channels(2)
    broker = make_broker(arns, failure_cooldown_seconds=0.0, max_wait_seconds=5.0)
    for _ in range(50):  # until both endpoints are cached
        if broker.stats().endpoint_lookups == 2:
            break
        broker.get_ice_servers()
    assert operation_total(emulator, ENDPOINT, "calls") == 2
    emulator.inject_fault(operation=ICE, kind="not_found", count=1)
    ice = broker.get_ice_servers()
    assert ice.kvs_calls == 2  # the failed call, then another channel
    assert broker.stats().channel_failures == 1
    (failed,) = [arn for arn in arns if channel_op(emulator, arn, ICE).get("faulted")]
    assert ice.channel_arn != failed
    # the failed channel's endpoint was dropped: using it again looks it up again, once
    for _ in range(50):
        if broker.get_ice_servers().channel_arn == failed:
            break
    assert operation_total(emulator, ENDPOINT, "calls") == 3


def test_injected_throttle_fails_over_to_another_channel(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(3)
    broker = make_broker(arns)
    emulator.inject_fault(operation=ICE, kind="throttle", count=1)
    ice = broker.get_ice_servers()
    assert (ice.kvs_calls, ice.throttles) == (2, 1)
    throttled = [arn for arn in arns if channel_op(emulator, arn, ICE).get("faulted", 0)]
    assert len(throttled) == 1 and ice.channel_arn != throttled[0]
    assert broker.stats().throttles == 1


def test_real_throttles_from_two_brokers_sharing_a_pool_are_absorbed(emulator: KvsEmulator, make_broker: Make) -> None:
    # Each broker limits only itself; together they overrun the emulator's real limit.
    arns = emulator.create_channels(2)
    brokers = [make_broker(arns, max_wait_seconds=5.0) for _ in range(2)]
    results = [brokers[k % 2].get_ice_servers() for k in range(24)]
    assert len(results) == 24
    assert operation_total(emulator, ICE, "throttled") > 0
    assert operation_total(emulator, ICE, "throttled") == sum(b.stats().throttles for b in brokers)
    assert operation_total(emulator, ICE, "served") == 24


def test_pool_exhausted_carries_retry_after(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    broker = make_broker(arns, max_wait_seconds=0.1)
    start = time.monotonic()
    for _ in range(5):
        broker.get_ice_servers()
    with pytest.raises(PoolExhaustedError) as caught:
        broker.get_ice_servers()
    assert 0 < caught.value.retry_after <= 1.0 - (time.monotonic() - start) + 0.2
    assert operation_total(emulator, ICE, "calls") == 5  # the limiter refused before KVS had to
    assert operation_total(emulator, ICE, "throttled") == 0
    assert broker.stats().pool_exhausted == 1


def test_a_waiting_caller_is_served_when_the_window_moves(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    broker = make_broker(arns, max_wait_seconds=2.0)
    for _ in range(5):
        broker.get_ice_servers()
    start = time.monotonic()
    broker.get_ice_servers()
    assert 0.5 < time.monotonic() - start < 1.6
    assert operation_total(emulator, ICE, "throttled") == 0


def test_every_channel_throttled_gives_pool_exhausted(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(2)
    broker = make_broker(arns, max_wait_seconds=0.3, throttle_cooldown_seconds=5.0)
    emulator.inject_fault(operation=ICE, kind="throttle", count=2)
    with pytest.raises(PoolExhaustedError) as caught:
        broker.get_ice_servers()
    assert 4.0 < caught.value.retry_after <= 5.0


def test_credentials_shorter_than_the_margin_are_never_returned(
    start_emulator: Callable[..., KvsEmulator], make_broker: Make
) -> None:
    emulator = start_emulator(ttl_seconds=30)
    arns = emulator.create_channels(1)
    with pytest.raises(CredentialTtlError, match="TURN_TTL_MARGIN_SECONDS"):
        make_broker(arns, ttl_margin_seconds=40.0, shared_refresh_seconds=40.0).get_ice_servers()
    ice = make_broker(arns, ttl_margin_seconds=10.0, shared_refresh_seconds=10.0).get_ice_servers()
    assert ice.remaining(time.time()) >= 10.0


def test_shared_mode_reuses_then_refreshes_ahead(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(2)
    wall = FakeWallClock()
    broker = make_broker(
        arns,
        credential_reuse="shared",
        ttl_margin_seconds=30.0,
        shared_refresh_seconds=60.0,
        broker_kwargs={"wall_clock": wall},
    )
    first = broker.get_ice_servers()
    assert (first.kvs_calls, first.cache_hit) == (1, False)
    for _ in range(50):
        again = broker.get_ice_servers()
        assert again.cache_hit and again.kvs_calls == 0
        assert again.servers == first.servers
    assert operation_total(emulator, ICE, "calls") == 1  # KVS calls do not grow with sessions

    wall.now += 300 - 60 + 1  # inside the refresh-ahead window
    refreshed = broker.get_ice_servers()
    assert refreshed.kvs_calls == 1 and not refreshed.cache_hit
    assert refreshed.servers != first.servers
    assert operation_total(emulator, ICE, "calls") == 2

    # A failed refresh keeps serving the current set while it has more than the margin left.
    wall.now += 300 - 60 + 1
    emulator.inject_fault(operation=ICE, kind="throttle", count=10)
    stale = broker.get_ice_servers()
    assert stale.servers == refreshed.servers and stale.cache_hit
    # ...and never once it is inside the margin.
    wall.now += 31
    with pytest.raises(PoolExhaustedError):
        broker.get_ice_servers()


def test_a_transient_5xx_is_retried_by_botocore(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    broker = make_broker(arns)
    broker.get_ice_servers()
    emulator.inject_fault(operation=ICE, kind="error", status=503, count=1)
    ice = broker.get_ice_servers()
    assert ice.kvs_calls == 1  # one broker call; botocore's standard mode retried it
    assert operation_total(emulator, ICE, "calls") == 3
    assert operation_total(emulator, ICE, "faulted") == 1


def test_persistent_failures_raise_a_typed_error_with_the_cause(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(2)
    broker = make_broker(arns, failure_cooldown_seconds=0.0)
    emulator.inject_fault(operation=ICE, kind="not_found", count=100)
    with pytest.raises(KvsError) as caught:
        broker.get_ice_servers()
    assert caught.value.code == "ResourceNotFoundException"
    assert isinstance(caught.value.__cause__, ClientError)


def test_an_unknown_channel_in_the_pool_rests_after_failing(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    # A channel the emulator does not know (deleted, or another account's) answers ResourceNotFound.
    broker = make_broker([*arns, arns[0].replace("123456789012", "999999999999")])
    for _ in range(10):
        assert broker.get_ice_servers().channel_arn == arns[0]
    assert broker.stats().channel_failures <= 1  # after one failure it rests (30 s by default)


def test_a_request_error_is_raised_without_failover(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(3)
    broker = make_broker(arns)
    with pytest.raises(KvsError) as caught:
        broker.get_ice_servers(client_id="not a valid client id!")
    assert caught.value.code == "InvalidArgumentException"
    assert not caught.value.channel_failure
    assert operation_total(emulator, ICE, "calls") == 1


def test_slow_answers_are_waited_for(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    broker = make_broker(arns)
    emulator.inject_fault(operation=ICE, kind="slow", delay_ms=300, count=1)
    start = time.monotonic()
    broker.get_ice_servers()
    assert time.monotonic() - start >= 0.3


def test_transport_filter_and_stun(emulator: KvsEmulator, make_broker: Make) -> None:
    arns = emulator.create_channels(1)
    ice = make_broker(arns, transports=frozenset({"udp"}), include_stun=True).get_ice_servers()
    turn, stun = ice.servers[:-1], ice.servers[-1]
    assert all(url.endswith("transport=udp") for server in turn for url in server.urls)
    assert stun.urls == ("stun:stun.kinesisvideo.us-east-1.amazonaws.com:443",)
    assert stun.username is None and "credential" not in stun.to_dict()


def test_logs_never_contain_credentials(
    emulator: KvsEmulator, make_broker: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    arns = emulator.create_channels(2)
    broker = make_broker(arns, credential_reuse="shared")
    emulator.inject_fault(operation=ICE, kind="throttle", count=1)
    ice = broker.get_ice_servers()
    broker.get_ice_servers()
    logging.getLogger("test").info("handed out %r", ice)
    secrets = [s for server in ice.servers for s in (server.username, server.credential) if s]
    assert secrets
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "throttled" in text  # the failover was logged...
    for secret in secrets:
        assert secret not in text  # ...without a credential

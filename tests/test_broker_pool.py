"""Finding the pool by name prefix (``TURN_CHANNEL_PREFIX``): real botocore against the KVS emulator."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import botocore.session
import pytest

from broker.config import BrokerConfig
from broker.core import IceBroker
from broker.exceptions import ConfigurationError, KvsError
from broker.kvs import LIST_ATTEMPTS, KvsSignaling
from local.kvs_emulator import KvsEmulator
from tests.emulator_stats import operation_total

LIST = "ListSignalingChannels"


def signaling() -> KvsSignaling:
    # The session reads the endpoint and the dummy credentials from the environment (aws_env).
    return KvsSignaling(region="us-east-1", session=botocore.session.Session())


def test_lists_the_active_channels_named_with_the_prefix_in_name_order(emulator: KvsEmulator) -> None:
    pool = emulator.create_channels(12, prefix="Stack-turn")  # Stack-turn-0 ... Stack-turn-11
    emulator.create_channels(3, prefix="Other-turn")
    emulator.create_channels(2, prefix="Stack-turnip")  # a near miss: Stack-turnip-0 is not Stack-turn-*
    found = signaling().list_channel_arns("Stack-turn-")
    by_name = sorted(pool, key=lambda arn: arn.split("/")[1])
    assert found == tuple(by_name)
    assert operation_total(emulator, LIST, "served") == 1  # one call for the whole pool


def test_an_empty_prefix_match_is_an_empty_pool(emulator: KvsEmulator) -> None:
    emulator.create_channels(2, prefix="Other-turn")
    assert signaling().list_channel_arns("Stack-turn-") == ()


def test_throttled_listing_is_retried_with_jittered_backoff(emulator: KvsEmulator) -> None:
    pool = emulator.create_channels(3, prefix="Stack-turn")
    emulator.inject_fault(LIST, "throttle", count=2)
    waits: list[float] = []
    found = signaling().list_channel_arns("Stack-turn-", sleep=waits.append, rng=random.Random(7))
    assert set(found) == set(pool)
    assert len(waits) == 2
    assert 0.025 <= waits[0] < 0.075 and 0.05 <= waits[1] < 0.15  # 50 ms then 100 ms, times [0.5, 1.5)
    assert operation_total(emulator, LIST, "faulted") == 2


def test_listing_that_stays_throttled_fails_as_a_throttle(emulator: KvsEmulator) -> None:
    emulator.create_channels(1, prefix="Stack-turn")
    emulator.inject_fault(LIST, "throttle", count=LIST_ATTEMPTS)
    waits: list[float] = []
    with pytest.raises(KvsError) as raised:
        signaling().list_channel_arns("Stack-turn-", sleep=waits.append)
    assert raised.value.throttled
    assert len(waits) == LIST_ATTEMPTS - 1


def test_cold_starts_beyond_the_account_list_limit_wait_and_are_served(
    start_emulator: Callable[..., KvsEmulator],
) -> None:
    kvs = start_emulator(list_tps_per_account=2)
    kvs.create_channels(1, prefix="Stack-turn")
    waits: list[float] = []

    def wait_out_the_window(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(1.0)

    brokers = [signaling() for _ in range(3)]  # clients first: creating one takes longer than a call
    for broker in brokers:  # three cold starts in one second: the third is throttled, waits, is served
        assert len(broker.list_channel_arns("Stack-turn-", sleep=wait_out_the_window)) == 1
    assert operation_total(kvs, LIST, "throttled") == len(waits) >= 1
    assert operation_total(kvs, LIST, "served") == 3


def test_a_broker_named_by_prefix_serves_from_the_channels_it_listed(emulator: KvsEmulator) -> None:
    pool = emulator.create_channels(4, prefix="Stack-turn")
    emulator.create_channels(2, prefix="Other-turn")
    config = BrokerConfig.from_env({"TURN_CHANNEL_PREFIX": "Stack-turn-", "AWS_REGION": "us-east-1"})
    broker = IceBroker(config)
    served = {broker.get_ice_servers().channel_arn for _ in range(12)}
    assert served <= set(pool) and len(served) > 1
    assert operation_total(emulator, LIST, "served") == 1


def test_a_prefix_that_names_no_channel_is_a_clear_error(emulator: KvsEmulator) -> None:
    emulator.create_channels(2, prefix="Other-turn")
    config = BrokerConfig.from_env({"TURN_CHANNEL_PREFIX": "Stack-turn-", "AWS_REGION": "us-east-1"})
    with pytest.raises(ConfigurationError, match=r"no ACTIVE signaling channel in us-east-1 is named Stack-turn-\*"):
        IceBroker(config)

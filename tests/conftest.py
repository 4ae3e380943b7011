"""Shared fixtures: a real KVS emulator over HTTP and an AWS environment that cannot reach AWS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.config import BrokerConfig
from broker.core import IceBroker
from local import OFFLINE_AWS_ENV
from local.kvs_emulator import EmulatorConfig, KvsEmulator

DUMMY_AWS_ENV = {
    **OFFLINE_AWS_ENV,
    "AWS_ACCESS_KEY_ID": "AKIDLOCALTESTING000",  # recognisable in assertions and request logs
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials so boto3 signs requests, with nothing that could reach a real account."""
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def start_emulator(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., KvsEmulator]]:
    """Start emulators on free loopback ports; boto3 is pointed at the last one started."""
    started: list[KvsEmulator] = []

    def start(**settings: Any) -> KvsEmulator:
        emulator = KvsEmulator(EmulatorConfig(host="127.0.0.1", port=0, **settings))
        emulator.start()
        started.append(emulator)
        monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", emulator.url)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., KvsEmulator]) -> KvsEmulator:
    """A KVS emulator with default settings (5 calls per channel per second, TTL 300 s)."""
    return start_emulator()


@pytest.fixture
def make_broker() -> Callable[..., IceBroker]:
    """Build a broker with real boto3 clients (pointed at the emulator by the environment)."""

    def make(arns: list[str], *, broker_kwargs: dict[str, Any] | None = None, **settings: Any) -> IceBroker:
        config = BrokerConfig(channel_arns=tuple(arns), region="us-east-1", **settings)
        return IceBroker(config, **(broker_kwargs or {}))

    return make

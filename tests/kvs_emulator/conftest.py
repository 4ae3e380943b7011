"""Fixtures of the KVS emulator's tests: one emulator per module, dummy credentials, configured clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local.kvs_emulator import EmulatorConfig, KvsEmulator
from tests.kvs_emulator.support import (
    control_client,
    signaling_client,
)


@pytest.fixture(scope="module", autouse=True)
def dummy_aws_env() -> Iterator[None]:
    """Dummy credentials and no config files, so boto3 can only talk to an emulator."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS_VIDEO"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "x")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "x")
        mp.setenv("AWS_REGION", "us-east-1")
        # botocore reads the region from AWS_DEFAULT_REGION; AWS_REGION is what other SDKs read.
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def session(dummy_aws_env: None) -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[KvsEmulator]:
    with KvsEmulator(EmulatorConfig()) as emu:
        yield emu


@pytest.fixture
def emu(shared_emulator: KvsEmulator) -> KvsEmulator:
    """The shared emulator with fresh counters, rate windows, faults and latency."""
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture(scope="module")
def kvs(session: boto3.session.Session, shared_emulator: KvsEmulator) -> Any:
    return control_client(session, shared_emulator.url)


@pytest.fixture(scope="module")
def signaling(session: boto3.session.Session, shared_emulator: KvsEmulator, kvs: Any) -> Any:
    arn = shared_emulator.create_channel("endpoint-probe")
    return signaling_client(session, kvs, arn)

"""The KVS emulator, exercised the way the project uses it: real boto3 clients over HTTP.

Every test talks to an emulator on 127.0.0.1 with dummy credentials; nothing reaches AWS. The wire
conformance tests hold the emulator against botocore's own service models.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.config import Config
from botocore.model import Shape
from botocore.parsers import create_parser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.kvs_emulator import ROUTES, EmulatorConfig, FaultSpecError, KvsEmulator
from local.kvs_emulator.exceptions import ConfigError
from local.kvs_emulator.limits import BusiestWindow, RateLimiter

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
ARN_RE = re.compile(rf"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/(?P<name>[a-zA-Z0-9_.-]+)/(?P<ms>\d{{13}})")
# botocore's "max_attempts" counts retries; "total_max_attempts" counts the first attempt too.
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
STANDARD_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 3})
DESIGN_OPERATIONS = {
    ("kinesisvideo", "CreateSignalingChannel"),
    ("kinesisvideo", "DescribeSignalingChannel"),
    ("kinesisvideo", "ListSignalingChannels"),
    ("kinesisvideo", "DeleteSignalingChannel"),
    ("kinesisvideo", "GetSignalingChannelEndpoint"),
    ("kinesis-video-signaling", "GetIceServerConfig"),
}
_names = itertools.count()


# --------------------------------------------------------------------------- fixtures and helpers


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


def control_client(session: boto3.session.Session, url: str, config: Config = NO_RETRY) -> Any:
    """A kinesisvideo client configured the way unmodified code is: by environment variable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", url)
        return session.client("kinesisvideo", config=config)


def signaling_client(session: boto3.session.Session, control: Any, arn: str, config: Config = NO_RETRY) -> Any:
    """A kinesis-video-signaling client on the HTTPS endpoint the channel reports, as the broker builds it."""
    endpoints = control.get_signaling_channel_endpoint(
        ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS"], "Role": "MASTER"}
    )["ResourceEndpointList"]
    return session.client("kinesis-video-signaling", endpoint_url=endpoints[0]["ResourceEndpoint"], config=config)


@pytest.fixture(scope="module")
def kvs(session: boto3.session.Session, shared_emulator: KvsEmulator) -> Any:
    return control_client(session, shared_emulator.url)


@pytest.fixture(scope="module")
def signaling(session: boto3.session.Session, shared_emulator: KvsEmulator, kvs: Any) -> Any:
    arn = shared_emulator.create_channel("endpoint-probe")
    return signaling_client(session, kvs, arn)


def new_channels(emu: KvsEmulator, count: int = 1) -> list[str]:
    return emu.create_channels(count, prefix=f"t{next(_names)}")


class FakeClock:
    """A settable clock for the rate-limit windows and credential expiry."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw_request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, HeadersDict, bytes]:
    """One plain HTTP request, so tests see the bytes botocore would parse."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, HeadersDict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_json(url: str, path: str, document: Any) -> tuple[int, HeadersDict, Any]:
    status, headers, body = raw_request(url, "POST", path, json.dumps(document).encode())
    return status, headers, json.loads(body)


def model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def shape_errors(shape: Shape, value: Any, path: str = "$") -> list[str]:
    """Everything about ``value`` that a rest-json document of ``shape`` may not contain."""
    if value is None:
        return [f"{path}: null (AWS omits absent members instead)"]
    checker = _CHECKERS.get(shape.type_name)
    if checker is None:
        return [f"{path}: no checker for shape type {shape.type_name}"]
    return checker(shape, value, path)


def _structure_errors(shape: Any, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object, got {type(value).__name__}"]
    wire_names = {member.serialization.get("name", name): member for name, member in shape.members.items()}
    errors = [f"{path}.{key}: not a member of {shape.name}" for key in value if key not in wire_names]
    errors += [f"{path}.{name}: required member missing" for name in shape.required_members if name not in value]
    for key, member in wire_names.items():
        if key in value:
            errors += shape_errors(member, value[key], f"{path}.{key}")
    return errors


def _length_errors(shape: Shape, size: int, path: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if (low is not None and size < low) or (high is not None and size > high):
        return [f"{path}: length {size} outside {low}..{high}"]
    return []


def _list_errors(shape: Any, value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        return [f"{path}: expected a list, got {type(value).__name__}"]
    errors = _length_errors(shape, len(value), path)
    for index, item in enumerate(value):
        errors += shape_errors(shape.member, item, f"{path}[{index}]")
    return errors


def _string_errors(shape: Shape, value: Any, path: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{path}: expected a string, got {type(value).__name__}"]
    errors = _length_errors(shape, len(value), path)
    if shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} not in enum {shape.enum}")
    pattern = shape.metadata.get("pattern")
    # Smithy patterns are not implicitly anchored (re.search); \p{..} classes are Java-only.
    if pattern and "\\p{" not in pattern and re.search(pattern, value) is None:
        errors.append(f"{path}: {value!r} does not match {pattern}")
    return errors


def _integer_errors(shape: Shape, value: Any, path: str) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{path}: expected an integer, got {type(value).__name__}"]
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        return [f"{path}: {value} outside {low}..{high}"]
    return []


def _timestamp_errors(shape: Shape, value: Any, path: str) -> list[str]:
    # rest-json sends timestamps as epoch seconds unless the model says otherwise.
    if shape.serialization.get("timestampFormat", "unixTimestamp") != "unixTimestamp":
        return [] if isinstance(value, str) else [f"{path}: expected a formatted timestamp string"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{path}: expected epoch seconds, got {type(value).__name__}"]
    return []


_CHECKERS: dict[str, Callable[[Any, Any, str], list[str]]] = {
    "structure": _structure_errors,
    "list": _list_errors,
    "string": _string_errors,
    "integer": _integer_errors,
    "long": _integer_errors,
    "timestamp": _timestamp_errors,
    "boolean": lambda shape, value, path: [] if isinstance(value, bool) else [f"{path}: expected a boolean"],
}


# --------------------------------------------------------------------------- operations through boto3


def test_client_configured_by_environment_creates_and_describes(emu: KvsEmulator, kvs: Any) -> None:
    assert kvs.meta.endpoint_url == emu.url
    name = f"create-{next(_names)}"
    arn = kvs.create_signaling_channel(
        ChannelName=name, ChannelType="SINGLE_MASTER", SingleMasterConfiguration={"MessageTtlSeconds": 30}
    )["ChannelARN"]
    match = ARN_RE.fullmatch(arn)
    assert match is not None and match["name"] == name
    assert abs(int(match["ms"]) / 1000 - time.time()) < 60

    by_name = kvs.describe_signaling_channel(ChannelName=name)["ChannelInfo"]
    by_arn = kvs.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]
    assert by_name == by_arn
    assert by_name["ChannelARN"] == arn
    assert by_name["ChannelStatus"] == "ACTIVE"
    assert by_name["ChannelType"] == "SINGLE_MASTER"
    assert by_name["SingleMasterConfiguration"] == {"MessageTtlSeconds": 30}
    assert abs(by_name["CreationTime"].timestamp() - int(match["ms"]) / 1000) < 0.001
    assert re.fullmatch(r"[a-zA-Z0-9]{1,64}", by_name["Version"])


def test_create_errors_are_modeled_exceptions(emu: KvsEmulator, kvs: Any) -> None:
    name = f"dup-{next(_names)}"
    kvs.create_signaling_channel(ChannelName=name)
    with pytest.raises(kvs.exceptions.ResourceInUseException):
        kvs.create_signaling_channel(ChannelName=name)
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName="has spaces!")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName=f"mesh-{next(_names)}", ChannelType="FULL_MESH")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName=name + "x", SingleMasterConfiguration={"MessageTtlSeconds": 500})
    with pytest.raises(kvs.exceptions.TagsPerResourceExceededLimitException):
        kvs.create_signaling_channel(ChannelName=name + "y", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])


def test_channel_quota_raises_account_limit(session: boto3.session.Session) -> None:
    with KvsEmulator(EmulatorConfig(max_channels=2)) as emu:
        client = control_client(session, emu.url)
        emu.create_channels(2)
        with pytest.raises(client.exceptions.AccountChannelLimitExceededException):
            client.create_signaling_channel(ChannelName="one-too-many")


def test_describe_unknown_channel_raises_not_found(emu: KvsEmulator, kvs: Any) -> None:
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelName="no-such-channel")
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelARN=f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/x/1234567890123")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.describe_signaling_channel()


def test_list_paginates_and_filters_by_prefix(emu: KvsEmulator, kvs: Any) -> None:
    prefix = f"list{next(_names)}"
    created = emu.create_channels(7, prefix=prefix)
    emu.create_channels(2, prefix=f"other{next(_names)}")
    paginator = kvs.get_paginator("list_signaling_channels")
    pages = list(
        paginator.paginate(
            ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix},
            PaginationConfig={"PageSize": 3},
        )
    )
    assert [len(page["ChannelInfoList"]) for page in pages] == [3, 3, 1]
    listed = [info["ChannelARN"] for page in pages for info in page["ChannelInfoList"]]
    assert sorted(listed) == sorted(created)
    names = [info["ChannelName"] for page in pages for info in page["ChannelInfoList"]]
    assert names == sorted(names)

    first = kvs.list_signaling_channels(
        MaxResults=5, ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix}
    )
    assert len(first["ChannelInfoList"]) == 5 and "NextToken" in first
    rest = kvs.list_signaling_channels(
        MaxResults=5,
        NextToken=first["NextToken"],
        ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix},
    )
    assert len(rest["ChannelInfoList"]) == 2 and "NextToken" not in rest
    assert len(kvs.list_signaling_channels()["ChannelInfoList"]) == len(emu.channel_arns())
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.list_signaling_channels(NextToken="bm90IGEgdG9rZW4hIQ==")


def test_delete_checks_current_version(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    version = kvs.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["Version"]
    with pytest.raises(kvs.exceptions.VersionMismatchException):
        kvs.delete_signaling_channel(ChannelARN=arn, CurrentVersion="stale0version")
    kvs.delete_signaling_channel(ChannelARN=arn, CurrentVersion=version)
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.delete_signaling_channel(ChannelARN=arn)
    assert arn not in emu.channel_arns()


def test_recreated_channel_gets_a_new_arn(emu: KvsEmulator, kvs: Any) -> None:
    name = f"again-{next(_names)}"
    first = kvs.create_signaling_channel(ChannelName=name)["ChannelARN"]
    kvs.delete_signaling_channel(ChannelARN=first)
    second = kvs.create_signaling_channel(ChannelName=name)["ChannelARN"]
    assert first != second
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.get_signaling_channel_endpoint(ChannelARN=first)


def test_endpoint_points_back_at_the_emulator(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    endpoints = kvs.get_signaling_channel_endpoint(
        ChannelARN=arn,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS", "WSS", "WEBRTC"], "Role": "VIEWER"},
    )["ResourceEndpointList"]
    by_protocol = {entry["Protocol"]: entry["ResourceEndpoint"] for entry in endpoints}
    assert [entry["Protocol"] for entry in endpoints] == ["HTTPS", "WSS", "WEBRTC"]
    assert by_protocol["HTTPS"] == emu.url
    assert by_protocol["WSS"] == emu.url.replace("http://", "ws://")
    assert by_protocol["WEBRTC"].startswith("http://127.0.0.1:")
    default = kvs.get_signaling_channel_endpoint(ChannelARN=arn)["ResourceEndpointList"]
    assert {entry["Protocol"] for entry in default} == {"HTTPS", "WSS"}
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.get_signaling_channel_endpoint(
            ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS"], "Role": "BOSS"}
        )
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.get_signaling_channel_endpoint(ChannelARN=arn.replace("/t", "/gone"))


def test_ice_server_config_returns_two_servers_with_own_credentials(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    servers = signaling.get_ice_server_config(ChannelARN=arn, ClientId="viewer-1", Service="TURN")["IceServerList"]
    assert len(servers) == 2
    for server in servers:
        assert server["Uris"] == ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
        assert server["Ttl"] == 300
    assert servers[0]["Username"] != servers[1]["Username"]
    assert servers[0]["Password"] != servers[1]["Password"]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"ChannelARN": f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/none/1234567890123"}, "ResourceNotFound"),
        ({"ClientId": "bad client id!"}, "InvalidArgument"),
        ({"ClientId": "x" * 257}, "InvalidArgument"),
        ({"Service": "STUN"}, "InvalidArgument"),
        ({"Username": "no spaces allowed"}, "InvalidArgument"),
        ({"ChannelARN": "not-an-arn"}, "InvalidArgument"),
    ],
)
def test_ice_server_config_errors_are_modeled_exceptions(
    emu: KvsEmulator, signaling: Any, overrides: dict[str, str], error: str
) -> None:
    (arn,) = new_channels(emu)
    request = {"ChannelARN": arn, "ClientId": "client-1", "Service": "TURN", **overrides}
    with pytest.raises(getattr(signaling.exceptions, f"{error}Exception")):
        signaling.get_ice_server_config(**request)


# --------------------------------------------------------------------------- credentials


def test_credentials_verify_against_the_turn_secret(session: boto3.session.Session) -> None:
    wall = FakeClock(1_700_000_000.7)
    config = EmulatorConfig(
        ttl_seconds=600,
        turn_secret="s3cret",
        turn_uris=("turn:127.0.0.1:3479?transport=udp",),
        servers=3,
    )
    with KvsEmulator(config, clock=wall) as emu:
        (arn,) = emu.create_channels(1)
        assert arn.endswith("/1700000000700")
        client = signaling_client(session, control_client(session, emu.url), arn)
        servers = client.get_ice_server_config(ChannelARN=arn)["IceServerList"]
    assert len(servers) == 3
    for server in servers:
        expiry, _, user_id = server["Username"].partition(":")
        assert int(expiry) == 1_700_000_000 + 600
        assert re.fullmatch(r"[A-Za-z0-9_-]+", user_id)
        expected = base64.b64encode(hmac.new(b"s3cret", server["Username"].encode(), hashlib.sha1).digest())
        assert server["Password"] == expected.decode()
        assert server["Ttl"] == 600
        assert server["Uris"] == ["turn:127.0.0.1:3479?transport=udp"]


def test_credentials_expire_ttl_after_now(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    before = int(time.time())
    server = signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"][0]
    after = int(time.time())
    expiry = int(server["Username"].split(":")[0])
    assert before + 300 <= expiry <= after + 300
    expected = base64.b64encode(hmac.new(b"local-turn-secret", server["Username"].encode(), hashlib.sha1).digest())
    assert server["Password"] == expected.decode()


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


# --------------------------------------------------------------------------- latency and performance


def _timed_calls(call: Callable[[], object], count: int) -> list[float]:
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def test_round_trip_without_latency_is_small(emu: KvsEmulator, signaling: Any) -> None:
    """Guards against the Nagle/delayed-ACK stall (~40 ms per keep-alive request)."""
    arns = new_channels(emu, 25)
    cycle = itertools.cycle(arns)
    signaling.get_ice_server_config(ChannelARN=next(cycle))  # warm the connection pool
    durations = _timed_calls(lambda: signaling.get_ice_server_config(ChannelARN=next(cycle)), 50)
    median = statistics.median(durations)
    print(f"\nboto3 GetIceServerConfig round trip: median {median:.2f} ms, max {max(durations):.2f} ms")
    assert median < 20
    assert emu.stats()["operations"]["GetIceServerConfig"]["throttled"] == 0


def test_latency_injection_adds_measurable_delay(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    emu.set_latency(80)
    slow = _timed_calls(lambda: kvs.get_signaling_channel_endpoint(ChannelARN=arn), 4)
    emu.set_latency(0)
    fast = _timed_calls(lambda: kvs.get_signaling_channel_endpoint(ChannelARN=arn), 4)
    assert min(slow) >= 80
    assert statistics.median(fast) < 20


def test_concurrent_clients_are_served_in_parallel(emu: KvsEmulator, session: boto3.session.Session) -> None:
    """64 concurrent calls with 100 ms latency finish in far less than 6.4 s: no lock held while sleeping."""
    arns = new_channels(emu, 64)
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=64)
    client = session.client("kinesis-video-signaling", endpoint_url=emu.url, config=config)
    emu.set_latency(100)
    # Every caller waits for the others, so thread start-up on a busy machine cannot spread the 64
    # arrivals over more than one window: what is measured is the emulator, not the client.
    ready = threading.Barrier(64)

    def call(arn: str) -> Any:
        ready.wait(timeout=30)
        return client.get_ice_server_config(ChannelARN=arn)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(call, arns))
    elapsed = time.perf_counter() - started
    assert all(len(result["IceServerList"]) == 2 for result in results)
    assert elapsed < 2.0
    operation = emu.stats()["operations"]["GetIceServerConfig"]
    assert operation["served"] == 64
    assert operation["max_calls_in_window"] == 64


def test_many_open_connections_at_once(emu: KvsEmulator) -> None:
    port = emu.port
    barrier = threading.Barrier(96)

    def hold_connection_and_ask() -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.connect()
        barrier.wait()
        statuses = []
        for _ in range(3):  # keep-alive: three requests on one connection
            connection.request("GET", "/_emulator/health")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        connection.close()
        return statuses

    with ThreadPoolExecutor(max_workers=96) as pool:
        results = list(pool.map(lambda _: hold_connection_and_ask(), range(96)))
    assert results == [[200, 200, 200]] * 96


# --------------------------------------------------------------------------- wire conformance


def test_routes_match_botocore_model() -> None:
    assert {(route.service, route.operation) for route in ROUTES} == DESIGN_OPERATIONS
    for route in ROUTES:
        http_binding = model(route.service).operation_model(route.operation).http
        assert (route.method, route.path) == (http_binding["method"], http_binding["requestUri"])


def _valid_requests(emu: KvsEmulator) -> dict[str, dict[str, Any]]:
    arn, doomed = new_channels(emu, 2)
    return {
        "CreateSignalingChannel": {"ChannelName": f"wire-{next(_names)}"},
        "DescribeSignalingChannel": {"ChannelARN": arn},
        "ListSignalingChannels": {"MaxResults": 1},
        "DeleteSignalingChannel": {"ChannelARN": doomed},
        "GetSignalingChannelEndpoint": {
            "ChannelARN": arn,
            "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS", "WEBRTC"], "Role": "MASTER"},
        },
        "GetIceServerConfig": {"ChannelARN": arn, "ClientId": "wire", "Service": "TURN", "Username": "u1"},
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.operation)
def test_raw_responses_validate_against_output_shapes(emu: KvsEmulator, route: Any) -> None:
    request = _valid_requests(emu)[route.operation]
    status, headers, document = post_json(emu.url, route.path, request)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["x-amzn-RequestId"]
    output_shape = model(route.service).operation_model(route.operation).output_shape
    assert shape_errors(output_shape, document) == []
    if route.operation == "ListSignalingChannels":
        assert document["ChannelInfoList"] and "NextToken" in document  # the list shape was exercised


def test_shape_checker_rejects_malformed_responses(emu: KvsEmulator) -> None:
    arn = new_channels(emu)[0]
    _, _, ice = post_json(emu.url, "/v1/get-ice-server-config", {"ChannelARN": arn})
    _, _, described = post_json(emu.url, "/describeSignalingChannel", {"ChannelARN": arn})
    ice_shape = model("kinesis-video-signaling").operation_model("GetIceServerConfig").output_shape
    describe_shape = model("kinesisvideo").operation_model("DescribeSignalingChannel").output_shape
    assert shape_errors(ice_shape, ice) == [] and shape_errors(describe_shape, described) == []

    def broken(document: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(document))
        mutate(copy)
        return copy

    ice_mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d["IceServerList"][0].update(Ttl="300"),
        lambda d: d["IceServerList"][0].update(Ttl=5),
        lambda d: d["IceServerList"][0].update(Uris="turn:127.0.0.1:3478"),
        lambda d: d["IceServerList"][0].update(Password=""),
        lambda d: d["IceServerList"][1].update(Expiry=1),
        lambda d: d.update(IceServerList={"Uris": []}),
        lambda d: d["IceServerList"][0].update(Username=None),
    ]
    for mutate in ice_mutations:
        assert shape_errors(ice_shape, broken(ice, mutate)), mutate
    describe_mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d["ChannelInfo"].update(ChannelStatus="SLEEPING"),
        lambda d: d["ChannelInfo"].update(CreationTime="2024-01-01T00:00:00Z"),
        lambda d: d["ChannelInfo"].update(ChannelARN="arn:aws:s3:::bucket"),
        lambda d: d["ChannelInfo"].update(Version="!!"),
        lambda d: d["ChannelInfo"]["SingleMasterConfiguration"].update(MessageTtlSeconds=True),
    ]
    for mutate in describe_mutations:
        assert shape_errors(describe_shape, broken(described, mutate)), mutate


ERROR_CASES = [
    ("CreateSignalingChannel", {}, None, "InvalidArgumentException"),
    ("CreateSignalingChannel", {"ChannelName": "{name}"}, None, "ResourceInUseException"),
    ("DescribeSignalingChannel", {"ChannelName": "missing"}, None, "ResourceNotFoundException"),
    ("ListSignalingChannels", {"MaxResults": 0}, None, "InvalidArgumentException"),
    ("DeleteSignalingChannel", {"ChannelARN": "{arn}", "CurrentVersion": "nope"}, None, "VersionMismatchException"),
    ("GetSignalingChannelEndpoint", {"ChannelARN": "{missing}"}, None, "ResourceNotFoundException"),
    ("GetSignalingChannelEndpoint", {"ChannelARN": "{arn}", "SingleMasterChannelEndpointConfiguration": 3}, None,
     "InvalidArgumentException"),
    ("GetIceServerConfig", {"ChannelARN": "{arn}", "Service": "STUN"}, None, "InvalidArgumentException"),
    ("GetIceServerConfig", {"ChannelARN": "{missing}"}, None, "ResourceNotFoundException"),
    ("GetIceServerConfig", {"ChannelARN": "{arn}"}, "throttle", "ClientLimitExceededException"),
    ("DescribeSignalingChannel", {"ChannelARN": "{arn}"}, "throttle", "ClientLimitExceededException"),
]  # fmt: skip


@pytest.mark.parametrize(("operation", "template", "fault", "code"), ERROR_CASES)
def test_error_responses_parse_to_modeled_codes(
    emu: KvsEmulator, operation: str, template: dict[str, Any], fault: str | None, code: str
) -> None:
    route = next(route for route in ROUTES if route.operation == operation)
    (arn,) = new_channels(emu)
    if fault is not None:
        emu.inject_fault(operation=operation, kind=fault)
    missing = arn.rsplit("/", 1)[0] + "/1000000000000"
    body = json.dumps(template).replace("{arn}", arn).replace("{name}", arn.split("/")[1])
    body = body.replace("{missing}", missing)
    status, headers, raw = raw_request(emu.url, "POST", route.path, body.encode())

    operation_model = model(route.service).operation_model(operation)
    modeled = {shape.name: shape.metadata["error"]["httpStatusCode"] for shape in operation_model.error_shapes}
    assert code in modeled
    assert status == modeled[code]
    assert headers["x-amzn-ErrorType"] == code
    assert isinstance(json.loads(raw)["message"], str)
    parsed = create_parser("rest-json").parse(
        {"status_code": status, "headers": headers, "body": raw}, operation_model.output_shape
    )
    assert parsed["Error"]["Code"] == code


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/v1/get-ice-server-config", b"{not json", None, 400, "InvalidArgumentException"),
        ("POST", "/describeSignalingChannel", b"[1, 2]", None, 400, "InvalidArgumentException"),
        ("POST", "/describeSignalingChannel", b"\xff\xfe\x00garbage", None, 400, "InvalidArgumentException"),
        ("POST", "/listSignalingChannels", b"[" * 100_000, None, 400, "InvalidArgumentException"),
        ("POST", "/listSignalingChannels", b'{"MaxResults": "ten"}', None, 400, "InvalidArgumentException"),
        ("POST", "/getSignalingChannelEndpoint", b'{"ChannelARN": 7}', None, 400, "InvalidArgumentException"),
        ("POST", "/createSignalingChannel", b'{"ChannelName": "ok", "Tags": "x"}', None, 400,
         "InvalidArgumentException"),
        ("POST", "/noSuchOperation", b"{}", None, 404, "UnknownOperationException"),
        ("GET", "/", None, None, 404, "UnknownOperationException"),
        ("GET", "/createSignalingChannel", None, None, 405, "MethodNotAllowedException"),
        ("POST", "/_emulator/stats", b"{}", None, 405, "MethodNotAllowedException"),
        ("GET", "/_emulator/nothing", None, None, 404, "UnknownOperationException"),
        ("POST", "/_emulator/faults", b'{"kind": "melt"}', None, 400, "InvalidArgumentException"),
        ("POST", "/_emulator/latency", b'{"ms": "slow"}', None, 400, "InvalidArgumentException"),
        ("POST", "/_emulator/latency", b'{"ms": -1}', None, 400, "InvalidArgumentException"),
        ("POST", "/listSignalingChannels", b"{}", {"Content-Length": "nope"}, 400, "InvalidArgumentException"),
        ("POST", "/listSignalingChannels", b"{}", {"Content-Length": str(1 << 30)}, 413,
         "InvalidArgumentException"),
        ("OPTIONS", "/listSignalingChannels", None, None, 501, "UnknownOperationException"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_json_error_never_a_500(
    emu: KvsEmulator,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    got_status, got_headers, raw = raw_request(emu.url, method, path, body, headers)
    assert (got_status, got_headers["x-amzn-ErrorType"]) == (status, code)
    assert isinstance(json.loads(raw)["message"], str)
    assert raw_request(emu.url, "GET", "/_emulator/health")[0] == 200


def test_garbage_request_line_is_answered_and_server_survives(emu: KvsEmulator) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400")
    assert raw_request(emu.url, "GET", "/_emulator/health")[0] == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
request_keys = st.sampled_from(
    ["ChannelARN", "ChannelName", "ClientId", "Service", "Username", "MaxResults", "NextToken", "CurrentVersion",
     "ChannelType", "SingleMasterConfiguration", "SingleMasterChannelEndpointConfiguration", "ChannelNameCondition",
     "Tags"]
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=st.dictionaries(request_keys, json_values, max_size=4))
def test_fuzzed_requests_never_get_a_server_error(
    shared_emulator: KvsEmulator, route: Any, body: dict[str, Any]
) -> None:
    status, headers, raw = raw_request(shared_emulator.url, route.method, route.path, json.dumps(body).encode())
    assert status < 500
    if status >= 400:
        error_codes = {shape.name for shape in model(route.service).operation_model(route.operation).error_shapes}
        assert headers["x-amzn-ErrorType"] in error_codes
        assert "message" in json.loads(raw)


# --------------------------------------------------------------------------- admin API and Python API


def test_admin_endpoints_mirror_the_python_api(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    status, _, health = post_json(emu.url, "/_emulator/latency", {"ms": 12.5})
    assert (status, health) == (200, {"latency_ms": 12.5})
    status, _, fault = post_json(
        emu.url, "/_emulator/faults", {"operation": "GetIceServerConfig", "kind": "throttle", "count": 1}
    )
    assert status == 200 and fault["fault"]["kind"] == "throttle"
    with pytest.raises(signaling.exceptions.ClientLimitExceededException):
        signaling.get_ice_server_config(ChannelARN=arn)
    signaling.get_ice_server_config(ChannelARN=arn)

    status, _, raw_health = raw_request(emu.url, "GET", "/_emulator/health")
    assert status == 200 and json.loads(raw_health)["latency_ms"] == 12.5
    stats = json.loads(raw_request(emu.url, "GET", "/_emulator/stats")[2])
    assert stats == emu.stats()
    assert stats["channels"][arn]["GetIceServerConfig"]["faulted"] == 1
    calls = json.loads(raw_request(emu.url, "GET", "/_emulator/calls")[2])
    assert len(calls["channels"][arn]["GetIceServerConfig"]) == 2
    assert calls["now"] <= time.monotonic()
    channels = json.loads(raw_request(emu.url, "GET", "/_emulator/channels")[2])
    assert arn in channels["channel_arns"]

    status, _, _ = post_json(emu.url, "/_emulator/reset", {})
    assert status == 200
    after = emu.stats()
    assert after["operations"] == {} and after["channels"] == {} and after["latency_ms"] == 0.0
    assert arn in emu.channel_arns()


def test_python_api_lifecycle_and_validation() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        EmulatorConfig(host="0.0.0.0")  # noqa: S104 - asserting it is refused
    with pytest.raises(ValueError, match="ttl_seconds"):
        EmulatorConfig(ttl_seconds=5)
    with pytest.raises(ValueError, match="turn URI"):
        EmulatorConfig(turn_uris=("http://127.0.0.1",))
    emu = KvsEmulator()
    with pytest.raises(RuntimeError):
        _ = emu.url
    first = emu.create_channels(2, prefix="pool")
    assert emu.create_channels(1, prefix="pool")[0].split("/")[1] == "pool-2"
    emu.start()
    try:
        with pytest.raises(RuntimeError):
            emu.start()
        with pytest.raises(OSError), KvsEmulator(EmulatorConfig(port=emu.port)):
            pass
        assert raw_request(emu.url, "GET", "/_emulator/health")[0] == 200
        assert emu.channel_arns()[:2] == first
    finally:
        emu.stop()
    emu.stop()


def test_stop_closes_keep_alive_connections(session: boto3.session.Session) -> None:
    threads_before = set(threading.enumerate())
    emu = KvsEmulator().start()
    (arn,) = emu.create_channels(1)
    client = session.client("kinesis-video-signaling", endpoint_url=emu.url, config=NO_RETRY)
    client.get_ice_server_config(ChannelARN=arn)  # leaves a pooled keep-alive connection open
    started = time.perf_counter()
    emu.stop()
    assert time.perf_counter() - started < 1.0
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - threads_before == set()


# --------------------------------------------------------------------------- command line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "local.kvs_emulator", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(process: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            pytest.fail(f"no ready line within {timeout} s")
    return process.stdout.readline()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_boto3_and_stops_cleanly(session: boto3.session.Session, stop_signal: signal.Signals) -> None:
    port = _free_port()
    process = _run_cli("--port", str(port), "--channels", "3", "--channel-prefix", "cli", "--ttl", "120")
    try:
        ready = json.loads(_read_line(process))
        assert ready["url"] == f"http://127.0.0.1:{port}"
        assert ready["region"] == "us-east-1"
        assert all(ARN_RE.fullmatch(arn) for arn in ready["channel_arns"])
        assert [arn.split("/")[1] for arn in ready["channel_arns"]] == ["cli-0", "cli-1", "cli-2"]
        control = control_client(session, ready["url"])
        arn = ready["channel_arns"][0]
        assert control.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["ChannelName"] == "cli-0"
        servers = signaling_client(session, control, arn).get_ice_server_config(ChannelARN=arn)["IceServerList"]
        assert servers[0]["Ttl"] == 120
    finally:
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "stopping" in stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--ttl", "5"],
        ["--host", "0.0.0.0"],  # noqa: S104 - asserting it is refused
        ["--turn-uri", "http://127.0.0.1"],
        ["--region", "US_EAST"],
        ["--latency-ms", "-3"],
        ["--no-such-flag"],
    ],
)
def test_cli_rejects_bad_arguments_in_one_line(args: list[str]) -> None:
    process = _run_cli(*args)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "error:" in stderr


def test_cli_reports_port_in_use_in_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = _run_cli("--port", str(port))
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 1
    assert stdout == ""
    assert stderr.strip().splitlines() == [
        f"python -m local.kvs_emulator: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


def test_cli_help_documents_the_options() -> None:
    process = _run_cli("--help")
    stdout, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    for option in ("--port", "--channels", "--latency-ms", "--ttl", "--turn-uri", "--turn-secret", "--ice-tps"):
        assert option in stdout

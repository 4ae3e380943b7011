"""Helpers of the KVS emulator's tests: clients made as unmodified code makes them, a fake clock, raw HTTP,
and a checker of values against botocore's shapes."""

from __future__ import annotations

import http.client
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.config import Config
from botocore.model import Shape

from local.kvs_emulator import KvsEmulator

REPO_ROOT = Path(__file__).resolve().parents[2]
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

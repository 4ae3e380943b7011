"""The emulator's wire format held against botocore's own service models."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from botocore.parsers import create_parser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.kvs_emulator import ROUTES, KvsEmulator
from tests.kvs_emulator.support import (
    DESIGN_OPERATIONS,
    _names,
    model,
    new_channels,
    post_json,
    raw_request,
    shape_errors,
)

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

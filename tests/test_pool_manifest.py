"""The pool manifest: built against the KVS emulator, stored in Secrets Manager (moto's server, real
botocore over HTTP), answered to CloudFormation over HTTP, and read by the broker at cold start."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from moto.server import ThreadedMotoServer

from broker.api.config import build_service
from broker.api.models import StartRequest
from broker.exceptions import BrokerError, ConfigurationError
from broker.kvs import KvsSignaling
from broker.pool_manifest import MAX_MANIFEST_BYTES, PoolManifest, build_manifest, handler
from local.kvs_emulator import KvsEmulator
from tests.emulator_stats import operation_total

PREFIX = "Stack-turn-"
ENDPOINT = "GetSignalingChannelEndpoint"


@pytest.fixture
def secrets(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Secrets Manager on 127.0.0.1 (moto's server); botocore reaches it by its endpoint variable."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://{host}:{port}")
    try:
        yield botocore.session.Session().create_client("secretsmanager")
    finally:
        server.stop()


class FakeTime:
    """A clock that sleeping moves forward, so pacing is measured without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def new_secret(secrets: Any, value: str) -> str:
    """A secret of its own (moto keeps its state for the whole process)."""
    return str(secrets.create_secret(Name=f"pool-manifest-{uuid.uuid4().hex}", SecretString=value)["ARN"])


def pool(emulator: KvsEmulator, count: int) -> list[str]:
    return emulator.create_channels(count, prefix=PREFIX.rstrip("-"))


def test_the_manifest_holds_every_channel_and_its_own_endpoint_paced(emulator: KvsEmulator) -> None:
    arns = pool(emulator, 12)
    emulator.create_channels(3, prefix="Other-turn")
    time = FakeTime()
    kvs = KvsSignaling(region="us-east-1", session=botocore.session.Session())
    manifest = build_manifest(
        kvs, PREFIX, expected_channels=12, lookups_per_second=5, clock=time.clock, sleep=time.sleep
    )
    assert set(manifest.channel_arns) == set(arns)
    direct = KvsSignaling(region="us-east-1", session=botocore.session.Session())
    assert dict(manifest.endpoints) == {arn: direct.endpoint(arn) for arn in arns}
    assert time.slept >= 2.0  # 12 lookups at 5 per second: two full windows of waiting
    assert operation_total(emulator, ENDPOINT, "served") == 24  # the manifest's 12, then the check's


def test_a_pool_that_is_not_all_there_fails_the_manifest(emulator: KvsEmulator) -> None:
    pool(emulator, 3)
    kvs = KvsSignaling(region="us-east-1", session=botocore.session.Session())
    with pytest.raises(BrokerError, match=r"3 active channels are named Stack-turn-\*, the pool has 4"):
        build_manifest(kvs, PREFIX, expected_channels=4)


def test_the_compact_form_round_trips_and_holds_thousands_of_channels() -> None:
    region = "arn:aws:kinesisvideo:ap-southeast-2:123456789012:channel/"
    endpoints = [f"https://r-{index:08x}.kinesisvideo.ap-southeast-2.amazonaws.com" for index in range(8)]
    big = {
        f"{region}PipecatVoiceAgent-turn-{index:03d}/{1_733_085_600_000 + 37 * index}": endpoints[index % 8]
        for index in range(2_500)
    }
    manifest = PoolManifest(endpoints=big)
    text = manifest.to_json()
    assert len(text.encode()) < MAX_MANIFEST_BYTES  # 2,500 channels fit in one secret
    assert PoolManifest.from_json(text) == manifest
    assert list(PoolManifest.from_json(text).channel_arns) == list(big)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"version": 2}',
        '{"version": 1, "arn_prefix": "a", "endpoints": [], "channels": [["x", 0]]}',
        '{"version": 1, "arn_prefix": "a", "endpoints": ["e"], "channels": []}',
    ],
)
def test_a_value_that_is_not_a_manifest_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match="TURN_POOL_MANIFEST_SECRET_ARN"):
        PoolManifest.from_json(text)


@pytest.fixture
def cloudformation() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for CloudFormation's pre-signed response URL: records what the handler PUTs."""
    received: list[dict[str, Any]] = []

    class Responses(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Responses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/response", received
    finally:
        server.shutdown()
        server.server_close()


def event(response_url: str, secret_arn: str, count: int, request_type: str = "Create") -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/Stack/1",
        "RequestId": "request-1",
        "LogicalResourceId": "PoolManifest",
        "ResourceProperties": {"Prefix": PREFIX, "ChannelCount": str(count), "SecretArn": secret_arn},
    }


def test_the_custom_resource_stores_the_manifest_and_answers_cloudformation(
    emulator: KvsEmulator, secrets: Any, cloudformation: tuple[str, list[dict[str, Any]]]
) -> None:
    arns = pool(emulator, 6)
    secret_arn = new_secret(secrets, "{}")
    url, received = cloudformation
    handler(event(url, secret_arn, 6), None)
    assert [answer["Status"] for answer in received] == ["SUCCESS"]
    assert received[0]["Reason"] == "6 channels, 1 endpoints"
    assert (received[0]["RequestId"], received[0]["LogicalResourceId"]) == ("request-1", "PoolManifest")
    stored = PoolManifest.from_json(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert set(stored.channel_arns) == set(arns)


def test_a_failed_manifest_is_reported_to_cloudformation_not_raised(
    emulator: KvsEmulator, secrets: Any, cloudformation: tuple[str, list[dict[str, Any]]]
) -> None:
    pool(emulator, 2)
    secret_arn = new_secret(secrets, "{}")
    url, received = cloudformation
    handler(event(url, secret_arn, 5), None)
    handler(event(url, secret_arn, 5, request_type="Delete"), None)  # deleting never fails
    assert [answer["Status"] for answer in received] == ["FAILED", "SUCCESS"]
    assert "2 active channels are named Stack-turn-*, the pool has 5" in received[0]["Reason"]
    assert secrets.get_secret_value(SecretId=secret_arn)["SecretString"] == "{}"


def test_a_broker_with_the_manifest_lists_nothing_and_looks_nothing_up(emulator: KvsEmulator, secrets: Any) -> None:
    pool(emulator, 5)
    kvs = KvsSignaling(region="us-east-1", session=botocore.session.Session())
    manifest = build_manifest(kvs, PREFIX, expected_channels=5)
    secret_arn = new_secret(secrets, manifest.to_json())
    emulator.reset()  # count only what the broker does from here on
    service = build_service(
        {
            "TURN_CHANNEL_PREFIX": PREFIX,
            "TURN_POOL_MANIFEST_SECRET_ARN": secret_arn,
            "AWS_REGION": "us-east-1",
            "AGENT_INVOKER": "local",
            "SESSION_SIGNING_KEY": "session-signing-key-for-tests-0123456789",
        }
    )
    for _ in range(10):
        service.start("alice", StartRequest())
    assert operation_total(emulator, "GetIceServerConfig", "served") == 10
    assert operation_total(emulator, "ListSignalingChannels", "calls") == 0
    assert operation_total(emulator, ENDPOINT, "calls") == 0  # every endpoint came with the manifest

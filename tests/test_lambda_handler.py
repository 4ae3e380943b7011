"""The Lambda adapter: API Gateway HTTP API events in, with real botocore clients for KVS and AgentCore.

KVS is the emulator; AgentCore is the local stand-in (SigV4 checked) in front of the real agent,
reached by the real ``bedrock-agentcore`` client. Everything the function prints (Powertools logs and
EMF metrics) is captured, parsed and scanned.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker.api.config import session_key
from broker.exceptions import ConfigurationError
from broker.telemetry import METRICS_NAMESPACE, PEER_DIMENSION, SERVICE_NAME, MetricName
from local.agentcore import AgentCoreConfig, AgentCoreStandIn
from local.broker_api import http_api_event
from local.kvs_emulator import EmulatorConfig, KvsEmulator
from tests.api_support import ROOT, RUNTIME_ARN, agent_process, lambda_env
from tests.conftest import DUMMY_AWS_ENV
from tests.test_broker_api import make_offer, offer_body


@dataclass
class LambdaContext:
    function_name: str = "broker"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:broker"
    aws_request_id: str = "request-1"


@dataclass
class Deployment:
    module: ModuleType
    agentcore: AgentCoreStandIn
    stdout: io.StringIO  # what the function printed: its JSON logs and EMF metrics


def forget_handler_modules() -> None:
    """Drop the function's modules, so the next import initialises it again as a new environment would."""
    for name in ("broker.lambda_handler", "broker.lambda_app"):
        sys.modules.pop(name, None)
    gc.unfreeze()  # what the entry point froze is this test process's, not a Lambda's


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with (
        pytest.MonkeyPatch.context() as patch,
        KvsEmulator(EmulatorConfig(port=0)) as kvs,
        agent_process() as agent_url,
        AgentCoreStandIn(
            AgentCoreConfig(
                runtime_arn=RUNTIME_ARN,
                agent_url=agent_url,
                access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
                secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            )
        ) as agentcore,
    ):
        for name, value in {
            **lambda_env(kvs.create_channels(2)),
            "AWS_ENDPOINT_URL_KINESIS_VIDEO": kvs.url,
            "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": agentcore.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "BROKER_TRANSPORTS": "webrtc,websocket",  # the stack's default
        }.items():
            patch.setenv(name, value)
        forget_handler_modules()
        stdout = io.StringIO()
        with redirect_stdout(stdout):  # the Logger binds its stream at import, as in Lambda
            module = importlib.import_module("broker.lambda_handler")
        yield Deployment(module, agentcore, stdout)
        forget_handler_modules()


def invoke(deployment: Deployment, method: str, path: str, body: object, subject: str | None) -> dict[str, Any]:
    claims = {"sub": subject} if subject else {}
    event = http_api_event(
        method, path, headers={"content-type": "application/json"}, body=json.dumps(body).encode(),
        claims=claims, source_ip="198.51.100.7",
    )  # fmt: skip
    with redirect_stdout(deployment.stdout):
        response: dict[str, Any] = deployment.module.handler(event, LambdaContext())
    return response


def emitted(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_start_offer_and_candidates_through_agentcore(deployment: Deployment) -> None:
    module, agentcore = deployment, deployment.agentcore
    started = invoke(module, "POST", "/start", {"transport": "webrtc"}, "user-1")
    assert started["statusCode"] == 200
    start = json.loads(started["body"])
    session_id = start["sessionId"]
    credentials = [s[k] for s in start["iceConfig"]["iceServers"] for k in ("username", "credential")]

    async def offer() -> tuple[str, dict[str, Any]]:
        peer, sdp = await make_offer()
        try:
            reply = await asyncio.to_thread(
                invoke, module, "POST", f"/sessions/{session_id}/api/offer", offer_body(sdp), "user-1"
            )
        finally:
            await peer.close()
        return sdp, reply

    sdp, answered = asyncio.run(offer())
    assert answered["statusCode"] == 200, answered["body"]
    answer = json.loads(answered["body"])
    assert answer["type"] == "answer" and answer["sdp"].startswith("v=0")
    invoked = agentcore.accepted()[-1]  # InvokeAgentRuntime(runtimeSessionId=the session), signature checked
    assert (invoked.operation, invoked.runtime_arn, invoked.session_id) == (
        "InvokeAgentRuntime",
        RUNTIME_ARN,
        session_id,
    )

    patched = invoke(
        module, "PATCH", f"/sessions/{session_id}/api/offer", {"pc_id": answer["pc_id"], "candidates": []}, "user-1"
    )
    assert (patched["statusCode"], json.loads(patched["body"])) == (200, {"status": "success"})
    assert (
        invoke(module, "PATCH", f"/sessions/{session_id}/api/offer", {"pc_id": "p", "candidates": []}, "user-2")[
            "statusCode"
        ]
        == 404
    )

    out = deployment.stdout.getvalue()
    records = emitted(out)
    blobs = [r["_aws"] for r in records if "_aws" in r]
    assert blobs, "no EMF metrics were printed"
    names = {m["Name"] for blob in blobs for d in blob["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {MetricName.KVS_CALLS, MetricName.CREDENTIAL_LATENCY, MetricName.REQUEST_LATENCY} <= names
    assert {d["Namespace"] for blob in blobs for d in blob["CloudWatchMetrics"]} == {METRICS_NAMESPACE}
    assert all(r.get("service") == SERVICE_NAME for r in records if "_aws" in r)
    # The credential metrics are published as totals and per peer: the browser's at /start, the
    # agent's with the offer (the broker fetched them: the agent never calls KVS); candidates have none.
    peers = []
    for record in records:
        if "_aws" not in record:
            continue
        dimension_sets = record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        if MetricName.KVS_CALLS in record:
            assert sorted(dimension_sets) == [["service"], ["service", PEER_DIMENSION]]
            peers.append(record[PEER_DIMENSION])
        else:
            assert dimension_sets == [["service"]] and PEER_DIMENSION not in record
    assert peers == ["browser", "agent"]
    assert any(
        r.get("message") == "session started (2 ICE servers from %s)" or "session started" in str(r.get("message"))
        for r in records
    )
    sdp_secrets = [
        line.split(":", 1)[1] for line in sdp.splitlines() if line.startswith(("a=ice-pwd", "a=fingerprint"))
    ]
    for secret in [*credentials, *sdp_secrets]:
        assert secret not in out


def test_a_websocket_start_presigns_the_runtime_url_on_the_invocations_endpoint(deployment: Deployment) -> None:
    logged_before = len(deployment.stdout.getvalue())
    started = invoke(deployment, "POST", "/start", {"transport": "websocket"}, "user-1")
    assert started["statusCode"] == 200, started["body"]
    body = json.loads(started["body"])
    assert set(body) == {"sessionId", "ws_url"}
    # The endpoint InvokeAgentRuntime goes to (AWS_ENDPOINT_URL_BEDROCK_AGENTCORE) serves the WebSocket too.
    standin_host = deployment.agentcore.host
    url = urlsplit(body["ws_url"])
    assert (url.scheme, url.netloc, url.path) == ("ws", standin_host, f"/runtimes/{quote(RUNTIME_ARN, safe='')}/ws")
    query = parse_qs(url.query)
    assert query["X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"] == [body["sessionId"]]
    assert query["X-Amz-Credential"][0].startswith(f"{DUMMY_AWS_ENV['AWS_ACCESS_KEY_ID']}/")
    out = deployment.stdout.getvalue()[logged_before:]
    assert "session started (websocket" in out
    assert body["ws_url"] not in out and query["X-Amz-Signature"][0] not in out
    request_metrics = [r for r in emitted(out) if "_aws" in r]
    assert request_metrics and all(MetricName.KVS_CALLS not in r for r in request_metrics)  # no TURN minted
    # The stand-in checks the URL as AgentCore would (SigV4, runtime, session id): the broker's passes.
    assert asyncio.run(open_websocket(body["ws_url"])) in (None, 424)  # opened, or the agent has no /ws
    opened = deployment.agentcore.accepted()[-1]
    assert (opened.operation, opened.runtime_arn, opened.session_id) == ("WebSocket", RUNTIME_ARN, body["sessionId"])


async def open_websocket(url: str) -> int | None:
    """Open and close ``url``; the HTTP status if the upgrade is refused."""
    try:
        async with connect(url, open_timeout=5):
            return None
    except InvalidStatus as refused:
        return refused.response.status_code


def test_a_request_without_a_subject_is_refused(deployment: Deployment) -> None:
    reply = invoke(deployment, "POST", "/start", {}, None)
    assert reply["statusCode"] == 401
    assert json.loads(reply["body"])["error"]["code"] == "unauthorized"


def test_an_oversized_body_is_refused_before_parsing(deployment: Deployment) -> None:
    reply = invoke(deployment, "POST", "/start", {"body": {"blob": "x" * 200_000}}, "user-1")
    assert reply["statusCode"] == 413


class FakeSecrets:
    """Stands in for Secrets Manager (no AWS here): records what was asked."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.asked: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.asked.append(SecretId)
        return {"SecretString": self.value}


def test_the_session_key_comes_from_the_secret_the_stack_names() -> None:
    secrets = FakeSecrets("k" * 64)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:key-AbCdEf"
    assert session_key({"SESSION_SIGNING_KEY_SECRET_ARN": arn}, secrets_client=secrets) == b"k" * 64
    assert secrets.asked == [arn]
    with pytest.raises(ConfigurationError, match="SESSION_SIGNING_KEY"):
        session_key({})
    with pytest.raises(ConfigurationError, match="32 bytes"):
        session_key({"SESSION_SIGNING_KEY": "short"})


INIT_PROBE = """
import gc, json, sys
import broker  # the package alone: cheap, and botocore is not loaded yet
loaded_early = "botocore" in sys.modules
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
import broker.lambda_handler
print(json.dumps({
    "collections": len(collections),
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "loaded_early": loaded_early,
    "modules": sorted(
        name for name in sys.modules if name.split(".")[0] in {"boto3", "s3transfer", "bedrock_agentcore"}
    ),
}))
"""


def test_initialisation_runs_without_collections_and_leaves_the_collector_on() -> None:
    """A fresh interpreter imports the entry point as Lambda does: no collection, then everything frozen."""
    channel = "arn:aws:kinesisvideo:us-east-1:123456789012:channel/turn-pool-0/1700000000000"
    env = {**lambda_env([channel]), "PATH": os.environ["PATH"], "BROKER_TRANSPORTS": "webrtc,websocket"}
    run = subprocess.run(
        [sys.executable, "-c", INIT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["loaded_early"] is False, report
    assert report["collections"] == 0, report
    assert report["enabled"] is True, report
    assert report["frozen"] > 50_000, report  # the clients, models and classes made at initialisation
    # botocore alone: boto3 would bring s3transfer into every cold start, and the AgentCore SDK's URL
    # signer boto3, starlette and 300 ms more (the broker presigns WebSocket URLs with botocore).
    assert report["modules"] == [], report

"""The Lambda bundle keeps botocore's data for the broker's services only, and the function still works.

The trimmed botocore is this machine's (the bundle's is ARM64 and cannot run here), trimmed by the
bundler's own function; the function runs from it in a fresh interpreter against the KVS emulator.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import botocore
import pytest

from broker.services import AWS_SERVICES
from local.kvs_emulator import EmulatorConfig, KvsEmulator
from stacks.lambda_bundle import BundlingError, keep_botocore_services
from tests.api_support import ROOT, lambda_env


def created_clients(directory: Path) -> list[ast.expr]:
    """The first argument of every ``.create_client(...)`` call in the Python files under ``directory``."""
    found = []
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create_client"
            ):
                found.append(node.args[0] if node.args else node)
    return found


def test_every_client_the_broker_creates_is_a_kept_service() -> None:
    arguments = created_clients(ROOT / "broker")
    assert arguments  # the scan finds the broker's clients at all
    names = [argument.value for argument in arguments if isinstance(argument, ast.Constant)]
    assert len(names) == len(arguments), "a client's service is not a literal: the scan cannot check it"
    assert set(names) <= set(AWS_SERVICES)


@pytest.fixture(scope="module")
def trimmed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's botocore, copied and trimmed as the bundler trims the Lambda's."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(Path(botocore.__file__).parent, site / "botocore", ignore=shutil.ignore_patterns("__pycache__"))
    keep_botocore_services(site)
    return site


def test_only_the_broker_services_and_the_shared_files_stay(trimmed_site: Path) -> None:
    data = trimmed_site / "botocore" / "data"
    assert sorted(entry.name for entry in data.iterdir() if entry.is_dir()) == sorted(AWS_SERVICES)
    shared = {entry.name for entry in data.iterdir() if entry.is_file()}
    assert {"endpoints.json", "partitions.json", "sdk-default-configuration.json", "_retry.json"} <= shared


FUNCTION_PROBE = """
import json, sys
import botocore, botocore.session
from botocore.exceptions import UnknownServiceError
from broker.lambda_handler import handler
from broker.lambda_app import tracer
from broker.services import AWS_SERVICES
from local.broker_api import http_api_event

class Context:
    function_name, memory_limit_in_mb, aws_request_id = "broker", 1024, "probe"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:broker"

event = http_api_event("POST", "/start", headers={"content-type": "application/json"}, body=b"{}",
                       claims={"sub": "user-1"}, source_ip="198.51.100.7")
response = handler(event, Context())
websocket_event = http_api_event("POST", "/start", headers={"content-type": "application/json"},
                                 body=b'{"transport": "websocket"}', claims={"sub": "user-1"}, source_ip="198.51.100.7")
websocket = json.loads(handler(websocket_event, Context())["body"])
session = botocore.session.Session()
clients = [session.create_client(name, region_name="us-east-1").meta.service_model.service_name
           for name in AWS_SERVICES]
try:
    session.create_client("s3", region_name="us-east-1")
    s3 = "created"
except UnknownServiceError:
    s3 = "unknown"
print(json.dumps({"botocore": botocore.__file__, "status": response["statusCode"],
                  "body": json.loads(response["body"]), "clients": clients, "s3": s3,
                  "traced": tracer is not None, "ws_url": websocket.get("ws_url", websocket)}))
"""


@pytest.mark.parametrize("tracing", [False, True], ids=["untraced", "xray-active-tracing"])
def test_the_function_runs_from_the_trimmed_botocore(trimmed_site: Path, tracing: bool) -> None:
    """With active tracing the X-Ray SDK loads too (it needs botocore's ``xray`` model)."""
    with KvsEmulator(EmulatorConfig(port=0)) as kvs, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))  # where the SDK sends its segments: a loopback socket nobody reads
        env = {
            **lambda_env(kvs.create_channels(2)),
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join((str(trimmed_site), str(ROOT))),  # the trimmed copy comes first
            "AWS_ENDPOINT_URL_KINESIS_VIDEO": kvs.url,
            "BROKER_TRANSPORTS": "webrtc,websocket",
            **(
                {"AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
                 "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
                if tracing else {"POWERTOOLS_TRACE_DISABLED": "true"}
            ),
        }  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-c", FUNCTION_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["botocore"]).is_relative_to(trimmed_site)
    assert report["status"] == 200, report["body"]
    assert report["body"]["sessionId"] and report["body"]["iceConfig"]["iceServers"]
    assert report["clients"] == list(AWS_SERVICES)
    assert report["s3"] == "unknown"  # the trimming is real: other services are gone
    assert report["traced"] is tracing
    # The data plane's endpoint comes from the endpoint data the trimming keeps.
    assert str(report["ws_url"]).startswith("wss://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/")


def test_trimming_refuses_a_site_without_botocore_or_a_service(tmp_path: Path, trimmed_site: Path) -> None:
    with pytest.raises(BundlingError, match="needs botocore"):
        keep_botocore_services(tmp_path)
    with pytest.raises(BundlingError, match="no data for no-such-service"):
        keep_botocore_services(trimmed_site, (*AWS_SERVICES, "no-such-service"))

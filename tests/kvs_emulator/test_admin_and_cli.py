"""The admin HTTP API, the Python API and the command line."""

from __future__ import annotations

import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import boto3
import pytest

from local.kvs_emulator import EmulatorConfig, KvsEmulator
from local.kvs_emulator.exceptions import ConfigError
from tests.kvs_emulator.support import (
    ARN_RE,
    NO_RETRY,
    REPO_ROOT,
    control_client,
    new_channels,
    post_json,
    raw_request,
    signaling_client,
)

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

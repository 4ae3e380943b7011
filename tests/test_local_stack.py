"""`python -m local`: the KVS emulator and a real coturn, credentials that really allocate relays."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aioice.stun
import aioice.turn
import pytest

from broker.config import BrokerConfig
from broker.core import IceBroker
from local.coturn import ensure_port_free
from local.exceptions import LocalStackError

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free for both TCP and UDP on loopback."""
    for _ in range(100):
        port = random.randint(20000, 40000)
        try:
            ensure_port_free("127.0.0.1", port, "test")
        except LocalStackError:
            continue
        return port
    raise RuntimeError("no free port")


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], int]]:
    turn_port, kvs_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local", f"--kvs-port={kvs_port}", f"--turn-port={turn_port}", f"--log-dir={tmp_path}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    env: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip().startswith("export "):
            name, _, value = line.strip().removeprefix("export ").partition("=")
            env[name] = value
        if line.startswith("Ctrl-C"):
            break
    try:
        assert env, process.stderr.read() if process.stderr else ""
        yield process, env, turn_port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # as a person's Ctrl-C: it stops coturn too
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def allocate(port: int, username: str, password: str, transport: str) -> tuple[str, int]:
    relay, _ = await asyncio.wait_for(
        aioice.turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=("127.0.0.1", port),
            username=username,
            password=password,
            transport=transport,
        ),
        timeout=5,
    )
    try:
        address: tuple[str, int] = relay.get_extra_info("sockname")
        return address
    finally:
        relay.close()


def test_broker_credentials_allocate_relays_at_coturn(
    local_stack: tuple[subprocess.Popen[str], dict[str, str], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    process, env, turn_port = local_stack
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)
    broker = IceBroker(BrokerConfig.from_env())
    ice = broker.get_ice_servers()
    server = ice.servers[0]
    assert server.urls == (f"turn:127.0.0.1:{turn_port}?transport=udp", f"turn:127.0.0.1:{turn_port}?transport=tcp")
    assert server.username and server.credential
    for transport in ("udp", "tcp"):
        host, port = asyncio.run(allocate(turn_port, server.username, server.credential, transport))
        assert host == "127.0.0.1" and port > 0
    with pytest.raises(aioice.stun.TransactionFailed, match="401"):
        asyncio.run(allocate(turn_port, server.username, "not-the-password", "udp"))

    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "stopped" in out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", turn_port))  # coturn is gone: its port is free again


def test_coturn_does_not_outlive_a_killed_local_stack(
    local_stack: tuple[subprocess.Popen[str], dict[str, str], int],
) -> None:
    process, _, turn_port = local_stack
    process.kill()  # SIGKILL: no chance to clean up
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while True:
        try:
            ensure_port_free("127.0.0.1", turn_port, "test")
            break
        except LocalStackError:
            assert time.monotonic() < deadline, "coturn outlived the local stack"
            time.sleep(0.1)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "local",
                f"--kvs-port={port}",
                f"--turn-port={free_port()}",
                f"--log-dir={tmp_path}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 1
    assert f"port {port}" in run.stderr and "in use" in run.stderr
    assert "Traceback" not in run.stderr


def test_broker_cli_masks_credentials_unless_asked(
    local_stack: tuple[subprocess.Popen[str], dict[str, str], int],
) -> None:
    _, env, _ = local_stack
    child_env = {**os.environ, **env, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    masked = subprocess.run(
        [sys.executable, "-m", "broker"], cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=30
    )
    assert masked.returncode == 0, masked.stderr
    assert '"credential": "***"' in masked.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "broker", "--show-credentials"],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert '"credential": "***"' not in shown.stdout and '"credential": "' in shown.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "broker"],
        cwd=ROOT,
        env={**child_env, "TURN_CHANNEL_ARNS": "nope"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert broken.returncode == 1 and broken.stderr.startswith("error: TURN_CHANNEL_ARNS")

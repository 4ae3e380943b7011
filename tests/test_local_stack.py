"""`python -m local` as a person runs it: start-up, failure messages, Ctrl-C and SIGKILL, the broker CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aioice.stun
import aioice.turn
import pytest

from broker.config import BrokerConfig
from broker.core import IceBroker
from tests.local_support import ROOT, RunningStack, children, free_port, port_freed, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("logs")) as running:
        yield running


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


def test_broker_credentials_allocate_relays_at_coturn(stack: RunningStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    ice = IceBroker(BrokerConfig.from_env()).get_ice_servers()
    server = ice.servers[0]
    turn = stack.ports["turn"]
    assert server.urls == (f"turn:127.0.0.1:{turn}?transport=udp", f"turn:127.0.0.1:{turn}?transport=tcp")
    assert server.username and server.credential
    for transport in ("udp", "tcp"):
        host, port = asyncio.run(allocate(turn, server.username, server.credential, transport))
        assert host == "127.0.0.1" and port > 0
    with pytest.raises(aioice.stun.TransactionFailed, match="401"):
        asyncio.run(allocate(turn, server.username, "not-the-password", "udp"))


def test_the_output_says_where_to_go_and_where_the_logs_are(stack: RunningStack) -> None:
    text = "".join(stack.output)
    assert f"open {stack.url} and click Connect" in text
    assert str(stack.log_dir.resolve()) in text
    assert {"local.log", "agent.log", "coturn.log"} <= {path.name for path in stack.log_dir.iterdir()}


def test_broker_cli_masks_credentials_unless_asked(stack: RunningStack) -> None:
    env = {**os.environ, **stack.env}
    masked = subprocess.run(
        [sys.executable, "-m", "broker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert masked.returncode == 0, masked.stderr
    assert '"credential": "***"' in masked.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "broker", "--show-credentials"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert '"credential": "***"' not in shown.stdout and '"credential": "' in shown.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "broker"],
        cwd=ROOT,
        env={**env, "TURN_CHANNEL_ARNS": "nope"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert broken.returncode == 1 and broken.stderr.startswith("error: TURN_CHANNEL_ARNS")


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    with running_stack(tmp_path) as running:
        helpers = children(running.process.pid)
        assert len(helpers) == 2  # coturn and the agent
        running.process.send_signal(signal.SIGINT)
        out, _ = running.process.communicate(timeout=30)
        assert running.process.returncode == 0 and "stopped" in out
        for pid in helpers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert port_freed(running.ports["turn"], 5) and port_freed(running.ports["agent"], 5)


def test_a_killed_stack_leaves_no_turn_server_or_agent_behind(tmp_path: Path) -> None:
    with running_stack(tmp_path) as running:
        running.process.kill()  # SIGKILL: no chance to clean up
        running.process.wait(timeout=10)
        assert port_freed(running.ports["turn"], 15), "coturn outlived the local stack"
        assert port_freed(running.ports["agent"], 15), "the agent outlived the local stack"


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "local", f"--port={port}", f"--turn-port={free_port()}", f"--log-dir={tmp_path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 1
    assert f"port {port}" in run.stderr and "in use" in run.stderr and "PORT" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_missing_system_package_is_a_clear_error(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "local", f"--port={free_port()}", f"--log-dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(bare)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert "missing Debian package(s): coturn espeak-ng" in run.stderr and "make system-deps" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--channels=0"],
        ["--ttl=5"],
        ["--port=99999"],
        ["--port=abc"],
        ["--pipeline=gpt"],
        ["--nova-sonic-session-seconds=0"],
    ],
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "local", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "error:" in run.stderr and "Traceback" not in run.stderr


def test_local_mode_waits_for_the_line_the_agent_logs_when_its_pipeline_is_ready() -> None:
    from agent.server import PIPELINE_READY  # noqa: PLC0415
    from local.stack import AGENT_READY  # noqa: PLC0415

    for pipeline in ("local", "nova-sonic"):
        assert PIPELINE_READY % pipeline == AGENT_READY.format(pipeline=pipeline)

"""Run ``python -m local`` (what a person runs) on free loopback ports for the local-mode tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.coturn import ensure_port_free, free_port
from local.exceptions import LocalStackError

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "RunningStack", "children", "free_port", "port_freed", "rss_high_water_kib", "running_stack"]


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    url: str
    env: dict[str, str]
    ports: dict[str, int]
    log_dir: Path
    output: list[str]

    def emulator_stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports['kvs']}/_emulator/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))

    def served(self, operation: str = "GetIceServerConfig") -> int:
        return int(self.emulator_stats()["operations"].get(operation, {}).get("served", 0))


@contextmanager
def running_stack(log_dir: Path, *extra: str, timeout: float = 180) -> Iterator[RunningStack]:
    """Start ``python -m local`` with free ports; stop it with SIGINT (Ctrl-C) afterwards."""
    ports = {name: free_port() for name in ("port", "kvs", "turn", "agent", "agentcore", "nova_sonic")}
    command = [
        sys.executable, "-m", "local",
        f"--port={ports['port']}", f"--kvs-port={ports['kvs']}", f"--turn-port={ports['turn']}",
        f"--agent-port={ports['agent']}", f"--agentcore-port={ports['agentcore']}",
        f"--nova-sonic-port={ports['nova_sonic']}", f"--log-dir={log_dir}", *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: list[str] = []
    env: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    try:
        for line in process.stdout:
            output.append(line)
            if line.strip().startswith("export "):
                name, _, value = line.strip().removeprefix("export ").partition("=")
                env[name] = value
            if line.startswith("Ctrl-C") or time.monotonic() > deadline:
                break
        if not env:
            raise AssertionError(
                f"python -m local did not start: {''.join(output)} {process.stderr.read() if process.stderr else ''}"
            )
        yield RunningStack(process, f"http://127.0.0.1:{ports['port']}", env, ports, log_dir, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # as a person's Ctrl-C
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def rss_high_water_kib(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def port_freed(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ensure_port_free("127.0.0.1", port, "test")
            return True
        except LocalStackError:
            time.sleep(0.1)
    return False

"""Shared pieces of the broker API tests: a real agent process, an HTTP caller and a real offer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import DUMMY_AWS_ENV

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/voice_agent-AbCdEf1234"
SESSION_KEY = "lambda-session-signing-key-0123456789abcdef"


def lambda_env(channel_arns: Iterable[str]) -> dict[str, str]:
    """The broker Lambda's environment as the stack sets it, with dummy credentials and a literal session key."""
    return {
        **DUMMY_AWS_ENV,
        "TURN_CHANNEL_ARNS": ",".join(channel_arns),
        "AGENT_INVOKER": "agentcore",
        "AGENT_RUNTIME_ARN": RUNTIME_ARN,
        "SESSION_SIGNING_KEY": SESSION_KEY,
        "AWS_LAMBDA_FUNCTION_NAME": "broker",
    }


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def agent_process(env: dict[str, str] | None = None) -> Iterator[str]:
    """Run the real agent (``python -m agent``, local pipeline, host candidates on loopback)."""
    port = free_tcp_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent"],
        cwd=ROOT,
        env={
            **os.environ,
            "AGENT_PIPELINE": "local",
            "AGENT_ICE_SERVERS": "none",
            "AGENT_ICE_HOST_CANDIDATES": "loopback",
            "AGENT_PORT": str(port),
            "AGENT_GREETING": "",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the agent exited: {process.stderr.read().decode()[-2000:] if process.stderr else ''}"
                )
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent did not start within 90 s") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error_code(self) -> str:
        return str(self.body["error"]["code"])


def call(
    base_url: str,
    method: str,
    path: str,
    body: object = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    timeout: float = 30,
) -> Reply:
    """One HTTP request; the reply body is parsed as JSON (every reply of the API is JSON)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), json.loads(error.read()))

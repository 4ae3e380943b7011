"""Run the KVS emulator as a separate process for benchmarks (its own GIL, like a real service)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local import OFFLINE_AWS_ENV

ROOT = Path(__file__).resolve().parent.parent

DUMMY_AWS_ENV = {**OFFLINE_AWS_ENV, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class EmulatorProcess:
    """A running emulator: its base URL and the channels it created."""

    url: str
    channel_arns: tuple[str, ...]


@contextmanager
def emulator_process(args: Sequence[str]) -> Iterator[EmulatorProcess]:
    """Start ``python -m local.kvs_emulator`` on a free loopback port and point boto3 at it.

    Sets dummy AWS credentials and ``AWS_ENDPOINT_URL_KINESIS_VIDEO`` in this process's
    environment for the duration, and stops the emulator afterwards.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "local.kvs_emulator", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    saved = dict(os.environ)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            raise RuntimeError("the KVS emulator exited before it was ready")
        ready = json.loads(line)
        os.environ.update(DUMMY_AWS_ENV)
        os.environ["AWS_ENDPOINT_URL_KINESIS_VIDEO"] = ready["url"]
        yield EmulatorProcess(url=ready["url"], channel_arns=tuple(ready["channel_arns"]))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        process.terminate()
        process.wait(timeout=10)

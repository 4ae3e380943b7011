"""The benchmark runs end to end and reports every mode (numbers are checked by people, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_bench_broker_reports_all_modes_as_json() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.broker",
            "--json",
            "--channels=2",
            "--samples=6",
            "--seconds=2",
            "--threads=8",
            "--latency-ms=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report["modes"]) == {"naive", "per_session", "shared"}
    for mode in report["modes"].values():
        assert mode["samples"] == 6
        assert mode["p50_ms"] > 0 and mode["p99_ms"] >= mode["p50_ms"]
    per_session = report["modes"]["per_session"]
    # Functional, not timing: the broker never provokes a throttle, even saturated.
    assert per_session["saturation_throttles"] == 0 and per_session["saturation_failures"] == 0
    assert per_session["saturation_successes"] > 0
    assert set(report["targets"]) >= {"shared_p99_under_2ms", "per_session_zero_throttles"}


def test_bench_rejects_bad_arguments() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.broker", "--channels=0"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "error:" in run.stderr

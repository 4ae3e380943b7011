"""The pool-sizing arithmetic and its CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.exceptions import SizingError
from broker.sizing import (
    channel_count,
    channels_for_overrun_target,
    main,
    poisson_overrun_probability,
    size_pool,
)


@pytest.mark.parametrize(
    ("peak", "expected"),
    [(0.1, 1), (1, 1), (5, 1), (5.01, 2), (15, 3), (0.3 * 50, 3), (1.1 * 5, 2), (100, 20), (12.5, 3)],
)
def test_one_call_no_headroom_is_exactly_ceil_peak_over_five(peak: float, expected: int) -> None:
    assert channel_count(peak, calls_per_session=1, headroom=0) == expected


@given(
    peak=st.decimals(min_value="0.01", max_value="100000", places=2),
    calls=st.integers(1, 4),
    headroom=st.sampled_from(["0", "0.1", "0.25", "0.5", "1"]),
)
def test_matches_exact_formula(peak: object, calls: int, headroom: str) -> None:
    exact = Fraction(str(peak)) * calls * (1 + Fraction(headroom)) / 5
    assert channel_count(float(str(peak)), calls_per_session=calls, headroom=float(headroom)) == max(
        1, math.ceil(exact)
    )


def test_defaults_are_two_calls_and_a_quarter_headroom() -> None:
    # 12 sessions/s x 2 calls x 1.25 / 5 = 6
    assert channel_count(12) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peak_sessions_per_sec": 0},
        {"peak_sessions_per_sec": -3},
        {"peak_sessions_per_sec": float("nan")},
        {"peak_sessions_per_sec": float("inf")},
        {"peak_sessions_per_sec": 1, "calls_per_session": 0},
        {"peak_sessions_per_sec": 1, "tps_per_channel": 0},
        {"peak_sessions_per_sec": 1, "headroom": -0.1},
        {"peak_sessions_per_sec": "10"},
        {"peak_sessions_per_sec": True},
    ],
)
def test_bad_input_raises_sizing_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(SizingError):
        channel_count(**kwargs)  # type: ignore[arg-type]


def test_poisson_tail_matches_direct_sum() -> None:
    mean, capacity = 24.0, 30
    direct = 1 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(capacity + 1))
    assert poisson_overrun_probability(mean, capacity) == pytest.approx(direct, rel=1e-9)
    # Far tail: no cancellation to zero, still tiny and positive.
    assert 0 < poisson_overrun_probability(10.0, 60) < 1e-20
    assert poisson_overrun_probability(0.0, 5) == 0.0


def test_overrun_target_count_is_the_smallest_that_meets_it() -> None:
    mean = 24.0
    safe = channels_for_overrun_target(mean, 5.0)
    assert poisson_overrun_probability(mean, safe * 5) < 1e-3
    assert poisson_overrun_probability(mean, (safe - 1) * 5) >= 1e-3


def test_costs_and_quota_warning() -> None:
    report = size_pool(12, monthly_sessions=100_000, avg_minutes=5)
    assert report.channels == 6
    assert report.channel_cost_usd_per_month == pytest.approx(0.18)
    # 100k sessions x 5 min x 2 relayed peers = 1M TURN minutes at $0.12 per 1000
    assert report.turn_cost_usd_per_month == pytest.approx(120.0)
    assert report.total_cost_usd_per_month == pytest.approx(120.18)
    big = size_pool(30_000, region="eu-west-1")
    assert big.channel_quota == 5_000
    assert any("quota" in warning for warning in big.warnings)
    assert size_pool(30_000, region="us-east-1").channel_quota == 10_000


def test_cli_prints_count_arithmetic_and_burst_risk(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "12", "--monthly-sessions", "1000", "--avg-minutes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("channels: 6\n")
    assert "ceil(12 sessions/s x 2 calls/session x (1 + 0.25 headroom) / 5 TPS per channel) = 6" in out
    assert "Poisson burst" in out
    assert "TURN: 6,000 relayed minutes" in out


def test_cli_json_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "7", "--calls-per-session", "1", "--headroom", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["channels"] == 2
    assert report["pool_capacity_calls_per_sec"] == 10
    assert report["turn_cost_usd_per_month"] is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--peak-sessions-per-sec", "-1"],
        ["--peak-sessions-per-sec", "abc"],
        ["--peak-sessions-per-sec", "5", "--headroom", "-1"],
        ["--peak-sessions-per-sec", "5", "--monthly-sessions", "10"],
        [],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "broker.sizing", *argv], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert "error:" in run.stderr.splitlines()[-1]

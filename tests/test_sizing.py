"""The pool-sizing arithmetic, the model of uncoordinated callers, and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.exceptions import SizingError
from broker.sizing import (
    MODEL_MARGIN,
    channel_count,
    erlang_b,
    main,
    predicted_throttle_rate,
    recommended_channel_count,
    size_pool,
    throttle_probability,
)
from local.kvs_emulator.limits import RateLimiter


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


def test_erlang_b_matches_its_closed_form() -> None:
    for slots, load in [(1, 0.5), (5, 1.0), (5, 2.0), (5, 7.5), (12, 9.0)]:
        terms = [load**k / math.factorial(k) for k in range(slots + 1)]
        assert erlang_b(slots, load) == pytest.approx(terms[-1] / sum(terms), rel=1e-12)
    assert erlang_b(0, 3.0) == 1.0
    assert erlang_b(5, 0.0) == 0.0
    # The recurrence neither overflows nor underflows to nonsense at extreme loads.
    assert erlang_b(5, 1e12) == pytest.approx(1.0)
    assert 0 < erlang_b(5, 1e-9) < 1e-40


def test_independent_calls_give_the_erlang_b_fixed_point_of_failover_load() -> None:
    calls, channels = 20.0, 10
    rate = predicted_throttle_rate(calls, channels, calls_per_session=1)
    refused = throttle_probability(calls, channels, calls_per_session=1)
    assert rate == pytest.approx(refused / (1 - refused), rel=1e-12)
    # The load each channel is offered includes the retries the throttles cause.
    offered = calls / channels * (1 + rate)
    assert refused == pytest.approx(erlang_b(5, offered), rel=1e-9)
    # Failover adds load: more throttles than Erlang-B at the base load alone.
    assert rate > erlang_b(5, 2.0) / (1 - erlang_b(5, 2.0))


def test_a_sessions_calls_arrive_as_a_clump_on_a_channel() -> None:
    # Two slots (2 calls/s, 1 s window) and two calls per session over 4 channels, by hand: per
    # window a channel gets sessions with both calls (rate s / 16) or one (s x 2 x 3/16), plus
    # single retries r. Cuts: p1 = p0 (l1 + l2), 2 p2 = p1 (l1 + l2) + p0 l2; a pair that finds one
    # slot busy loses one call, two slots both. The fixed point refuses exactly the retries it gets.
    calls, channels = 3.0, 4
    rate = predicted_throttle_rate(calls, channels, tps_per_channel=2)
    sessions = calls / 2
    retries = calls / channels * rate
    singles, pairs = sessions * 2 * 3 / 16 + retries, sessions / 16
    p0 = 1.0
    p1 = p0 * (singles + pairs)
    p2 = (p1 * (singles + pairs) + p0 * pairs) / 2
    refused = (singles * p2 + pairs * (p1 + 2 * p2)) / (p0 + p1 + p2)
    assert refused == pytest.approx(retries, rel=1e-9)
    refused_share = throttle_probability(calls, channels, tps_per_channel=2)
    assert refused_share == pytest.approx(retries / (calls / channels + retries), rel=1e-12)


def test_clumps_cost_most_in_small_pools_and_nothing_with_one_call_per_session() -> None:
    # The same load per channel (4/3 calls per window): the clump's share of a channel is 1/N.
    small = predicted_throttle_rate(20.0, 15) / predicted_throttle_rate(20.0, 15, calls_per_session=1)
    large = predicted_throttle_rate(200.0, 150) / predicted_throttle_rate(200.0, 150, calls_per_session=1)
    assert 1.2 < small < 1.3
    assert 1.01 < large < 1.03
    assert predicted_throttle_rate(20.0, 15, calls_per_session=3) > predicted_throttle_rate(20.0, 15)


def test_throttle_rate_falls_as_channels_are_added_and_is_zero_without_calls() -> None:
    for calls_per_session in (1, 2, 4):
        rates = [predicted_throttle_rate(20.0, n, calls_per_session=calls_per_session) for n in range(5, 60)]
        assert all(a > b > 0 for a, b in itertools.pairwise(rates))
    assert predicted_throttle_rate(0.0, 3) == 0.0
    assert throttle_probability(0.0, 3) == 0.0


@pytest.mark.parametrize(("calls", "channels"), [(5.0, 1), (20.0, 4), (21.0, 4), (1e6, 3)])
def test_saturated_pool_says_so_instead_of_a_number(calls: float, channels: int) -> None:
    # The load reaches what the pool can admit: no fixed point, throttles grow without bound.
    assert predicted_throttle_rate(calls, channels) == math.inf
    assert throttle_probability(calls, channels) == 1.0


def test_window_holds_tps_times_window_calls() -> None:
    # 5 calls/s over a 2 s window: a channel admits 10 calls per window.
    ten_slots = predicted_throttle_rate(40.0, 10, calls_per_session=1, window_seconds=2.0)
    load = 40.0 * 2.0 / 10 * (1 + ten_slots)
    refused = throttle_probability(40.0, 10, calls_per_session=1, window_seconds=2.0)
    assert refused == pytest.approx(erlang_b(10, load), rel=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calls_per_sec": -1.0, "channels": 3},
        {"calls_per_sec": float("nan"), "channels": 3},
        {"calls_per_sec": 1.0, "channels": 0},
        {"calls_per_sec": 1.0, "channels": 2.5},
        {"calls_per_sec": 1.0, "channels": True},
        {"calls_per_sec": 1.0, "channels": 3, "tps_per_channel": 0},
        {"calls_per_sec": 1.0, "channels": 3, "window_seconds": 0},
        {"calls_per_sec": 1.0, "channels": 3, "tps_per_channel": 0.5},  # under one call per window
        {"calls_per_sec": 1.0, "channels": 3, "calls_per_session": 0},
        {"calls_per_sec": 1.0, "channels": 3, "calls_per_session": 1.5},
    ],
)
def test_model_bad_input_raises_sizing_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(SizingError):
        predicted_throttle_rate(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(SizingError):
        throttle_probability(**kwargs)  # type: ignore[arg-type]


def simulate_random_placement(
    calls_per_sec: float, channels: int, seconds: float, seed: int, *, sessions: bool
) -> tuple[float, int]:
    """Throttles per served call when calls pick random channels, each the emulator's limiter.

    With ``sessions``, Poisson sessions make two calls, the second 0.3-0.8 s after the first (the
    ``/start`` and the offer); without, the calls are Poisson. A refused call fails over at once
    to a random channel it has not tried. Returns the measured rate and the calls that ran out of
    channels. The first seconds fill the windows and are not counted.
    """
    rng = random.Random(seed)
    limiters = [RateLimiter(5, 1.0) for _ in range(channels)]
    warm_up, end = 5.0, 5.0 + seconds
    arrivals: list[float] = []
    now = 0.0
    while now < end:
        now += rng.expovariate(calls_per_sec / 2 if sessions else calls_per_sec)
        arrivals.append(now)
        if sessions:
            arrivals.append(now + rng.uniform(0.3, 0.8))
    served = throttles = failed = 0
    for now in sorted(arrivals):
        counted = warm_up < now < end
        tried: set[int] = set()
        while True:
            if len(tried) == channels:
                failed += counted
                break
            channel = rng.randrange(channels)
            if channel in tried:
                continue
            tried.add(channel)
            if limiters[channel].has_room(now):
                limiters[channel].record(now)
                served += counted
                break
            throttles += counted
    return throttles / served, failed


@pytest.mark.parametrize(
    ("calls_per_sec", "channels", "seconds"),
    [(20.0, 10, 10_000.0), (20.0, 15, 25_000.0), (200.0, 149, 2_000.0), (40.0, 25, 10_000.0), (4.0, 5, 40_000.0)],
)
def test_model_matches_a_monte_carlo_of_sessions_from_uncoordinated_callers(
    calls_per_sec: float, channels: int, seconds: float
) -> None:
    measured, failed = simulate_random_placement(calls_per_sec, channels, seconds, seed=channels, sessions=True)
    predicted = predicted_throttle_rate(calls_per_sec, channels)
    independent = predicted_throttle_rate(calls_per_sec, channels, calls_per_session=1)
    print(
        f"\n{calls_per_sec:g} calls/s over {channels} channels, sessions: model {predicted:.4f}"
        f" (independent calls {independent:.4f}), Monte-Carlo {measured:.4f}"
    )
    assert 0.002 < predicted < 0.06  # the levels where pools are sized
    assert failed == 0
    assert predicted / 1.1 < measured < predicted * 1.1
    if channels < 100:  # where clumps matter, the model of independent calls is further off
        assert abs(measured - predicted) < abs(measured - independent) / 2


@pytest.mark.parametrize(("calls_per_sec", "channels", "seconds"), [(20.0, 10, 5_000.0), (20.0, 15, 12_000.0)])
def test_model_of_independent_calls_matches_a_monte_carlo_of_poisson_calls(
    calls_per_sec: float, channels: int, seconds: float
) -> None:
    measured, failed = simulate_random_placement(calls_per_sec, channels, seconds, seed=channels, sessions=False)
    predicted = predicted_throttle_rate(calls_per_sec, channels, calls_per_session=1)
    print(
        f"\n{calls_per_sec:g} Poisson calls/s over {channels} channels:"
        f" model {predicted:.4f}, Monte-Carlo {measured:.4f}"
    )
    assert failed == 0
    assert predicted / 1.1 < measured < predicted * 1.1


def test_recommended_count_is_the_smallest_that_meets_the_target() -> None:
    for peak in (1, 3.3, 10, 12, 100, 200, 1000):
        recommended = recommended_channel_count(peak)
        assert recommended >= channel_count(peak)
        # The prediction is kept MODEL_MARGIN under the target: the model's measured error fits below.
        assert predicted_throttle_rate(2 * peak, recommended) <= 0.01 * MODEL_MARGIN
        if recommended > channel_count(peak):
            assert predicted_throttle_rate(2 * peak, recommended - 1) > 0.01 * MODEL_MARGIN
    assert recommended_channel_count(10) == 17
    assert recommended_channel_count(10, max_throttle_rate=0.05) == 11
    # The clumps cost a small pool a channel more and a large one barely any.
    assert [recommended_channel_count(peak) for peak in (100, 200, 1000)] == [154, 307, 1531]


def test_recommended_count_never_drops_below_the_minimum() -> None:
    # A lax target is met by fewer channels than the capacity arithmetic asks for: the minimum wins.
    assert recommended_channel_count(10, headroom=2.0, max_throttle_rate=0.5) == channel_count(10, headroom=2.0)


def test_recommended_count_is_fast_at_fleet_scale() -> None:
    started = time.perf_counter()
    recommended = recommended_channel_count(10_000)
    assert time.perf_counter() - started < 0.5
    target = 0.01 * MODEL_MARGIN
    assert predicted_throttle_rate(20_000.0, recommended) <= target < predicted_throttle_rate(20_000.0, recommended - 1)


@pytest.mark.parametrize("target", [0, 1, -0.1, 1.5, float("nan"), True])
def test_recommended_count_rejects_targets_outside_zero_to_one(target: float) -> None:
    with pytest.raises(SizingError):
        recommended_channel_count(10, max_throttle_rate=target)


def test_costs_and_quota_warning() -> None:
    report = size_pool(12, monthly_sessions=100_000, avg_minutes=5)
    assert (report.minimum_channels, report.recommended_channels) == (6, 20)
    assert report.channel_cost_usd_per_month == pytest.approx(20 * 0.03)  # the recommended pool
    # 100k sessions x 5 min x 2 relayed peers = 1M TURN minutes at $0.12 per 1000
    assert report.turn_cost_usd_per_month == pytest.approx(120.0)
    assert report.total_cost_usd_per_month == pytest.approx(120.60)
    big = size_pool(30_000, region="eu-west-1")
    assert big.channel_quota == 5_000
    assert any("quota" in warning for warning in big.warnings)
    assert size_pool(30_000, region="us-east-1").channel_quota == 10_000


def test_report_predicts_throttles_at_both_counts() -> None:
    report = size_pool(10)
    assert (report.minimum_channels, report.recommended_channels) == (5, 17)
    assert report.max_throttle_rate == 0.01
    assert report.predicted_throttle_rate == pytest.approx(predicted_throttle_rate(20.0, 17))
    assert report.predicted_throttle_rate <= 0.01
    assert report.predicted_throttle_rate_at_minimum == pytest.approx(predicted_throttle_rate(20.0, 5))
    # No headroom and an exact fit: the minimum is saturated, which the report says with None.
    exact = size_pool(5, calls_per_session=1, headroom=0)
    assert exact.minimum_channels == 1
    assert exact.predicted_throttle_rate_at_minimum is None
    assert exact.recommended_channels > 1


def test_cli_explains_minimum_recommended_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "12", "--monthly-sessions", "1000", "--avg-minutes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("channels: 20 recommended (minimum 6)\n")
    assert "minimum 6: the pool's capacity just covers the peak if one scheduler placed every call perfectly" in out
    assert "ceil(12 sessions/s x 2 calls/session x (1 + 0.25 headroom) / 5 TPS per channel) = 6" in out
    assert (
        "recommended 20: callers that do not coordinate (the broker's Lambda instances) are throttled on ~0.78%" in out
    )
    assert "(target 1%)" in out
    assert "channels: 20 x $0.03 = $0.60" in out
    assert "TURN: 6,000 relayed minutes" in out
    assert "Poisson burst" not in out


def test_cli_json_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "7", "--calls-per-session", "1", "--headroom", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["minimum_channels"] == 2
    assert report["minimum_capacity_calls_per_sec"] == 10
    assert report["recommended_channels"] == recommended_channel_count(7, calls_per_session=1, headroom=0)
    assert report["predicted_throttle_rate"] <= report["max_throttle_rate"] == 0.01
    assert report["turn_cost_usd_per_month"] is None
    assert "burst_overrun_probability" not in report


def test_cli_json_of_a_saturated_minimum_is_still_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "5", "--calls-per-session", "1", "--headroom", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # no Infinity, which JSON does not have
    assert report["predicted_throttle_rate_at_minimum"] is None


def test_cli_max_throttle_rate_changes_the_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peak-sessions-per-sec", "10", "--max-throttle-rate", "0.001", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recommended_channels"] == recommended_channel_count(10, max_throttle_rate=0.001) > 16
    assert report["max_throttle_rate"] == 0.001


def test_cli_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "sizing.png"
    assert main(["--peak-sessions-per-sec", "10", "--plot", str(target)]) == 0
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert capsys.readouterr().out.rstrip().endswith(f"plot: {target}")


def test_cli_plot_without_matplotlib_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["--peak-sessions-per-sec", "10", "--plot", str(tmp_path / "sizing.png")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "install" in captured.err and "matplotlib" in captured.err
    assert not (tmp_path / "sizing.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--peak-sessions-per-sec", "-1"],
        ["--peak-sessions-per-sec", "abc"],
        ["--peak-sessions-per-sec", "5", "--headroom", "-1"],
        ["--peak-sessions-per-sec", "5", "--monthly-sessions", "10"],
        ["--peak-sessions-per-sec", "5", "--max-throttle-rate", "0"],
        ["--peak-sessions-per-sec", "5", "--max-throttle-rate", "1"],
        ["--peak-sessions-per-sec", "5", "--max-throttle-rate", "nan"],
        ["--peak-sessions-per-sec", "5", "--max-throttle-rate", "often"],
        ["--peak-sessions-per-sec", "5", "--plot", "/nonexistent-dir/sizing.png"],
        ["--peak-sessions-per-sec", "5", "--plot", "sizing.txt"],
        [],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "broker.sizing", *argv], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert "error:" in run.stderr.splitlines()[-1]

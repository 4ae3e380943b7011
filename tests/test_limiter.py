"""Property tests of the sliding-window limiter on a fake clock."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.limiter import SlidingWindowLimiter


def simulate(limiter: SlidingWindowLimiter, requests: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Run calls through the limiter; each request is (wanted start, duration). Returns (sent, done)."""
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, request index)
    for index, (start, _) in enumerate(requests):
        heapq.heappush(events, (start, index, "want", index))
    order = len(requests)
    intervals: dict[int, tuple[float, float]] = {}
    while events:
        now, _, kind, index = heapq.heappop(events)
        if kind == "done":
            limiter.release(now)
            continue
        ready = limiter.ready_at(now)
        if ready > now:
            order += 1
            heapq.heappush(events, (ready, order, "want", index))
            continue
        limiter.acquire(now)
        done = now + requests[index][1]
        intervals[index] = (now, done)
        order += 1
        heapq.heappush(events, (done, order, "done", index))
    return list(intervals.values())


EPSILON = 1e-9  # float rounding at the exact window boundary, which the window allows


def overlapping_before(intervals: list[tuple[float, float]], window: float) -> int:
    """Largest number of earlier-sent calls that KVS could count in one window with a later send.

    A call reaches the server somewhere between its send and its answer. For each call j, count
    the calls sent no later than j that could arrive less than ``window`` before j arrives at its
    earliest (its send): those still unanswered or answered after ``sent_j - window``.
    """
    worst = 0
    for j, (sent_j, _) in enumerate(intervals):
        seen = sum(
            1
            for i, (sent_i, done_i) in enumerate(intervals)
            if i != j and (sent_i, i) <= (sent_j, j) and done_i > sent_j - window + EPSILON
        )
        worst = max(worst, seen + 1)
    return worst


requests_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=0.5, allow_nan=False),  # gap before this request
        st.floats(min_value=0, max_value=0.4, allow_nan=False),  # how long KVS takes to answer
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(requests=requests_strategy, limit=st.integers(1, 6), window=st.sampled_from([0.5, 1.0, 2.0]))
def test_no_window_as_seen_by_the_server_ever_holds_more_than_the_limit(
    requests: list[tuple[float, float]], limit: int, window: float
) -> None:
    wanted, clock = [], 0.0
    for gap, duration in requests:
        clock += gap
        wanted.append((clock, duration))
    intervals = simulate(SlidingWindowLimiter(limit, window), wanted)
    assert len(intervals) == len(wanted)  # everyone is served eventually
    assert overlapping_before(intervals, window) <= limit


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 40), limit=st.integers(1, 6))
def test_instant_calls_get_exactly_limit_per_window(count: int, limit: int) -> None:
    intervals = simulate(SlidingWindowLimiter(limit, 1.0), [(0.0, 0.0)] * count)
    sends = sorted(sent for sent, _ in intervals)
    # The k-th call waits for the (k // limit)-th window: no more restrictive than it must be.
    assert sends == [float(k // limit) for k in range(count)]


def test_checker_catches_a_token_bucket_burst() -> None:
    # A token bucket with burst 5 and 5 tokens/s lets 5 calls at t=0 and 5 more by t=0.99.
    bucket = [(0.0, 0.0)] * 5 + [(0.2 * k - 0.01, 0.0) for k in range(1, 6)]
    assert overlapping_before(bucket, 1.0) > 5


def test_a_slow_answer_holds_its_slot_until_a_window_after_it() -> None:
    limiter = SlidingWindowLimiter(1, 1.0)
    limiter.acquire(0.0)
    assert limiter.ready_at(0.5) == pytest.approx(1.5)  # estimate while in flight
    limiter.release(0.8)
    assert limiter.ready_at(0.9) == pytest.approx(1.8)
    assert limiter.ready_at(1.8) == pytest.approx(1.8)


def test_misuse_is_refused() -> None:
    limiter = SlidingWindowLimiter(1, 1.0)
    with pytest.raises(RuntimeError):
        limiter.release(0.0)
    limiter.acquire(0.0)
    with pytest.raises(RuntimeError):
        limiter.acquire(0.0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0, 1.0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(1, 0.0)

"""Pool sizing: how many KVS signaling channels a peak session rate needs, and what they cost.

``GetIceServerConfig`` is limited to 5 calls per second per channel. Two numbers come out:

- The **minimum**, :func:`channel_count`: ``ceil(peak_sessions_per_sec * calls_per_session *
  (1 + headroom) / tps_per_channel)``. It is enough only if one scheduler placed every call
  perfectly, which the fleet never does: every Lambda instance and every agent microVM limits only
  its own calls, from a limiter that has seen almost nothing, so calls land on the channels
  effectively at random.
- The **recommended** count, :func:`recommended_channel_count`: the minimum, or more channels, so
  that such uncoordinated callers are throttled (``ClientLimitExceededException``, answered by a
  failover to another channel) on at most ``max_throttle_rate`` of their calls.

The model behind the second number (:func:`predicted_throttle_rate`): a channel refuses a call when
it already admitted ``L = tps_per_channel * window_seconds`` calls in the preceding window, and
refused calls are not counted (as the emulator's ``RateLimiter`` does). Each admitted call holds
one of ``L`` slots for one window, so a channel is an ``L``-slot loss system. Two things feed it:

- **Sessions.** A session's calls (the browser's at ``/start``, the agent's with the offer 0.3-0.8 s
  later) land on random channels, so with ``c`` calls per session and ``N`` channels a session puts
  ``Binomial(c, 1/N)`` of them on one channel, *within one window*: a clump, not independent
  arrivals. The second call of a clump finds its partner's slot taken, and clumps make a channel's
  busy count more variable. At 10 sessions/s over 15 channels this alone is +24 % throttles
  (Monte-Carlo below); it fades as ``1/N``, so large pools barely notice it.
- **Failovers.** A refused call tries another channel: a stream of single calls at the rate of the
  refusals, solved as a fixed point (the retry load ``r`` at which a channel refuses ``r``).

A channel is then the batch-arrival loss system ``M^X/M/L/L`` with partial admission (a clump of
``k`` that finds ``i`` slots busy has ``min(k, L - i)`` calls admitted), whose busy-slot
distribution follows from its cut equations. For single calls (``calls_per_session=1``) it is
exactly Erlang-B ``B(L, A)`` at the offered load ``A = a / (1 - B)``, ``a = calls_per_sec *
window_seconds / channels`` (Erlang-B depends on the hold time only through its mean). For clumps
the exponential hold is an approximation with two errors that cancel for this workload: it sends a
clump's calls at one instant (they are 0.3-0.8 s apart: more throttles) but frees their slots
independently (each holds one window: fewer). The throttles per served call are ``r / a``.

Measured against a Monte-Carlo of sessions (two calls 0.3-0.8 s apart, random channel, immediate
failover to an untried channel) over the emulator's own limiter (``tests/test_sizing.py``): within
5 % from 10 to 150 channels where throttles are 0.5-5 % per call (10 channels at 20 calls/s: model
0.0519, Monte-Carlo 0.0536-0.0543; 15: 0.0120 and 0.0117-0.0120; 149 at 200 calls/s: 0.0102 and
0.0101), and up to 9 % above it at 4-5 channels. The fleet simulation (``bench.fleet``, the broker's
own scheduling in every Lambda instance, 30,000 s) gives 0.0524, 0.0114 and 0.0103 at those three.
What the model leaves out is small: a retry finds a busier channel than a first attempt does (1.4
times as often refused at 15 channels), but retries are 1 % of attempts. A session whose calls are
a window or more apart is ``calls_per_session=1``; calls sent at one instant are throttled about
15 % more than predicted. Under saturation (throttles near one per call and more) the model runs
ahead of a real pool, where a call runs out of untried channels and fails instead.

The CDK app and this CLI share these functions::

    python -m broker.sizing --peak-sessions-per-sec 12 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from broker.exceptions import SizingError

DEFAULT_CALLS_PER_SESSION = 2
"""The browser's and the agent's credentials: two ``GetIceServerConfig`` calls per session."""
DEFAULT_TPS_PER_CHANNEL = 5.0
DEFAULT_WINDOW_SECONDS = 1.0
DEFAULT_HEADROOM = 0.25
DEFAULT_MAX_THROTTLE_RATE = 0.01
MODEL_MARGIN = 0.9
"""The recommended pool keeps the prediction 10 % under the target. The prediction is within ~5 % of
``bench.fleet`` (the real scheduling code in a simulated Lambda fleet) at 10-1,000 sessions/s, so a
pool sized to land exactly on the target met it in only about half the runs (1,490 channels at
1,000 sessions/s: 0.0101 simulated); the margin costs about 3 % more channels."""
"""Throttles per call the recommended pool may cost uncoordinated callers at the peak: 1 in 100."""
CHANNEL_MONTH_USD = 0.03
TURN_USD_PER_1000_MINUTES = 0.12
HIGH_QUOTA_REGIONS = frozenset({"us-east-1", "us-west-2"})
HIGH_CHANNEL_QUOTA = 10_000
DEFAULT_CHANNEL_QUOTA = 5_000
RELAYED_PEERS_PER_SESSION = 2
"""Both the browser and the agent stream through TURN, so a session minute is two TURN minutes."""
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
_RELATIVE_TOLERANCE = 1e-13


def _exact(value: float, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SizingError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SizingError(f"{name} must be finite, got {value!r}")
    # Through str() so that 0.1 is one tenth, not the binary double nearest to it.
    return Fraction(str(value))


def channel_count(
    peak_sessions_per_sec: float,
    *,
    calls_per_session: int = DEFAULT_CALLS_PER_SESSION,
    tps_per_channel: float = DEFAULT_TPS_PER_CHANNEL,
    headroom: float = DEFAULT_HEADROOM,
) -> int:
    """Return how many channels keep every channel under its ``GetIceServerConfig`` limit.

    Exact rational arithmetic, so ``channel_count(15, calls_per_session=1, headroom=0)`` is 3,
    never 4 through a rounding error. The pool always holds at least one channel.

    Args:
        peak_sessions_per_sec: Peak rate of new sessions per second (> 0).
        calls_per_session: ``GetIceServerConfig`` calls one session makes (>= 1).
        tps_per_channel: The per-channel limit (> 0); KVS allows 5.
        headroom: Extra capacity as a fraction (>= 0), e.g. 0.25 for 25 %.

    Raises:
        SizingError: An argument is out of range or not a number.
    """
    peak = _exact(peak_sessions_per_sec, "peak_sessions_per_sec")
    tps = _exact(tps_per_channel, "tps_per_channel")
    spare = _exact(headroom, "headroom")
    if isinstance(calls_per_session, bool) or not isinstance(calls_per_session, int):
        raise SizingError(f"calls_per_session must be a whole number, got {calls_per_session!r}")
    if peak <= 0:
        raise SizingError(f"peak_sessions_per_sec must be > 0, got {peak_sessions_per_sec}")
    if calls_per_session < 1:
        raise SizingError(f"calls_per_session must be >= 1, got {calls_per_session}")
    if tps <= 0:
        raise SizingError(f"tps_per_channel must be > 0, got {tps_per_channel}")
    if spare < 0:
        raise SizingError(f"headroom must be >= 0, got {headroom}")
    return max(1, math.ceil(peak * calls_per_session * (1 + spare) / tps))


def _window_slots(tps_per_channel: float, window_seconds: float) -> int:
    """Return ``L``: the calls one channel admits per window (a whole number, at least one)."""
    tps = _exact(tps_per_channel, "tps_per_channel")
    window = _exact(window_seconds, "window_seconds")
    if tps <= 0:
        raise SizingError(f"tps_per_channel must be > 0, got {tps_per_channel}")
    if window <= 0:
        raise SizingError(f"window_seconds must be > 0, got {window_seconds}")
    slots = math.floor(tps * window)
    if slots < 1:
        raise SizingError(
            f"tps_per_channel x window_seconds must admit at least one call per window, got {float(tps * window):g}"
        )
    return slots


def _load_per_channel(calls_per_sec: float, channels: int, window_seconds: float) -> float:
    """Return ``a``: the calls one channel receives per window before any failover."""
    if isinstance(calls_per_sec, bool) or not isinstance(calls_per_sec, int | float):
        raise SizingError(f"calls_per_sec must be a number, got {calls_per_sec!r}")
    if not (math.isfinite(calls_per_sec) and calls_per_sec >= 0):
        raise SizingError(f"calls_per_sec must be a finite number >= 0, got {calls_per_sec}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise SizingError(f"channels must be a whole number >= 1, got {channels!r}")
    return calls_per_sec * window_seconds / channels


def _check_calls_per_session(calls_per_session: int) -> None:
    if isinstance(calls_per_session, bool) or not isinstance(calls_per_session, int):
        raise SizingError(f"calls_per_session must be a whole number, got {calls_per_session!r}")
    if calls_per_session < 1:
        raise SizingError(f"calls_per_session must be >= 1, got {calls_per_session}")


def erlang_b(slots: int, offered_load: float) -> float:
    """Return the Erlang-B blocking probability ``B(slots, offered_load)``.

    The chance that a Poisson arrival finds all ``slots`` of a loss system busy when
    ``offered_load`` (arrival rate x mean hold time) is offered to it. Computed with the stable
    recurrence ``B(k) = A B(k-1) / (k + A B(k-1))``, which neither overflows nor cancels.

    Args:
        slots: Servers of the loss system (>= 0); ``B(0, A)`` is 1.
        offered_load: Offered traffic in erlangs (>= 0).
    """
    blocking = 1.0
    for k in range(1, slots + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def _session_clumps(base_load: float, channels: int, calls_per_session: int) -> list[float]:
    """Return ``clumps[k]``: per window, the sessions that put ``k`` first attempts on one channel.

    Each of a session's ``c`` calls picks a channel at random, so one channel gets
    ``Binomial(c, 1/N)`` of them; ``sum(k * clumps[k])`` is ``base_load``. Index 0 is unused.
    """
    sessions = base_load * channels / calls_per_session
    share = 1 / channels
    clumps = [0.0]
    for k in range(1, calls_per_session + 1):
        clumps.append(sessions * math.comb(calls_per_session, k) * share**k * (1 - share) ** (calls_per_session - k))
    return clumps


def _refused_load(clumps: Sequence[float], slots: int) -> float:
    """Return the calls refused per window by an ``M^X/M/slots/slots`` system offered ``clumps``.

    ``clumps[k]`` is the rate of arrivals of ``k`` calls at once (``k >= 1``); a clump that finds
    ``i`` slots busy has ``min(k, slots - i)`` of its calls admitted. With holds of one window on
    average, slots free one at a time, so the cut between ``j`` and ``j + 1`` busy slots balances
    ``(j + 1) p[j + 1]`` against the clumps that jump over it, ``sum(p[i] * at_least[j + 1 - i])``.
    """
    largest = len(clumps) - 1
    at_least = [0.0] * (largest + 2)  # at_least[m]: the rate of clumps of m calls or more
    for k in range(largest, 0, -1):
        at_least[k] = at_least[k + 1] + clumps[k]
    busy = [1.0]
    for j in range(slots):
        upward = sum(busy[i] * at_least[j + 1 - i] for i in range(max(0, j + 1 - largest), j + 1))
        busy.append(upward / (j + 1))
        if busy[-1] > 1e200:  # unnormalised: rescale before a heavy load overflows
            busy = [p / busy[-1] for p in busy]
    total = sum(busy)
    return sum(
        busy[i] / total * sum(clumps[k] * (k - (slots - i)) for k in range(slots - i + 1, largest + 1))
        for i in range(slots + 1)
    )


def _retry_load(base_load: float, clumps: list[float], slots: int) -> float:
    """Solve for ``r``: the failovers per window a channel receives when it refuses ``r`` calls.

    ``base_load`` is ``a``, the first attempts that ``clumps`` bring; retries arrive as single
    calls. The carried load ``a + r - refused(r)`` grows with ``r`` towards ``slots``, so the fixed
    point is unique when ``a < slots`` and lies where ``refused(r)`` stops exceeding ``r``; bisection
    on that sign never subtracts nearly equal numbers, so tiny throttle rates keep their precision.
    When ``a >= slots`` there is none and ``inf`` is returned.
    """
    if base_load >= slots:
        return math.inf

    def refused(retries: float) -> float:
        return _refused_load([clumps[0], clumps[1] + retries, *clumps[2:]], slots)

    low = refused(0.0)
    if low <= 0:
        return 0.0
    high = 2 * low
    while refused(high) > high:
        low, high = high, 2 * high
    while high - low > _RELATIVE_TOLERANCE * high:
        middle = (low + high) / 2
        if refused(middle) > middle:
            low = middle
        else:
            high = middle
    return high


def _failover_loads(
    calls_per_sec: float, channels: int, calls_per_session: int, tps_per_channel: float, window_seconds: float
) -> tuple[float, float]:
    """Return ``(a, r)``: one channel's first attempts and failovers per window (``r`` may be inf)."""
    slots = _window_slots(tps_per_channel, window_seconds)
    base_load = _load_per_channel(calls_per_sec, channels, window_seconds)
    _check_calls_per_session(calls_per_session)
    if base_load == 0:
        return 0.0, 0.0
    return base_load, _retry_load(base_load, _session_clumps(base_load, channels, calls_per_session), slots)


def throttle_probability(
    calls_per_sec: float,
    channels: int,
    *,
    calls_per_session: int = DEFAULT_CALLS_PER_SESSION,
    tps_per_channel: float = DEFAULT_TPS_PER_CHANNEL,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> float:
    """Return the chance that one ``GetIceServerConfig`` attempt is refused by its channel.

    Callers that do not coordinate place ``calls_per_sec`` calls at random over ``channels``
    channels and retry a refused call on another one (see the module's docstring for the model).

    Args:
        calls_per_sec: Calls the whole fleet makes per second (>= 0).
        channels: Channels in the pool (>= 1).
        calls_per_session: Calls one session makes within one window (>= 1); 1 for independent
            calls.
        tps_per_channel: The per-channel limit (> 0); KVS allows 5.
        window_seconds: The limit's sliding window (> 0); ``tps_per_channel x window_seconds``
            calls fit in one window.

    Returns:
        A probability; 1.0 when the load reaches the pool's capacity (``calls_per_sec >=
        channels x tps_per_channel``), where throttles grow without bound.

    Raises:
        SizingError: An argument is out of range or not a number.
    """
    first, retries = _failover_loads(calls_per_sec, channels, calls_per_session, tps_per_channel, window_seconds)
    if math.isinf(retries):
        return 1.0
    return retries / (first + retries) if retries else 0.0


def predicted_throttle_rate(
    calls_per_sec: float,
    channels: int,
    *,
    calls_per_session: int = DEFAULT_CALLS_PER_SESSION,
    tps_per_channel: float = DEFAULT_TPS_PER_CHANNEL,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> float:
    """Return the expected ``ClientLimitExceeded`` answers per served call (throttles per call).

    Each throttle costs the caller one more round trip, to another channel, so this is also the
    expected extra round trips per call. It is the figure a load test or a CloudWatch alarm on
    throttles / served calls compares against. Callers are uncoordinated: every call lands on a
    random channel, a session's calls within one window, and a refused call retries on another
    one (see the module's docstring).

    Args:
        calls_per_sec: Calls the whole fleet makes per second (>= 0).
        channels: Channels in the pool (>= 1).
        calls_per_session: Calls one session makes within one window (>= 1): 2 for the broker's
            ``/start`` and offer; 1 for independent calls (a Poisson load).
        tps_per_channel: The per-channel limit (> 0); KVS allows 5.
        window_seconds: The limit's sliding window (> 0).

    Returns:
        Throttles per served call (>= 0); ``math.inf`` when the load reaches the pool's capacity
        (``calls_per_sec >= channels x tps_per_channel``): no pool that size can carry it.

    Raises:
        SizingError: An argument is out of range or not a number.
    """
    first, retries = _failover_loads(calls_per_sec, channels, calls_per_session, tps_per_channel, window_seconds)
    return retries / first if first else 0.0


def _check_throttle_target(max_throttle_rate: float) -> None:
    if isinstance(max_throttle_rate, bool) or not isinstance(max_throttle_rate, int | float):
        raise SizingError(f"max_throttle_rate must be a number, got {max_throttle_rate!r}")
    if not 0 < max_throttle_rate < 1:
        raise SizingError(f"max_throttle_rate must be > 0 and < 1, got {max_throttle_rate}")


def recommended_channel_count(
    peak_sessions_per_sec: float,
    *,
    calls_per_session: int = DEFAULT_CALLS_PER_SESSION,
    tps_per_channel: float = DEFAULT_TPS_PER_CHANNEL,
    headroom: float = DEFAULT_HEADROOM,
    max_throttle_rate: float = DEFAULT_MAX_THROTTLE_RATE,
) -> int:
    """Return the channels that keep uncoordinated callers' throttles at the peak under a target.

    The larger of :func:`channel_count` (the minimum, with its headroom) and the fewest channels
    whose :func:`predicted_throttle_rate` at ``peak_sessions_per_sec x calls_per_session`` is at
    most ``max_throttle_rate x MODEL_MARGIN``. Found by doubling and bisection (the rate falls as
    channels are added), so 10,000 sessions/s takes milliseconds.

    Args:
        peak_sessions_per_sec: Peak rate of new sessions per second (> 0).
        calls_per_session: ``GetIceServerConfig`` calls one session makes (>= 1).
        tps_per_channel: The per-channel limit (> 0); KVS allows 5.
        headroom: Extra capacity of the minimum as a fraction (>= 0).
        max_throttle_rate: Throttles per call accepted at the peak (0 < x < 1), e.g. 0.01.

    Raises:
        SizingError: An argument is out of range or not a number.
    """
    minimum = channel_count(
        peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
    )
    _check_throttle_target(max_throttle_rate)
    calls_per_sec = peak_sessions_per_sec * calls_per_session

    def meets_target(channels: int) -> bool:
        predicted = predicted_throttle_rate(
            calls_per_sec, channels, calls_per_session=calls_per_session, tps_per_channel=tps_per_channel
        )
        return predicted <= max_throttle_rate * MODEL_MARGIN

    if meets_target(minimum):
        return minimum
    too_few, enough = minimum, 2 * minimum
    while not meets_target(enough):
        too_few, enough = enough, 2 * enough
    while enough - too_few > 1:
        middle = (too_few + enough) // 2
        if meets_target(middle):
            enough = middle
        else:
            too_few = middle
    return enough


def channel_quota(region: str) -> int:
    """Return the signaling channels allowed per account in ``region``."""
    return HIGH_CHANNEL_QUOTA if region in HIGH_QUOTA_REGIONS else DEFAULT_CHANNEL_QUOTA


@dataclass(frozen=True)
class SizingReport:
    """Everything the sizing CLI prints, in one value (its ``--json`` form is ``asdict``).

    Attributes:
        recommended_channels: The pool to deploy (:func:`recommended_channel_count`).
        minimum_channels: The capacity arithmetic alone (:func:`channel_count`): enough only for
            one scheduler that placed every call perfectly.
        peak_sessions_per_sec: The peak the pool is sized for.
        calls_per_session: ``GetIceServerConfig`` calls per session.
        tps_per_channel: The per-channel limit.
        headroom: Extra capacity of the minimum, as a fraction.
        calls_per_sec_at_peak: ``GetIceServerConfig`` calls per second at the peak.
        minimum_capacity_calls_per_sec: What the minimum pool admits per second.
        max_throttle_rate: The target: throttles per call accepted at the peak.
        predicted_throttle_rate: Throttles per call at the peak with the recommended pool, for
            callers that do not coordinate.
        predicted_throttle_rate_at_minimum: The same with the minimum pool; ``None`` when the peak
            fills the minimum's capacity exactly (no headroom), where throttles grow without bound.
        region: AWS region, for the channel quota.
        channel_quota: Signaling channels allowed per account in the region.
        channel_cost_usd_per_month: What the recommended pool costs a month.
        turn_minutes_per_month: Relayed TURN minutes a month, when sessions and length are given.
        turn_cost_usd_per_month: What those minutes cost.
        total_cost_usd_per_month: Channels plus TURN minutes.
        warnings: Things to act on, such as a pool beyond the channel quota.
    """

    recommended_channels: int
    minimum_channels: int
    peak_sessions_per_sec: float
    calls_per_session: int
    tps_per_channel: float
    headroom: float
    calls_per_sec_at_peak: float
    minimum_capacity_calls_per_sec: float
    max_throttle_rate: float
    predicted_throttle_rate: float
    predicted_throttle_rate_at_minimum: float | None
    region: str
    channel_quota: int
    channel_cost_usd_per_month: float
    turn_minutes_per_month: float | None
    turn_cost_usd_per_month: float | None
    total_cost_usd_per_month: float
    warnings: list[str]


def size_pool(
    peak_sessions_per_sec: float,
    *,
    calls_per_session: int = DEFAULT_CALLS_PER_SESSION,
    tps_per_channel: float = DEFAULT_TPS_PER_CHANNEL,
    headroom: float = DEFAULT_HEADROOM,
    max_throttle_rate: float = DEFAULT_MAX_THROTTLE_RATE,
    monthly_sessions: float | None = None,
    avg_minutes: float | None = None,
    region: str = "us-east-1",
) -> SizingReport:
    """Size the pool for a fleet of uncoordinated callers and price it.

    Raises:
        SizingError: An argument is out of range.
    """
    minimum = channel_count(
        peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
    )
    recommended = recommended_channel_count(
        peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
        max_throttle_rate=max_throttle_rate,
    )
    for name, value in (("monthly_sessions", monthly_sessions), ("avg_minutes", avg_minutes)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SizingError(f"{name} must be a finite number >= 0, got {value}")
    calls_per_sec = peak_sessions_per_sec * calls_per_session

    def predicted(channels: int) -> float:
        return predicted_throttle_rate(
            calls_per_sec, channels, calls_per_session=calls_per_session, tps_per_channel=tps_per_channel
        )

    at_minimum = predicted(minimum)
    quota = channel_quota(region)
    channel_cost = recommended * CHANNEL_MONTH_USD
    turn_minutes: float | None = None
    turn_cost: float | None = None
    if monthly_sessions is not None and avg_minutes is not None:
        turn_minutes = monthly_sessions * avg_minutes * RELAYED_PEERS_PER_SESSION
        turn_cost = turn_minutes / 1000 * TURN_USD_PER_1000_MINUTES
    warnings: list[str] = []
    if recommended > quota:
        warnings.append(
            f"{recommended} channels exceed the default quota of {quota} signaling channels per account "
            f"in {region}: request a quota increase or spread the pool over regions or accounts"
        )
    return SizingReport(
        recommended_channels=recommended,
        minimum_channels=minimum,
        peak_sessions_per_sec=peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
        calls_per_sec_at_peak=calls_per_sec,
        minimum_capacity_calls_per_sec=minimum * tps_per_channel,
        max_throttle_rate=max_throttle_rate,
        predicted_throttle_rate=predicted(recommended),
        predicted_throttle_rate_at_minimum=None if math.isinf(at_minimum) else at_minimum,
        region=region,
        channel_quota=quota,
        channel_cost_usd_per_month=round(channel_cost, 4),
        turn_minutes_per_month=turn_minutes,
        turn_cost_usd_per_month=None if turn_cost is None else round(turn_cost, 2),
        total_cost_usd_per_month=round(channel_cost + (turn_cost or 0.0), 2),
        warnings=warnings,
    )


def _share_of_calls(rate: float | None) -> str:
    """Say a throttle rate the way a person would: a percentage of calls, or throttles per call."""
    if rate is None or math.isinf(rate):
        return "without bound (the peak fills the pool's capacity)"
    if rate >= 0.1:
        return f"{rate:.2g} times per call"
    if rate < 1e-4:
        return "under 0.01% of calls"
    return f"~{rate * 100:.2g}% of calls"


def _throttle_label(rate: float | None) -> str:
    """Label a throttle rate on its own: a share of calls, or throttles per call when large."""
    if rate is None or math.isinf(rate):
        return "throttles without bound"
    if rate >= 0.1:
        return f"{rate:.2g} throttles per call"
    return f"{_share_of_calls(rate).removeprefix('~')} throttled"


def format_report(report: SizingReport) -> str:
    """Render a report for a person: the answer first, then why, then the cost."""
    r = report
    if r.recommended_channels > r.minimum_channels:
        why_more = (
            f"    with the minimum {r.minimum_channels} they would be throttled"
            f" {_share_of_calls(r.predicted_throttle_rate_at_minimum)}; each throttle is one more round trip"
        )
    else:
        why_more = "    the minimum already meets the target"
    lines = [
        f"channels: {r.recommended_channels} recommended (minimum {r.minimum_channels})",
        "",
        f"  minimum {r.minimum_channels}: the pool's capacity just covers the peak"
        " if one scheduler placed every call perfectly",
        f"    ceil({r.peak_sessions_per_sec:g} sessions/s x {r.calls_per_session} calls/session"
        f" x (1 + {r.headroom:g} headroom) / {r.tps_per_channel:g} TPS per channel) = {r.minimum_channels}",
        f"  recommended {r.recommended_channels}: callers that do not coordinate (the broker's Lambda instances)"
        f" are throttled on {_share_of_calls(r.predicted_throttle_rate)} at the peak"
        f" of {r.calls_per_sec_at_peak:g} calls/s (target {r.max_throttle_rate * 100:g}%)",
        why_more,
        "",
        f"monthly cost (us-east-1 prices): ${r.total_cost_usd_per_month:,.2f}",
        f"  channels: {r.recommended_channels} x ${CHANNEL_MONTH_USD} = ${r.channel_cost_usd_per_month:,.2f}",
    ]
    if r.turn_minutes_per_month is not None and r.turn_cost_usd_per_month is not None:
        lines.append(
            f"  TURN: {r.turn_minutes_per_month:,.0f} relayed minutes ({RELAYED_PEERS_PER_SESSION} peers"
            f" per session) x ${TURN_USD_PER_1000_MINUTES}/1000 = ${r.turn_cost_usd_per_month:,.2f}"
        )
    else:
        lines.append("  TURN: pass --monthly-sessions and --avg-minutes to price relayed minutes")
    lines.extend(f"warning: {w}" for w in r.warnings)
    return "\n".join(lines)


def plot_throttle_curve(report: SizingReport, path: str | Path) -> None:
    """Draw predicted throttles per call against pool size, with both counts and the target marked.

    Raises:
        ImportError: matplotlib is not installed (it is a development dependency only).
        OSError: ``path`` cannot be written.
        ValueError: matplotlib knows no image format for ``path``'s extension (the CLI allows
            only :data:`PLOT_SUFFIXES`).
    """
    import matplotlib  # noqa: PLC0415 - only --plot needs it, and it is slow to import

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    r = report
    calls, tps = r.calls_per_sec_at_peak, r.tps_per_channel
    # From the minimum, or the smallest pool that can carry the peak at all when the minimum is full.
    first = max(r.minimum_channels, math.floor(calls / tps) + 1)
    last = max(2 * r.recommended_channels, r.recommended_channels + 6)
    step = max(1, (last - first) // 300)
    sizes = list(range(first, last + 1, step))
    rates = [
        predicted_throttle_rate(calls, n, calls_per_session=r.calls_per_session, tps_per_channel=tps) for n in sizes
    ]
    label_box = {"facecolor": "white", "alpha": 0.85, "edgecolor": "none"}

    figure, axes = pyplot.subplots(figsize=(8, 4.8), dpi=120)
    axes.plot(sizes, rates, color="#1f77b4", linewidth=2, label="callers that do not coordinate (random channel)")
    axes.set_yscale("log")
    axes.axhline(
        r.max_throttle_rate,
        color="#555555",
        linestyle="--",
        linewidth=1,
        label=f"target: {r.max_throttle_rate * 100:g}% of calls throttled",
    )
    at_minimum = r.predicted_throttle_rate_at_minimum
    axes.axvline(r.minimum_channels, color="#d62728", linestyle=":", linewidth=1.5)
    if at_minimum is not None:
        axes.plot([r.minimum_channels], [at_minimum], "o", color="#d62728", markersize=8)
    label = f"minimum {r.minimum_channels}\n(one perfect scheduler):\n{_throttle_label(at_minimum)}"
    if at_minimum is not None:
        # Right of the point, where the falling curve has left room above it.
        axes.annotate(
            label,
            xy=(r.minimum_channels, at_minimum),
            xytext=(r.minimum_channels + 0.1 * (last - r.minimum_channels), at_minimum),
            arrowprops={"arrowstyle": "->", "color": "#d62728"},
            color="#d62728",
            va="top",
            bbox=label_box,
        )
    else:
        # No point to mark: the curve starts further right, at its top, so the label goes below.
        axes.annotate(
            label,
            xy=(r.minimum_channels, min(rates)),
            xytext=(6, 0),
            textcoords="offset points",
            color="#d62728",
            va="bottom",
            bbox=label_box,
        )
    axes.axvline(r.recommended_channels, color="#2ca02c", linestyle=":", linewidth=1.5)
    axes.plot([r.recommended_channels], [r.predicted_throttle_rate], "o", color="#2ca02c", markersize=8)
    axes.annotate(
        f"recommended {r.recommended_channels}:\n{_throttle_label(r.predicted_throttle_rate)}\n"
        f"${r.channel_cost_usd_per_month:,.2f} a month",
        xy=(r.recommended_channels, r.predicted_throttle_rate),
        xytext=(8, 4),
        textcoords="offset points",
        color="#2ca02c",
        va="bottom",
        bbox=label_box,
    )
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value * 100:g}%"))
    axes.set_xlabel("channels in the pool")
    axes.set_ylabel("throttles per call (each one a retry\non another channel)")
    axes.set_title(
        f"KVS TURN pool for {r.peak_sessions_per_sec:g} sessions/s at peak"
        f" ({calls:g} GetIceServerConfig calls/s, {tps:g} per channel)",
        fontsize=10,
    )
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper right", fontsize=9)
    figure.tight_layout()
    try:
        figure.savefig(path)
    finally:
        pyplot.close(figure)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m broker.sizing",
        description=(
            "Size the pool of KVS signaling channels that mint TURN credentials. KVS allows "
            "5 GetIceServerConfig calls per second per channel. The minimum, "
            "ceil(peak x calls x (1 + headroom) / tps), suffices only for one perfect scheduler; "
            "the recommended count keeps callers that do not coordinate (the broker's Lambda instances) "
            "under --max-throttle-rate. Channels cost $0.03 a month: size generously."
        ),
    )
    parser.add_argument(
        "--peak-sessions-per-sec",
        type=float,
        required=True,
        metavar="X",
        help="peak rate of new sessions per second",
    )
    parser.add_argument(
        "--calls-per-session",
        type=int,
        default=DEFAULT_CALLS_PER_SESSION,
        metavar="N",
        help="GetIceServerConfig calls per session, within one second of each other (default %(default)s:"
        " browser + agent); a session's calls that land on one channel count as a clump",
    )
    parser.add_argument(
        "--tps-per-channel",
        type=float,
        default=DEFAULT_TPS_PER_CHANNEL,
        metavar="TPS",
        help="per-channel GetIceServerConfig limit (default %(default)s)",
    )
    parser.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM,
        metavar="FRACTION",
        help="spare capacity of the minimum as a fraction, 0.25 = 25%% (default %(default)s)",
    )
    parser.add_argument(
        "--max-throttle-rate",
        type=float,
        default=DEFAULT_MAX_THROTTLE_RATE,
        metavar="FRACTION",
        help="throttles per call accepted at the peak, between 0 and 1 (default %(default)s: 1 in 100)",
    )
    parser.add_argument("--monthly-sessions", type=float, metavar="N", help="sessions per month, to price TURN minutes")
    parser.add_argument("--avg-minutes", type=float, metavar="M", help="average session length in minutes")
    parser.add_argument("--region", default="us-east-1", help="AWS region, for the channel quota (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw throttles per call against pool size into FILE.png (needs matplotlib)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sizing CLI; returns the exit code (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.monthly_sessions is None) != (args.avg_minutes is None):
        parser.exit(2, "error: --monthly-sessions and --avg-minutes go together\n")
    if args.plot is not None:
        # Checked before matplotlib's slow import, so a typo fails at once.
        if args.plot.suffix.lower() not in PLOT_SUFFIXES:
            parser.exit(2, f"error: --plot {args.plot}: the file must end in {', '.join(PLOT_SUFFIXES)}\n")
        if not args.plot.parent.is_dir():
            parser.exit(2, f"error: --plot {args.plot}: there is no directory {args.plot.parent}\n")
    try:
        report = size_pool(
            args.peak_sessions_per_sec,
            calls_per_session=args.calls_per_session,
            tps_per_channel=args.tps_per_channel,
            headroom=args.headroom,
            max_throttle_rate=args.max_throttle_rate,
            monthly_sessions=args.monthly_sessions,
            avg_minutes=args.avg_minutes,
            region=args.region,
        )
    except SizingError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.plot is not None:
        try:
            plot_throttle_curve(report, args.plot)
        except ImportError:
            parser.exit(2, "error: --plot needs matplotlib: .venv/bin/pip install -r requirements-dev.txt\n")
        except OSError as exc:
            parser.exit(2, f"error: cannot write the plot to {args.plot}: {exc}\n")
    if args.json:
        print(json.dumps(asdict(report), indent=2, allow_nan=False))
    else:
        print(format_report(report))
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

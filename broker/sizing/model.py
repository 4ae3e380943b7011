"""The fleet model: the minimum pool, the recommended pool, and the throttles it predicts.

The package docstring (:mod:`broker.sizing`) explains the model and how it was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

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

"""Pool sizing: how many KVS signaling channels a peak session rate needs, and what they cost.

``GetIceServerConfig`` is limited to 5 calls per second per channel. Two numbers come out:

- The **minimum**, :func:`channel_count`: ``ceil(peak_sessions_per_sec * calls_per_session *
  (1 + headroom) / tps_per_channel)``. It is enough only if one scheduler placed every call
  perfectly, which the fleet never does: every broker Lambda instance limits only its own calls,
  from a limiter that has seen almost nothing, so calls land on the channels effectively at random.
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

from broker.sizing.cli import main
from broker.sizing.model import (
    CHANNEL_MONTH_USD,
    DEFAULT_CALLS_PER_SESSION,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_THROTTLE_RATE,
    DEFAULT_TPS_PER_CHANNEL,
    MODEL_MARGIN,
    channel_count,
    erlang_b,
    predicted_throttle_rate,
    recommended_channel_count,
    throttle_probability,
)
from broker.sizing.report import SizingReport, channel_quota, format_report, size_pool

__all__ = [
    "CHANNEL_MONTH_USD",
    "DEFAULT_CALLS_PER_SESSION",
    "DEFAULT_HEADROOM",
    "DEFAULT_MAX_THROTTLE_RATE",
    "DEFAULT_TPS_PER_CHANNEL",
    "MODEL_MARGIN",
    "SizingReport",
    "channel_count",
    "channel_quota",
    "erlang_b",
    "format_report",
    "main",
    "predicted_throttle_rate",
    "recommended_channel_count",
    "size_pool",
    "throttle_probability",
]

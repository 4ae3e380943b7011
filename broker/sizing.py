"""Pool sizing: how many KVS signaling channels a peak session rate needs, and what they cost.

``GetIceServerConfig`` is limited to 5 calls per second per channel, so a pool must hold
``ceil(peak_sessions_per_sec * calls_per_session * (1 + headroom) / tps_per_channel)`` channels.
The same :func:`channel_count` sizes the pool in the CDK app and in this CLI::

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

from broker.exceptions import SizingError

DEFAULT_CALLS_PER_SESSION = 2
"""The browser's and the agent's credentials: two ``GetIceServerConfig`` calls per session."""
DEFAULT_TPS_PER_CHANNEL = 5.0
DEFAULT_HEADROOM = 0.25
OVERRUN_TARGET = 1e-3
"""Acceptable probability that a Poisson burst at the peak rate overruns the pool in a second."""
CHANNEL_MONTH_USD = 0.03
TURN_USD_PER_1000_MINUTES = 0.12
HIGH_QUOTA_REGIONS = frozenset({"us-east-1", "us-west-2"})
HIGH_CHANNEL_QUOTA = 10_000
DEFAULT_CHANNEL_QUOTA = 5_000
RELAYED_PEERS_PER_SESSION = 2
"""Both the browser and the agent stream through TURN, so a session minute is two TURN minutes."""


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


def poisson_overrun_probability(mean_calls_per_sec: float, capacity_per_sec: float) -> float:
    """Return P(N > capacity) for N ~ Poisson(mean): a one-second burst that overruns the pool."""
    if mean_calls_per_sec <= 0:
        return 0.0
    limit = math.floor(capacity_per_sec)
    log_mean = math.log(mean_calls_per_sec)

    def log_pmf(k: int) -> float:
        return k * log_mean - mean_calls_per_sec - math.lgamma(k + 1)

    if limit < mean_calls_per_sec:
        # The tail is large: 1 - CDF loses nothing to cancellation here.
        cdf = math.fsum(math.exp(log_pmf(k)) for k in range(limit + 1))
        return max(0.0, 1.0 - cdf)
    # Sum the tail itself: terms shrink geometrically past the mean, so stop when they vanish.
    total = 0.0
    k = limit + 1
    while True:
        term = math.exp(log_pmf(k))
        total += term
        if term < total * 1e-17 or term == 0.0:
            return total
        k += 1


def channels_for_overrun_target(
    mean_calls_per_sec: float, tps_per_channel: float, target: float = OVERRUN_TARGET
) -> int:
    """Return the fewest channels whose one-second overrun probability is below ``target``."""
    channels = max(1, math.ceil(mean_calls_per_sec / tps_per_channel))
    while poisson_overrun_probability(mean_calls_per_sec, channels * tps_per_channel) >= target:
        channels += 1
    return channels


def channel_quota(region: str) -> int:
    """Return the signaling channels allowed per account in ``region``."""
    return HIGH_CHANNEL_QUOTA if region in HIGH_QUOTA_REGIONS else DEFAULT_CHANNEL_QUOTA


@dataclass(frozen=True)
class SizingReport:
    """Everything the sizing CLI prints, in one value (its ``--json`` form is ``asdict``)."""

    channels: int
    peak_sessions_per_sec: float
    calls_per_session: int
    tps_per_channel: float
    headroom: float
    calls_per_sec_at_peak: float
    pool_capacity_calls_per_sec: float
    burst_overrun_probability: float
    channels_for_overrun_target: int
    overrun_target: float
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
    monthly_sessions: float | None = None,
    avg_minutes: float | None = None,
    region: str = "us-east-1",
) -> SizingReport:
    """Size the pool and price it.

    Raises:
        SizingError: An argument is out of range.
    """
    channels = channel_count(
        peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
    )
    for name, value in (("monthly_sessions", monthly_sessions), ("avg_minutes", avg_minutes)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SizingError(f"{name} must be a finite number >= 0, got {value}")
    mean_calls = peak_sessions_per_sec * calls_per_session
    capacity = channels * tps_per_channel
    overrun = poisson_overrun_probability(mean_calls, capacity)
    safe_channels = channels_for_overrun_target(mean_calls, tps_per_channel)
    quota = channel_quota(region)
    channel_cost = channels * CHANNEL_MONTH_USD
    turn_minutes: float | None = None
    turn_cost: float | None = None
    if monthly_sessions is not None and avg_minutes is not None:
        turn_minutes = monthly_sessions * avg_minutes * RELAYED_PEERS_PER_SESSION
        turn_cost = turn_minutes / 1000 * TURN_USD_PER_1000_MINUTES
    warnings: list[str] = []
    if channels > quota:
        warnings.append(
            f"{channels} channels exceed the default quota of {quota} signaling channels per account "
            f"in {region}: request a quota increase or spread the pool over regions or accounts"
        )
    if safe_channels > channels:
        warnings.append(
            f"a Poisson burst at the peak rate overruns {channels} channels in a given second with "
            f"probability {overrun:.2g}; {safe_channels} channels bring it under {OVERRUN_TARGET:g}"
        )
    return SizingReport(
        channels=channels,
        peak_sessions_per_sec=peak_sessions_per_sec,
        calls_per_session=calls_per_session,
        tps_per_channel=tps_per_channel,
        headroom=headroom,
        calls_per_sec_at_peak=mean_calls,
        pool_capacity_calls_per_sec=capacity,
        burst_overrun_probability=overrun,
        channels_for_overrun_target=safe_channels,
        overrun_target=OVERRUN_TARGET,
        region=region,
        channel_quota=quota,
        channel_cost_usd_per_month=round(channel_cost, 4),
        turn_minutes_per_month=turn_minutes,
        turn_cost_usd_per_month=None if turn_cost is None else round(turn_cost, 2),
        total_cost_usd_per_month=round(channel_cost + (turn_cost or 0.0), 2),
        warnings=warnings,
    )


def format_report(report: SizingReport) -> str:
    """Render a report for a person: the answer first, then the arithmetic behind it."""
    r = report
    lines = [
        f"channels: {r.channels}",
        "",
        f"  ceil({r.peak_sessions_per_sec:g} sessions/s x {r.calls_per_session} calls/session"
        f" x (1 + {r.headroom:g} headroom) / {r.tps_per_channel:g} TPS per channel) = {r.channels}",
        f"  peak load {r.calls_per_sec_at_peak:g} GetIceServerConfig calls/s;"
        f" pool capacity {r.pool_capacity_calls_per_sec:g} calls/s",
        f"  P(a Poisson burst overruns the pool in a given second) = {r.burst_overrun_probability:.3g}"
        f" ({r.channels_for_overrun_target} channels bring it under {r.overrun_target:g})",
        "",
        f"monthly cost (us-east-1 prices): ${r.total_cost_usd_per_month:,.2f}",
        f"  channels: {r.channels} x ${CHANNEL_MONTH_USD} = ${r.channel_cost_usd_per_month:,.2f}",
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m broker.sizing",
        description=(
            "Size the pool of KVS signaling channels that mint TURN credentials. KVS allows "
            "5 GetIceServerConfig calls per second per channel; the pool needs "
            "ceil(peak x calls x (1 + headroom) / tps) channels. Channels cost $0.03 a month: "
            "size generously."
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
        help="GetIceServerConfig calls per session (default %(default)s: browser + agent)",
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
        help="spare capacity as a fraction, 0.25 = 25%% (default %(default)s)",
    )
    parser.add_argument("--monthly-sessions", type=float, metavar="N", help="sessions per month, to price TURN minutes")
    parser.add_argument("--avg-minutes", type=float, metavar="M", help="average session length in minutes")
    parser.add_argument("--region", default="us-east-1", help="AWS region, for the channel quota (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sizing CLI; returns the exit code (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.monthly_sessions is None) != (args.avg_minutes is None):
        parser.exit(2, "error: --monthly-sessions and --avg-minutes go together\n")
    try:
        report = size_pool(
            args.peak_sessions_per_sec,
            calls_per_session=args.calls_per_session,
            tps_per_channel=args.tps_per_channel,
            headroom=args.headroom,
            monthly_sessions=args.monthly_sessions,
            avg_minutes=args.avg_minutes,
            region=args.region,
        )
    except SizingError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

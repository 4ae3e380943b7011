"""The sizing report: both pool sizes, their predicted throttles and what the pool costs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from broker.exceptions import SizingError
from broker.sizing.model import (
    CHANNEL_MONTH_USD,
    DEFAULT_CALLS_PER_SESSION,
    DEFAULT_CHANNEL_QUOTA,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_THROTTLE_RATE,
    DEFAULT_TPS_PER_CHANNEL,
    HIGH_CHANNEL_QUOTA,
    HIGH_QUOTA_REGIONS,
    RELAYED_PEERS_PER_SESSION,
    TURN_USD_PER_1000_MINUTES,
    channel_count,
    predicted_throttle_rate,
    recommended_channel_count,
)


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


def throttle_label(rate: float | None) -> str:
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

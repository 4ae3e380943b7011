"""The sizing plot: predicted throttles per call against pool size (matplotlib, imported on use)."""

from __future__ import annotations

import math
from pathlib import Path

from broker.sizing.model import predicted_throttle_rate
from broker.sizing.report import SizingReport, throttle_label


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
    label = f"minimum {r.minimum_channels}\n(one perfect scheduler):\n{throttle_label(at_minimum)}"
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
        f"recommended {r.recommended_channels}:\n{throttle_label(r.predicted_throttle_rate)}\n"
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

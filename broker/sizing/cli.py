"""``python -m broker.sizing``: the sizing report for a person, as JSON, or as a plot."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from broker.exceptions import SizingError
from broker.sizing.model import (
    DEFAULT_CALLS_PER_SESSION,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_THROTTLE_RATE,
    DEFAULT_TPS_PER_CHANNEL,
    PLOT_SUFFIXES,
)
from broker.sizing.plot import plot_throttle_curve
from broker.sizing.report import format_report, size_pool


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

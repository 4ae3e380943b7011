"""Benchmark: WebRTC (through the TURN relay) against the WebSocket, on a clean and an impaired network.

For each network profile (:data:`PROFILES`: clean loopback; 40 ms +- 20 ms one-way delay with 2%
loss; the same with 5% loss; optionally 2% with packets reordered) it makes a network namespace of
its own (:mod:`bench.impaired_network`) whose impairment applies to the caller's traffic only, as on
a caller's access network, runs the whole
local system inside it (``python -m local``, as root: coturn -> agent and broker <-> emulator stay
clean), and runs the caller (:mod:`bench.transport_calls`, as an unprivileged uid) making the same
calls over each transport in turn. Per transport and profile it reports whether calls stayed up,
connect and first audio, voice to voice, how late the agent's audio arrived (``audio_delay_ms``:
each chunk against the best-placed one) and the share of 20 ms frames that came too late for a
100 ms playout buffer or never (``late_or_lost_share``). ``--plot`` draws them.

    sudo .venv/bin/python -m bench.transports --json --plot docs/transports.png

Needs root (network namespaces), ``make system-deps`` (coturn, espeak-ng, iproute2, nftables,
iptables). Takes about 6 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from bench.emulator_process import ROOT
from bench.impaired_network import ImpairedNetwork, ImpairedNetworkError, Profile
from bench.transport_calls import PLAYOUT_BUDGET_MS, TRANSPORTS

PROFILES: Final = {
    "clean": Profile(),
    "loss2": Profile(delay_ms=40, jitter_ms=20, loss_percent=2, reorder=False),
    "loss5": Profile(delay_ms=40, jitter_ms=20, loss_percent=5, reorder=False),
    "loss2_reordering": Profile(delay_ms=40, jitter_ms=20, loss_percent=2),
}
"""The networks compared. Each flow keeps its order (jitter from queueing, as on most access networks),
except in ``loss2_reordering``, where every packet's delay is drawn on its own (netem's way), so 20 ms
audio packets overtake one another about one time in eight."""
DEFAULT_PROFILES: Final = ("clean", "loss2", "loss5")
URL: Final = "http://127.0.0.1:7860"
"""The broker API inside each namespace (each namespace has its own loopback, so the defaults are free)."""
START_TIMEOUT: Final = 120.0
LABELS: Final = {
    "clean": "clean",
    "loss2": "40±20 ms\n2% loss",
    "loss5": "40±20 ms\n5% loss",
    "loss2_reordering": "40±20 ms, 2%\nreordered",
}


@contextmanager
def local_system_in(net: ImpairedNetwork) -> Iterator[None]:
    """Run ``python -m local`` (default ports) inside ``net`` as root until the block ends."""
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as logs:
        process = subprocess.Popen(
            net.command([sys.executable, "-m", "local", "--channels=4", f"--log-dir={logs}"]),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT
            for line in process.stdout or ():
                if line.startswith("Ctrl-C") or time.monotonic() > deadline:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"python -m local did not start: {process.stderr.read() if process.stderr else ''}")
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def run_profile(name: str, profile: Profile, calls: int) -> dict[str, Any]:
    """The callers' report on one network profile."""
    seconds = START_TIMEOUT + 60 + calls * len(TRANSPORTS) * 60
    with ImpairedNetwork(profile, seconds=seconds, scope="caller") as net, local_system_in(net):
        caller = subprocess.run(
            net.caller_command([sys.executable, "-m", "bench.transport_calls", f"--url={URL}", f"--calls={calls}",
                                "--json"]),
            cwd=ROOT, capture_output=True, text=True, timeout=net.remaining(), check=False,
        )  # fmt: skip
    if caller.returncode != 0:
        raise RuntimeError(f"the caller failed on {name}: {caller.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(caller.stdout)["transports"]
    return {"network": profile.describe(), **report}


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Three panels, two bars (the transports) per network: voice to voice, audio delay, audio late or lost."""
    import matplotlib  # noqa: PLC0415 - only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    networks = list(report["profiles"])
    colours = {"webrtc": "#2563eb", "websocket": "#ea580c"}
    labels = {"webrtc": "WebRTC (TURN relay)", "websocket": "WebSocket"}
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    width = 0.38
    titles = (
        "Voice to voice (ms): bar p50, line p95",
        "Agent audio later than its best chunk (ms):\nbar p95, line max",
        f"Agent audio never heard (solid) or later than\n"
        f"a {PLAYOUT_BUDGET_MS:.0f} ms playout buffer (hatched), % of 20 ms frames",
    )
    for panel, (axis, title) in enumerate(zip(axes, titles, strict=True)):
        for offset, transport in enumerate(TRANSPORTS):
            xs = [index + (offset - 0.5) * width for index in range(len(networks))]
            stats = [report["profiles"][network].get(transport, {}) for network in networks]
            colour = colours[transport]
            if panel == 2:
                lost = [100 * (one.get("lost_share") or 0.0) for one in stats]
                late = [100 * (one.get("late_share") or 0.0) for one in stats]
                axis.bar(xs, lost, width, color=colour, label=labels[transport])
                axis.bar(xs, late, width, bottom=lost, color="white", edgecolor=colour, hatch="///")
                tops = [a + b for a, b in zip(lost, late, strict=True)]
            else:
                key, low, high = ("voice_to_voice_ms", "p50", "p95") if panel == 0 else ("audio_delay_ms", "p95", "max")
                values = [one.get(key, {}).get(low, 0.0) for one in stats]
                tops = [one.get(key, {}).get(high, 0.0) for one in stats]
                axis.bar(xs, values, width, color=colour, label=labels[transport])
                axis.vlines(xs, values, tops, colors="black", linewidth=1)
            for x, top, one in zip(xs, tops, stats, strict=True):
                if one.get("failed"):
                    axis.annotate(f"{one['failed']} of {one['calls']}\nfailed", (x, top), ha="center", va="bottom",
                                  fontsize=7, color="#b91c1c")  # fmt: skip
        axis.set_title(title, fontsize=9.5)
        axis.set_xticks(range(len(networks)))
        axis.set_xticklabels([LABELS.get(network, network) for network in networks], fontsize=8)
        axis.grid(axis="y", alpha=0.3)
        axis.margins(y=0.15)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle(
        f"The caller's network, impaired for the caller only; {report['calls']} calls per transport and network",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.transports", description=__doc__.split("\n\n")[0],
        epilog="Needs root and make system-deps. Takes about 6 minutes with the defaults.",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON (the only format)")
    parser.add_argument("--calls", type=int, default=5, help="calls per transport and network (%(default)s)")
    parser.add_argument(
        "--profiles",
        default=",".join(DEFAULT_PROFILES),
        help=f"comma-separated, of {', '.join(PROFILES)} (%(default)s)",
    )
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the comparison into FILE.png")
    parser.add_argument(
        "--from-json", type=Path, metavar="REPORT.json", help="draw --plot from a saved report instead of running"
    )
    args = parser.parse_args(argv)
    profiles = [name.strip() for name in args.profiles.split(",") if name.strip()]
    if args.calls < 1 or not profiles or set(profiles) - set(PROFILES):
        parser.exit(2, f"error: --calls must be >= 1 and --profiles of {', '.join(PROFILES)}\n")
    if args.plot is not None and args.plot.suffix != ".png":
        parser.exit(2, "error: --plot takes a .png file\n")
    if args.from_json is not None:
        if args.plot is None:
            parser.exit(2, "error: --from-json needs --plot\n")
        plot(json.loads(args.from_json.read_text()), args.plot)
        return 0
    started = time.monotonic()
    try:
        results = {name: run_profile(name, PROFILES[name], args.calls) for name in profiles}
    except ImpairedNetworkError as exc:
        parser.exit(2, f"error: {exc}\n")
    report = {"benchmark": "transports", "calls": args.calls, "playout_budget_ms": PLAYOUT_BUDGET_MS,
              "profiles": results, "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    print(json.dumps(report, indent=2), flush=True)
    if args.plot is not None:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m local.kvs_emulator --port 4567 --channels 4``.

Prints one JSON line (``{"url", "channel_arns", "region", "account_id"}``) to stdout once it is
serving, logs to stderr, and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from .config import DEFAULT_TURN_SECRET, DEFAULT_TURN_URIS, MAX_TTL_SECONDS, MIN_TTL_SECONDS, EmulatorConfig
from .exceptions import ApiError, ConfigError
from .server import KvsEmulator

logger = logging.getLogger("local.kvs_emulator")
PROG = "python -m local.kvs_emulator"


class _OneLineParser(argparse.ArgumentParser):
    """Argument parser whose errors are one line on stderr (exit status 2), not usage plus error."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _bounded_int(low: int, high: int) -> type[int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    parse.__name__ = "integer"
    return parse  # type: ignore[return-value]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = _OneLineParser(
        prog=PROG,
        description=(
            "Emulate Kinesis Video Streams signaling (channels, endpoints, GetIceServerConfig) on "
            "loopback for boto3 clients. Point them at it with "
            "AWS_ENDPOINT_URL_KINESIS_VIDEO=<url> and any dummy credentials."
        ),
        epilog=(
            "Prints one JSON line {url, channel_arns, region, account_id} on stdout when ready; "
            "logs go to stderr. Admin endpoints: GET /_emulator/{health,stats,calls,channels}, "
            "POST /_emulator/{faults,latency,reset}. Stop with Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_bounded_int(0, 65_535), default=0, help="TCP port; 0 picks a free one (default: 0)"
    )
    parser.add_argument(
        "--channels",
        type=_bounded_int(0, 10_000),
        default=2,
        help="signaling channels to create at start (default: %(default)s)",
    )
    parser.add_argument(
        "--channel-prefix", default="turn-pool", help="channel names are PREFIX-0, PREFIX-1, ... (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-ms", type=_non_negative_float, default=0.0, help="delay added to every request (default: 0)"
    )
    parser.add_argument(
        "--ttl",
        type=_bounded_int(MIN_TTL_SECONDS, MAX_TTL_SECONDS),
        default=300,
        metavar="SECONDS",
        help="TURN credential lifetime (default: %(default)s)",
    )
    parser.add_argument(
        "--turn-uri",
        action="append",
        metavar="URI",
        help=f"TURN URI of every ICE server entry; repeat for several (default: {' '.join(DEFAULT_TURN_URIS)})",
    )
    parser.add_argument(
        "--turn-secret",
        default=DEFAULT_TURN_SECRET,
        help="coturn static-auth-secret used to sign credentials (default: %(default)s)",
    )
    parser.add_argument(
        "--servers", type=_bounded_int(1, 16), default=2, help="ICE server entries per answer (default: %(default)s)"
    )
    parser.add_argument("--region", default="us-east-1", help="region in channel ARNs (default: %(default)s)")
    parser.add_argument("--account-id", default="123456789012", help="account in channel ARNs (default: %(default)s)")
    parser.add_argument(
        "--ice-tps",
        type=_bounded_int(0, 1_000_000),
        default=5,
        help="GetIceServerConfig calls per channel per second; 0 disables the limit (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="stderr log level (default: %(default)s)",
    )
    return parser


def _config_from(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        region=args.region,
        account_id=args.account_id,
        latency_ms=args.latency_ms,
        ttl_seconds=args.ttl,
        turn_uris=tuple(args.turn_uri or DEFAULT_TURN_URIS),
        turn_secret=args.turn_secret,
        servers=args.servers,
        ice_tps_per_channel=args.ice_tps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM.

    Returns:
        0 after a clean stop, 1 when the port cannot be bound, 2 for invalid arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config_from(args)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    # Installed before binding so a signal during start-up still ends in a clean stop.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    emulator = KvsEmulator(config)
    try:
        emulator.start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        print(f"{PROG}: error: cannot listen on {config.host}:{config.port}: {reason}", file=sys.stderr)
        return 1
    try:
        arns = emulator.create_channels(args.channels, prefix=args.channel_prefix)
    except ApiError as exc:
        emulator.stop()
        parser.error(f"cannot create channels with prefix {args.channel_prefix!r}: {exc.message}")
    try:
        ready = {"url": emulator.url, "channel_arns": arns, "region": config.region, "account_id": config.account_id}
        print(json.dumps(ready), flush=True)
        logger.info("serving %d channels at %s", len(arns), emulator.url)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stopping.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

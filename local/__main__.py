"""Run the local system on 127.0.0.1: the KVS emulator and coturn sharing one TURN REST secret.

    python -m local [--kvs-port 4567] [--turn-port 3478] [--channels 2] [--log-dir DIR]

Prints how to point the broker (or any boto3 code) at it, then runs until Ctrl-C and stops
everything it started.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.coturn import Coturn, CoturnConfig, ensure_port_free
from local.exceptions import LocalStackError
from local.kvs_emulator import EmulatorConfig, KvsEmulator

logger = logging.getLogger("local")

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Run the local system on 127.0.0.1 with no AWS account: a KVS emulator that mints "
        "TURN credentials and a real coturn TURN server that accepts them. Ctrl-C stops everything.",
    )
    parser.add_argument("--kvs-port", type=int, default=4567, help="KVS emulator port (default %(default)s)")
    parser.add_argument("--turn-port", type=int, default=3478, help="coturn port, UDP and TCP (default %(default)s)")
    parser.add_argument("--channels", type=int, default=2, help="signaling channels in the pool (default %(default)s)")
    parser.add_argument("--ttl", type=int, default=300, help="TURN credential TTL in seconds (default %(default)s)")
    parser.add_argument("--log-dir", type=Path, default=Path(".local/logs"), help="where logs go (default %(default)s)")
    return parser


def environment(emulator: KvsEmulator, arns: Sequence[str]) -> dict[str, str]:
    """The environment variables that point the broker and boto3 at the local system."""
    return {
        **DUMMY_CREDENTIALS,
        "AWS_REGION": emulator.config.region,
        "AWS_DEFAULT_REGION": emulator.config.region,  # what botocore itself reads
        "AWS_ENDPOINT_URL_KINESIS_VIDEO": emulator.url,
        "TURN_CHANNEL_ARNS": ",".join(arns),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Start the parts, print how to use them, wait for Ctrl-C, stop them."""
    args = _parser().parse_args(argv)
    if not 1 <= args.channels <= 1000:
        _parser().exit(2, "error: --channels must be between 1 and 1000\n")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(args.log_dir / "local.log")],
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # One secret per run, shared by the emulator (which mints credentials) and coturn (which checks them).
    secret = secrets.token_urlsafe(24)
    coturn = Coturn(CoturnConfig(port=args.turn_port, secret=secret, log_dir=args.log_dir))
    emulator: KvsEmulator | None = None
    try:
        ensure_port_free("127.0.0.1", args.kvs_port, "the KVS emulator")
        coturn.start()
        emulator = KvsEmulator(
            EmulatorConfig(
                host="127.0.0.1",
                port=args.kvs_port,
                turn_uris=coturn.config.uris,
                turn_secret=secret,
                ttl_seconds=args.ttl,
            )
        )
        emulator.start()
        arns = emulator.create_channels(args.channels)
        env = environment(emulator, arns)
        exports = "\n".join(f"  export {name}={shlex.quote(value)}" for name, value in env.items())
        print(
            f"local system ready\n"
            f"  KVS emulator  {emulator.url}  (stats: {emulator.url}/_emulator/stats)\n"
            f"  coturn        turn:127.0.0.1:{args.turn_port} (UDP and TCP, pid {coturn.pid})\n"
            f"  logs          {args.log_dir.resolve()}\n"
            f"\nUse it from another shell:\n{exports}\n"
            f"  .venv/bin/python -m broker --show-credentials   # ICE servers from the pool\n"
            f"\nCtrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if emulator is not None:
            emulator.stop()
        coturn.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

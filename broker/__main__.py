"""Print ICE servers from the pool configured in the environment (a debugging aid).

    TURN_CHANNEL_ARNS=arn:... AWS_REGION=us-east-1 python -m broker [--count N] [--show-credentials]

Credentials are masked unless ``--show-credentials`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from broker.core import IceBroker
from broker.exceptions import BrokerError


def _masked(server: dict[str, Any]) -> dict[str, Any]:
    return {key: ("***" if key in ("username", "credential") else value) for key, value in server.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch ICE servers and print them as JSON; exit 1 with a one-line message on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m broker",
        description="Fetch ICE servers from the KVS channel pool in TURN_CHANNEL_ARNS and print them as JSON. "
        "Reads the same environment variables as the broker (TURN_CHANNEL_ARNS, AWS_REGION, "
        "TURN_CREDENTIAL_REUSE, TURN_TRANSPORTS, ...).",
    )
    parser.add_argument("--count", type=int, default=1, help="how many sets to fetch (default %(default)s)")
    parser.add_argument("--show-credentials", action="store_true", help="print usernames and passwords")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the broker does to stderr")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.exit(2, "error: --count must be >= 1\n")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        broker = IceBroker.from_env()
        for _ in range(args.count):
            ice = broker.get_ice_servers()
            servers = ice.to_dicts() if args.show_credentials else [_masked(s) for s in ice.to_dicts()]
            print(
                json.dumps(
                    {
                        "iceServers": servers,
                        "expiresAt": round(ice.expires_at, 3),
                        "channelArn": ice.channel_arn,
                        "kvsCalls": ice.kvs_calls,
                        "throttles": ice.throttles,
                        "cacheHit": ice.cache_hit,
                    }
                )
            )
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

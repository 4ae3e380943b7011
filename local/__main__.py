"""Run the whole system on 127.0.0.1 with no AWS account (``make local``).

    python -m local [--pipeline local|nova-sonic] [--port 7860] [--kvs-port 4567] [--turn-port 3478] ...

Starts the KVS emulator, coturn, the agent (offline ``local`` pipeline, or ``nova-sonic`` against the
Nova Sonic stand-in) and the broker API serving the Pipecat prebuilt UI; waits until each is healthy;
prints the URL; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.coturn import CoturnConfig
from local.exceptions import LocalStackError
from local.nova_sonic.config import NovaSonicConfig, NovaSonicConfigError
from local.stack import LocalStack, StackConfig


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP/UDP port")
    return value


def _parser() -> argparse.ArgumentParser:
    defaults = StackConfig()
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Run the whole system on 127.0.0.1 with no AWS account: a KVS emulator, a real coturn "
        "TURN server, the agent with its offline pipeline, and the broker API serving the Pipecat "
        "prebuilt UI. Open the printed URL, click Connect and speak. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=int(os.environ.get("PORT", defaults.port)),
        help="the browser's port: UI and broker API (default $PORT or %(default)s)",
    )
    parser.add_argument("--kvs-port", type=_port, default=defaults.kvs_port, help="KVS emulator (%(default)s)")
    parser.add_argument("--turn-port", type=_port, default=defaults.turn_port, help="coturn, UDP+TCP (%(default)s)")
    parser.add_argument("--agent-port", type=_port, default=defaults.agent_port, help="the agent (%(default)s)")
    parser.add_argument(
        "--agentcore-port", type=_port, default=defaults.agentcore_port,
        help="the AgentCore data-plane stand-in: invocations and the agent's WebSocket (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--pipeline",
        choices=("local", "nova-sonic"),
        default=defaults.pipeline,
        help="the agent's pipeline: local (offline Pipecat services) or nova-sonic (the production default, "
        "Pipecat's Nova Sonic service against a local stand-in of Bedrock's bidirectional stream) (%(default)s)",
    )
    parser.add_argument(
        "--nova-sonic-port",
        type=_port,
        default=defaults.nova_sonic.port,
        help="the Nova Sonic stand-in, HTTPS/2 (%(default)s; with --pipeline nova-sonic)",
    )
    parser.add_argument(
        "--nova-sonic-session-seconds",
        type=float,
        metavar="SECONDS",
        default=defaults.nova_sonic.session_limit_seconds,
        help="the stand-in ends a model session this old, as Nova Sonic does at 8 minutes (%(default)g)",
    )
    parser.add_argument("--channels", type=int, default=defaults.channels, help="channels in the pool (%(default)s)")
    parser.add_argument(
        "--ttl", type=int, default=defaults.ttl_seconds, help="TURN credential TTL in seconds, 30-86400 (%(default)s)"
    )
    parser.add_argument(
        "--any-candidates",
        action="store_true",
        help="let the agent offer host candidates too (default: relay only, all media via coturn)",
    )
    parser.add_argument("--log-dir", type=Path, default=defaults.log_dir, help="where logs go (%(default)s)")
    parser.add_argument(
        "--turn-verbose", action="store_true", help="coturn logs every allocation and error (to debug a call)"
    )
    lifetimes = parser.add_argument_group("coturn lifetimes (shorten them to compress a long call in a test)")
    lifetimes.add_argument("--turn-max-allocate-lifetime", type=int, metavar="SECONDS", help="coturn default 3600")
    lifetimes.add_argument("--turn-permission-lifetime", type=int, metavar="SECONDS", help="coturn default 300")
    lifetimes.add_argument("--turn-channel-lifetime", type=int, metavar="SECONDS", help="coturn default 600")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Start the stack, print how to use it, wait for Ctrl-C, stop it."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    if not 1 <= args.channels <= 1000:
        parser.exit(2, "error: --channels must be between 1 and 1000\n")
    if not 30 <= args.ttl <= 86400:
        parser.exit(2, "error: --ttl must be between 30 and 86400\n")
    for name in ("turn_max_allocate_lifetime", "turn_permission_lifetime", "turn_channel_lifetime"):
        value = getattr(args, name)
        if value is not None and not 30 <= value <= 86400:
            parser.exit(2, f"error: --{name.replace('_', '-')} must be between 30 and 86400\n")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(args.log_dir / "local.log")],
    )
    try:
        nova_sonic = NovaSonicConfig(port=args.nova_sonic_port, session_limit_seconds=args.nova_sonic_session_seconds)
    except NovaSonicConfigError as exc:
        parser.exit(2, f"error: --nova-sonic-port / --nova-sonic-session-seconds: {exc}\n")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    config = StackConfig(
        port=args.port,
        kvs_port=args.kvs_port,
        turn_port=args.turn_port,
        agent_port=args.agent_port,
        agentcore_port=args.agentcore_port,
        channels=args.channels,
        ttl_seconds=args.ttl,
        relay_only=not args.any_candidates,
        log_dir=args.log_dir,
        pipeline=args.pipeline,
        nova_sonic=nova_sonic,
        coturn=CoturnConfig(
            max_allocate_lifetime=args.turn_max_allocate_lifetime,
            permission_lifetime=args.turn_permission_lifetime,
            channel_lifetime=args.turn_channel_lifetime,
            verbose=args.turn_verbose,
        ),
    )
    stack = LocalStack(config)
    print("starting the KVS emulator, coturn, the agent and the broker API...", flush=True)
    try:
        stack.start()
        exports = "\n".join(f"  export {name}={shlex.quote(value)}" for name, value in stack.env.items())
        print(
            f"\nlocal system ready: open {stack.url} and click Connect\n"
            f"  no internet?  {stack.url}/offline/ (the prebuilt UI loads a script from Daily's CDN)\n"
            f"  broker API    {stack.url}/start (the Pipecat client contract)\n"
            f"  agent         http://127.0.0.1:{config.agent_port} ({config.pipeline} pipeline, "
            f"{'relay candidates only' if config.relay_only else 'all candidates'})\n"
            f"  AgentCore     http://127.0.0.1:{config.agentcore_port} (InvokeAgentRuntime and the WebSocket, "
            f"SigV4 checked)\n"
            + (
                f"  Nova Sonic    {stack.nova_sonic.url} (stand-in: SigV4 and events checked, answers offline)\n"
                if stack.nova_sonic is not None
                else ""
            )
            + f"  coturn        turn:127.0.0.1:{config.turn_port} (UDP and TCP)\n"
            f"  KVS emulator  http://127.0.0.1:{config.kvs_port} (stats: /_emulator/stats)\n"
            f"  logs          {args.log_dir.resolve()}\n"
            f"\nA call from the terminal: .venv/bin/python -m local.call_client --url {stack.url} "
            f"[--transport websocket]\n"
            f"The broker's environment, for `.venv/bin/python -m broker`:\n{exports}\n"
            f"\nCtrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(0.5):
            if stack.agent is not None and stack.agent.poll() is not None:
                raise LocalStackError(f"the agent exited (code {stack.agent.returncode}); see {args.log_dir}/agent.log")
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m agent``: serve the voice agent on ``AGENT_HOST:AGENT_PORT`` (127.0.0.1:8080)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

import uvicorn
from loguru import logger as loguru_logger

from agent.config import AgentConfig
from agent.exceptions import ConfigurationError

QUIET_LIBRARY_LOGGERS: Final[Mapping[str, int]] = {"aioice": logging.WARNING, "aiortc": logging.WARNING}
"""Libraries that speak only of problems, whatever ``AGENT_LOG_LEVEL`` says.

aioice logs every STUN message it sends or receives at DEBUG, and the attributes of an authenticated
TURN request include the TURN ``USERNAME``; it and aiortc also log every connectivity check.
"""


def configure_logging(level: str) -> None:
    """Send the agent's logs and Pipecat's to stderr.

    Pipecat logs SDP, ICE candidates and request bodies at DEBUG, so its level never goes below INFO;
    aiortc and aioice log every connectivity check and STUN message (TURN usernames included), so they
    speak only of problems (:data:`QUIET_LIBRARY_LOGGERS`).
    """
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, quiet_level in QUIET_LIBRARY_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
    loguru_logger.remove()
    pipecat_level = level if logging.getLevelName(level) >= logging.INFO else "INFO"
    loguru_logger.add(sys.stderr, level=pipecat_level)


def server_config(app: Callable[..., Any], config: AgentConfig) -> uvicorn.Config:
    """What ``BedrockAgentCoreApp.run()`` gives uvicorn, with the agent's own limits.

    ``ws_max_size`` makes the server refuse a ``/ws`` message larger than ``AGENT_MAX_FRAME_BYTES``
    from its length alone, before buffering it (uvicorn's default is 16 MiB): it closes that call with
    code 1009. :class:`agent.websocket_calls.WebSocketGuard` checks the same limit under any server.
    """
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        access_log=False,
        log_level="warning",
        ws_max_size=config.max_frame_bytes,
    )


def main() -> int:
    """Read the configuration and serve until stopped.

    The first call's pipeline is built while the server starts (see :func:`agent.server.create_app`);
    when it cannot be built, the server stops and the exit status is 2 for a configuration error
    (the log says what to set or install), 1 for anything else.
    """
    failures: list[BaseException] = []

    def stop(failure: BaseException) -> None:
        # Called from the thread that built the first call's pipeline, which the server below starts.
        failures.append(failure)
        server.should_exit = True

    try:
        config = AgentConfig.from_env()
        configure_logging(config.log_level)
        from agent.ice import gather_loopback_host_candidates_only  # noqa: PLC0415
        from agent.server import create_app  # noqa: PLC0415 - import Pipecat only once config is valid

        if config.ice_host_candidates == "loopback":
            gather_loopback_host_candidates_only()
        app = create_app(config, on_pipeline_failure=stop)
    except ConfigurationError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return 2
    # What BedrockAgentCoreApp.run() does, keeping the server to stop it when no pipeline can be built.
    server = uvicorn.Server(server_config(app, config))
    logging.getLogger(__name__).info(
        "serving the %s pipeline on http://%s:%d", config.pipeline, config.host, config.port
    )
    server.run()
    if failures:
        return 2 if isinstance(failures[0], ConfigurationError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

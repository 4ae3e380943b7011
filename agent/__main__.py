"""``python -m agent``: serve the voice agent on ``AGENT_HOST:AGENT_PORT`` (127.0.0.1:8080)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Final

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


def main() -> int:
    """Read the configuration, check the pipeline by building it once, then serve until stopped."""
    try:
        config = AgentConfig.from_env()
        configure_logging(config.log_level)
        from agent.ice import gather_loopback_host_candidates_only  # noqa: PLC0415
        from agent.server import create_app  # noqa: PLC0415 - import Pipecat only once config is valid

        if config.ice_host_candidates == "loopback":
            gather_loopback_host_candidates_only()
        app = create_app(config)
        if config.pipeline == "local":
            from agent.local_speech import shared_decoder  # noqa: PLC0415

            shared_decoder()  # load the recognizer now, not while the first call connects
    except ConfigurationError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info(
        "serving the %s pipeline on http://%s:%d", config.pipeline, config.host, config.port
    )
    app.run(port=config.port, host=config.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Settings of the AgentCore stand-in: one frozen dataclass, validated when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from local import OFFLINE_AWS_ENV
from local.http_server import is_loopback

from .exceptions import ConfigError
from .protocol import endpoint_name_pattern, runtime_arn_pattern


@dataclass(frozen=True, kw_only=True)
class AgentCoreConfig:
    """Everything the stand-in is told at start-up.

    Attributes:
        runtime_arn: The one agent runtime this endpoint knows; its region is the endpoint's region.
        agent_url: Base URL of the local agent container (``http://127.0.0.1:8080``): ``/invocations``
            and ``/ws`` are forwarded there.
        host: Loopback address to listen on.
        port: TCP port; ``0`` picks a free one (read it back from ``AgentCoreStandIn.url``).
        access_key_id: The only access key whose signatures are accepted.
        secret_access_key: Its secret, used to recompute every signature.
        session_token: The session token that must accompany the key, or None for long-term keys.
        qualifiers: Endpoint names a ``qualifier`` may name (AgentCore creates ``DEFAULT``).
        max_clock_skew_seconds: How far a signing time may be from the stand-in's clock.
        agent_connect_timeout_seconds: Limit on reaching the agent for one request.
        shutdown_timeout_seconds: How long a stop waits for open connections before cutting them.
    """

    runtime_arn: str
    agent_url: str
    host: str = "127.0.0.1"
    port: int = 0
    access_key_id: str = OFFLINE_AWS_ENV["AWS_ACCESS_KEY_ID"]
    secret_access_key: str = OFFLINE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    session_token: str | None = None
    qualifiers: tuple[str, ...] = ("DEFAULT",)
    max_clock_skew_seconds: float = 300.0
    agent_connect_timeout_seconds: float = 5.0
    shutdown_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "qualifiers", tuple(self.qualifiers))
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        agent = urlsplit(self.agent_url)
        timeouts = {
            "max_clock_skew_seconds": self.max_clock_skew_seconds,
            "agent_connect_timeout_seconds": self.agent_connect_timeout_seconds,
            "shutdown_timeout_seconds": self.shutdown_timeout_seconds,
        }
        checks: list[tuple[bool, str]] = [
            (
                bool(runtime_arn_pattern().fullmatch(self.runtime_arn)),
                f"runtime_arn must match the AgentRuntimeArn pattern (got {self.runtime_arn!r})",
            ),
            (
                agent.scheme == "http" and is_loopback(agent.hostname or "") and agent.port is not None,
                f"agent_url must be http://<loopback>:<port> (got {self.agent_url!r})",
            ),
            (is_loopback(self.host), f"host must be a loopback address (got {self.host!r})"),
            (0 <= self.port <= 65_535, f"port must be in 0..65535 (got {self.port})"),
            (bool(self.access_key_id), "access_key_id must not be empty"),
            (bool(self.secret_access_key), "secret_access_key must not be empty"),
            *(
                (bool(endpoint_name_pattern().fullmatch(name)), f"qualifier {name!r} is not a valid endpoint name")
                for name in self.qualifiers
            ),
            *(
                (math.isfinite(value) and value > 0, f"{name} must be > 0 (got {value})")
                for name, value in timeouts.items()
            ),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def region(self) -> str:
        """The region of the runtime ARN, which is the region this endpoint serves and signs for."""
        return self.runtime_arn.split(":")[3]

    @property
    def agent_ws_url(self) -> str:
        """Where WebSocket sessions are relayed: the agent's ``/ws``."""
        return "ws://" + urlsplit(self.agent_url).netloc + "/ws"

    @property
    def agent_invocations_url(self) -> str:
        """Where invocations are forwarded: the agent's ``/invocations``."""
        return "http://" + urlsplit(self.agent_url).netloc + "/invocations"

"""Settings of the Nova Sonic stand-in: one frozen dataclass, validated when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from local import OFFLINE_AWS_ENV
from local.http_server import is_loopback

MODEL_IDS: tuple[str, ...] = ("amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0")
"""The speech-to-speech models the stand-in answers for (Bedrock's model ids)."""

SESSION_LIMIT_SECONDS = 480.0
"""Nova Sonic closes a session after 8 minutes (``ModelTimeoutException``); Pipecat rotates before."""


class NovaSonicConfigError(ValueError):
    """A setting that cannot work; the message lists every problem."""


@dataclass(frozen=True, kw_only=True)
class NovaSonicConfig:
    """Everything the stand-in is told at start-up.

    Attributes:
        host: Loopback address to listen on.
        port: TCP port; ``0`` picks a free one (read it back from ``NovaSonicStandIn.url``).
        region: The region requests must be signed for.
        access_key_id: Long-term access key accepted besides the ones ``issue_credentials`` hands out.
        secret_access_key: Its secret, used to recompute every signature.
        model_ids: Model ids served; any other gets ``ValidationException``.
        session_limit_seconds: A session older than this is ended with ``ModelTimeoutException``
            (Nova Sonic's 8 minutes; seconds in tests, to drive Pipecat's session continuation).
        max_clock_skew_seconds: How far a request's or an event's signing time may be from the clock.
        words_per_minute: espeak-ng's speaking rate for the answers.
    """

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    access_key_id: str = OFFLINE_AWS_ENV["AWS_ACCESS_KEY_ID"]
    secret_access_key: str = OFFLINE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    model_ids: tuple[str, ...] = MODEL_IDS
    session_limit_seconds: float = SESSION_LIMIT_SECONDS
    max_clock_skew_seconds: float = 300.0
    words_per_minute: int = 175

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_ids", tuple(self.model_ids))
        checks = [
            (is_loopback(self.host), f"host must be a loopback address, not {self.host!r}"),
            (0 <= self.port <= 65535, f"port must be 0-65535, not {self.port}"),
            (bool(self.region), "region must not be empty"),
            (bool(self.access_key_id and self.secret_access_key), "access_key_id and secret_access_key must be set"),
            (bool(self.model_ids), "model_ids must name at least one model"),
            (self.session_limit_seconds > 0, "session_limit_seconds must be positive"),
            (self.max_clock_skew_seconds > 0, "max_clock_skew_seconds must be positive"),
            (80 <= self.words_per_minute <= 450, "words_per_minute must be 80-450"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise NovaSonicConfigError("; ".join(problems))

"""Settings of the KVS emulator: one frozen dataclass, validated when it is built."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from local.http_server import is_loopback

from .exceptions import ConfigError

DEFAULT_TURN_URIS: Final = (
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
)
# A well-known, local-only secret: coturn started by the local stack is given the same value.
DEFAULT_TURN_SECRET: Final = "local-turn-secret"  # noqa: S105

# KVS allows 10,000 signaling channels per account in these regions and 5,000 elsewhere.
_LARGE_CHANNEL_QUOTA_REGIONS: Final = frozenset({"us-east-1", "us-west-2"})
_REGION_RE: Final = re.compile(r"[a-z0-9-]{1,64}")
_ACCOUNT_RE: Final = re.compile(r"[0-9]{12}")
_TURN_URI_RE: Final = re.compile(r"turns?:\S{1,250}")
# Credentials returned by GetIceServerConfig must carry a TTL inside the model's Ttl range.
MIN_TTL_SECONDS: Final = 30
MAX_TTL_SECONDS: Final = 86_400


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """Everything the emulator can be told at start-up; all fields have working defaults.

    Rate limits are sliding windows of ``window_seconds`` over arrival time; ``0`` disables a limit.

    Attributes:
        host: Loopback address to listen on (the emulator checks no signatures, so never expose it).
        port: TCP port; ``0`` picks a free one (read it back from ``KvsEmulator.url``).
        region: Region written into channel ARNs.
        account_id: Twelve-digit account id written into channel ARNs.
        latency_ms: Delay added to every KVS request; can be changed at run time.
        ttl_seconds: Lifetime of minted TURN credentials (``Ttl`` in the response).
        turn_uris: URIs of every ICE server entry returned by GetIceServerConfig.
        turn_secret: coturn's ``static-auth-secret`` used to sign TURN REST credentials.
        servers: Number of ICE server entries per GetIceServerConfig answer (real KVS returns 2).
        ice_tps_per_channel: GetIceServerConfig calls per channel per window.
        describe_tps_per_channel: DescribeSignalingChannel calls per channel per window.
        describe_tps_per_account: DescribeSignalingChannel calls per account per window.
        endpoint_tps_per_account: GetSignalingChannelEndpoint calls per account per window.
        create_tps_per_account: CreateSignalingChannel calls per account per window.
        list_tps_per_account: ListSignalingChannels calls per account per window.
        window_seconds: Length of the sliding rate-limit window.
        max_channels: Channel quota; ``None`` uses the KVS quota of the region.
        message_ttl_seconds: Default ``MessageTtlSeconds`` of channels created without one.
        max_recorded_calls: Arrival timestamps kept per channel and operation (oldest dropped).
        idle_timeout_seconds: An idle keep-alive connection is closed after this long.
    """

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    latency_ms: float = 0.0
    ttl_seconds: int = 300
    turn_uris: tuple[str, ...] = DEFAULT_TURN_URIS
    turn_secret: str = DEFAULT_TURN_SECRET
    servers: int = 2
    ice_tps_per_channel: int = 5
    describe_tps_per_channel: int = 5
    describe_tps_per_account: int = 300
    endpoint_tps_per_account: int = 300
    create_tps_per_account: int = 50
    list_tps_per_account: int = 50
    window_seconds: float = 1.0
    max_channels: int | None = None
    message_ttl_seconds: int = 60
    max_recorded_calls: int = 10_000
    idle_timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        # Callers may pass a list; a tuple keeps the dataclass hashable and truly frozen.
        object.__setattr__(self, "turn_uris", tuple(self.turn_uris))
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        limits = {
            "ice_tps_per_channel": self.ice_tps_per_channel,
            "describe_tps_per_channel": self.describe_tps_per_channel,
            "describe_tps_per_account": self.describe_tps_per_account,
            "endpoint_tps_per_account": self.endpoint_tps_per_account,
            "create_tps_per_account": self.create_tps_per_account,
            "list_tps_per_account": self.list_tps_per_account,
        }
        checks: list[tuple[bool, str]] = [
            (is_loopback(self.host), f"host must be a loopback address (got {self.host!r})"),
            (0 <= self.port <= 65_535, f"port must be in 0..65535 (got {self.port})"),
            (bool(_REGION_RE.fullmatch(self.region)), f"region must look like 'us-east-1' (got {self.region!r})"),
            (bool(_ACCOUNT_RE.fullmatch(self.account_id)), f"account_id must be 12 digits (got {self.account_id!r})"),
            (
                math.isfinite(self.latency_ms) and self.latency_ms >= 0,
                f"latency_ms must be a finite number >= 0 (got {self.latency_ms})",
            ),
            (
                MIN_TTL_SECONDS <= self.ttl_seconds <= MAX_TTL_SECONDS,
                f"ttl_seconds must be in {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS} (got {self.ttl_seconds})",
            ),
            (bool(self.turn_uris), "turn_uris must hold at least one URI"),
            *(
                (bool(_TURN_URI_RE.fullmatch(uri)), f"turn URI must look like 'turn:HOST:PORT' (got {uri!r})")
                for uri in self.turn_uris
            ),
            (bool(self.turn_secret), "turn_secret must not be empty"),
            (self.servers >= 1, f"servers must be >= 1 (got {self.servers})"),
            *((value >= 0, f"{name} must be >= 0 (got {value})") for name, value in limits.items()),
            (
                math.isfinite(self.window_seconds) and self.window_seconds > 0,
                f"window_seconds must be > 0 (got {self.window_seconds})",
            ),
            (
                self.max_channels is None or self.max_channels >= 0,
                f"max_channels must be >= 0 (got {self.max_channels})",
            ),
            (
                5 <= self.message_ttl_seconds <= 120,
                f"message_ttl_seconds must be in 5..120 (got {self.message_ttl_seconds})",
            ),
            (self.max_recorded_calls >= 1, f"max_recorded_calls must be >= 1 (got {self.max_recorded_calls})"),
            (
                self.idle_timeout_seconds > 0,
                f"idle_timeout_seconds must be > 0 (got {self.idle_timeout_seconds})",
            ),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def channel_quota(self) -> int:
        """Most channels the emulated account may hold (KVS's regional quota unless overridden)."""
        if self.max_channels is not None:
            return self.max_channels
        return 10_000 if self.region in _LARGE_CHANNEL_QUOTA_REGIONS else 5_000

"""Broker settings, read once from the environment into a frozen value."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from broker.exceptions import ConfigurationError
from broker.ice import ALL_TRANSPORTS, Transport

CredentialReuse = Literal["per-session", "shared"]

_CHANNEL_PREFIX = re.compile(r"^[a-zA-Z0-9_.-]{1,200}$")
_CHANNEL_ARN = re.compile(r"^arn:aws[a-z-]*:kinesisvideo:([a-z0-9-]+):\d{12}:channel/[A-Za-z0-9_.-]{1,256}/\d+$")


def channel_region(arn: str) -> str:
    """Return the region of a signaling channel ARN.

    Raises:
        ConfigurationError: ``arn`` is not a KVS signaling channel ARN.
    """
    match = _CHANNEL_ARN.match(arn)
    if not match:
        raise ConfigurationError(
            f"TURN_CHANNEL_ARNS: {arn!r} is not a KVS signaling channel ARN "
            "(arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/CREATION_TIME)"
        )
    return match.group(1)


@dataclass(frozen=True)
class BrokerConfig:
    """How the broker mints ICE servers. Every field has an environment variable (see ``from_env``).

    Attributes:
        channel_arns: The pool: signaling channels used only to mint TURN credentials. Empty when
            ``channel_prefix`` names the pool instead.
        region: AWS region of the pool (defaults to the region in the first ARN).
        channel_prefix: The pool is every ``ACTIVE`` channel whose name begins with this, found with
            ``ListSignalingChannels`` once when the broker starts (pools of any size: no list of ARNs
            has to fit in an environment variable).
        credential_reuse: ``per-session`` (fresh credentials per call) or ``shared`` (one set per
            channel, reused while it has more than ``shared_refresh_seconds`` left).
        transports: TURN transports to hand out (``udp``, ``tcp``, ``tls``).
        include_stun: Add a STUN server (``stun_url``, or the regional KVS one) to every answer.
        stun_url: STUN URL to add; defaults to ``stun:stun.kinesisvideo.{region}.amazonaws.com:443``.
        calls_per_window: ``GetIceServerConfig`` calls allowed per channel per window (KVS: 5).
        window_seconds: Length of the sliding window.
        max_wait_seconds: Longest a caller waits for a channel before ``PoolExhaustedError``.
        throttle_cooldown_seconds: How long a channel that answered ``ClientLimitExceeded`` rests.
        failure_cooldown_seconds: How long a channel that failed otherwise (not found, unreachable) rests.
        ttl_margin_seconds: Credentials with less validity left than this are never returned.
        shared_refresh_seconds: In shared mode, a set with less than this left is refreshed ahead.
        endpoint_cache_seconds: How long a channel's HTTPS endpoint is cached.
    """

    channel_arns: tuple[str, ...]
    region: str
    channel_prefix: str | None = None
    credential_reuse: CredentialReuse = "per-session"
    transports: frozenset[Transport] = field(default=ALL_TRANSPORTS)
    include_stun: bool = False
    stun_url: str | None = None
    calls_per_window: int = 5
    window_seconds: float = 1.0
    max_wait_seconds: float = 2.0
    throttle_cooldown_seconds: float = 1.0
    failure_cooldown_seconds: float = 30.0
    ttl_margin_seconds: float = 30.0
    shared_refresh_seconds: float = 60.0
    endpoint_cache_seconds: float = 6 * 3600.0

    def __post_init__(self) -> None:
        self._check_pool()
        if self.credential_reuse not in ("per-session", "shared"):
            raise ConfigurationError(
                f"TURN_CREDENTIAL_REUSE must be 'per-session' or 'shared', got {self.credential_reuse!r}"
            )
        if not self.transports or not self.transports <= ALL_TRANSPORTS:
            raise ConfigurationError(
                f"TURN_TRANSPORTS must be a non-empty subset of udp,tcp,tls, got {sorted(self.transports)}"
            )
        if self.calls_per_window < 1:
            raise ConfigurationError(f"TURN_CHANNEL_TPS must be >= 1, got {self.calls_per_window}")
        positive = {
            "TURN_WINDOW_SECONDS": self.window_seconds,
            "TURN_ENDPOINT_CACHE_SECONDS": self.endpoint_cache_seconds,
        }
        non_negative = {
            "TURN_MAX_WAIT_SECONDS": self.max_wait_seconds,
            "TURN_THROTTLE_COOLDOWN_SECONDS": self.throttle_cooldown_seconds,
            "TURN_FAILURE_COOLDOWN_SECONDS": self.failure_cooldown_seconds,
            "TURN_TTL_MARGIN_SECONDS": self.ttl_margin_seconds,
            "TURN_SHARED_REFRESH_SECONDS": self.shared_refresh_seconds,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a number > 0, got {value}")
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a number >= 0, got {value}")
        if self.shared_refresh_seconds < self.ttl_margin_seconds:
            raise ConfigurationError(
                "TURN_SHARED_REFRESH_SECONDS must be >= TURN_TTL_MARGIN_SECONDS, or shared sets would be "
                "withdrawn before they are refreshed"
            )

    def _check_pool(self) -> None:
        """The pool is named one way: explicit ARNs (each valid, none twice) or a name prefix."""
        if self.channel_prefix is not None:
            if self.channel_arns:
                raise ConfigurationError("set TURN_CHANNEL_ARNS or TURN_CHANNEL_PREFIX, not both")
            if not _CHANNEL_PREFIX.match(self.channel_prefix):
                raise ConfigurationError(
                    f"TURN_CHANNEL_PREFIX must be 1-200 characters of [a-zA-Z0-9_.-], got {self.channel_prefix!r}"
                )
            return
        if not self.channel_arns:
            raise ConfigurationError("TURN_CHANNEL_ARNS is empty: set it to the pool's channel ARNs, comma-separated")
        for arn in self.channel_arns:
            channel_region(arn)
        if len(set(self.channel_arns)) != len(self.channel_arns):
            raise ConfigurationError("TURN_CHANNEL_ARNS lists a channel twice")

    @property
    def effective_stun_url(self) -> str:
        """The STUN URL added when ``include_stun`` is set."""
        return self.stun_url or f"stun:stun.kinesisvideo.{self.region}.amazonaws.com:443"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerConfig:
        """Read the settings from environment variables.

        ``TURN_CHANNEL_PREFIX`` or ``TURN_CHANNEL_ARNS`` (one of them; ARNs comma-separated),
        ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``, else the first ARN's region), ``TURN_CREDENTIAL_REUSE``,
        ``TURN_TRANSPORTS`` (e.g. ``udp,tls``),
        ``TURN_INCLUDE_STUN`` (true/false), ``TURN_STUN_URL``, ``TURN_CHANNEL_TPS``,
        ``TURN_WINDOW_SECONDS``, ``TURN_MAX_WAIT_SECONDS``, ``TURN_THROTTLE_COOLDOWN_SECONDS``,
        ``TURN_FAILURE_COOLDOWN_SECONDS``, ``TURN_TTL_MARGIN_SECONDS``, ``TURN_SHARED_REFRESH_SECONDS``,
        ``TURN_ENDPOINT_CACHE_SECONDS``.

        Raises:
            ConfigurationError: A variable is missing or invalid; the message names it.
        """
        env = os.environ if environ is None else environ
        arns = tuple(part.strip() for part in env.get("TURN_CHANNEL_ARNS", "").split(",") if part.strip())
        prefix = env.get("TURN_CHANNEL_PREFIX", "").strip() or None
        if not arns and prefix is None:
            raise ConfigurationError(
                "set TURN_CHANNEL_PREFIX (the stack's pool: every channel named with it) or TURN_CHANNEL_ARNS "
                "(the pool's channel ARNs, comma-separated; locally `make local` sets it)"
            )
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or (channel_region(arns[0]) if arns else "")
        if not region:
            raise ConfigurationError("AWS_REGION is not set: TURN_CHANNEL_PREFIX needs the region of the pool")
        defaults = cls(channel_arns=arns, region=region, channel_prefix=prefix)

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None

        def flag(name: str) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw in ("", "0", "false", "no", "off"):
                return False
            if raw in ("1", "true", "yes", "on"):
                return True
            raise ConfigurationError(f"{name} must be true or false, got {raw!r}")

        tps = number("TURN_CHANNEL_TPS", defaults.calls_per_window)
        if tps != int(tps):
            raise ConfigurationError(f"TURN_CHANNEL_TPS must be a whole number, got {tps}")
        transports_raw = env.get("TURN_TRANSPORTS", "").strip()
        transports = (
            frozenset(part.strip().lower() for part in transports_raw.split(",") if part.strip())
            if transports_raw
            else ALL_TRANSPORTS
        )
        return cls(
            channel_arns=arns,
            region=region,
            channel_prefix=prefix,
            credential_reuse=cast(CredentialReuse, env.get("TURN_CREDENTIAL_REUSE", "per-session").strip()),
            transports=cast(frozenset[Transport], transports),
            include_stun=flag("TURN_INCLUDE_STUN"),
            stun_url=env.get("TURN_STUN_URL") or None,
            calls_per_window=int(tps),
            window_seconds=number("TURN_WINDOW_SECONDS", defaults.window_seconds),
            max_wait_seconds=number("TURN_MAX_WAIT_SECONDS", defaults.max_wait_seconds),
            throttle_cooldown_seconds=number("TURN_THROTTLE_COOLDOWN_SECONDS", defaults.throttle_cooldown_seconds),
            failure_cooldown_seconds=number("TURN_FAILURE_COOLDOWN_SECONDS", defaults.failure_cooldown_seconds),
            ttl_margin_seconds=number("TURN_TTL_MARGIN_SECONDS", defaults.ttl_margin_seconds),
            shared_refresh_seconds=number("TURN_SHARED_REFRESH_SECONDS", defaults.shared_refresh_seconds),
            endpoint_cache_seconds=number("TURN_ENDPOINT_CACHE_SECONDS", defaults.endpoint_cache_seconds),
        )

"""Errors raised by the broker library. Every error derives from :class:`BrokerError`."""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error the broker raises.

    Attributes:
        kvs_calls: ``GetIceServerConfig`` calls the failed request made before it gave up.
        throttles: Throttles among them.
    """

    kvs_calls: int = 0
    throttles: int = 0


class ConfigurationError(BrokerError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class SizingError(ConfigurationError):
    """An input to the pool-sizing arithmetic is out of range."""


class PoolExhaustedError(BrokerError):
    """No channel of the pool could serve within the bounded wait.

    Attributes:
        retry_after: Seconds after which a retry is likely to be served (never below 1 s
            once rounded up for a ``Retry-After`` header).
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KvsError(BrokerError):
    """A Kinesis Video Streams call failed; the botocore error is chained as ``__cause__``.

    Attributes:
        channel_arn: The channel the call was for.
        code: The AWS error code (``ResourceNotFoundException`` ...) or the exception class name.
        channel_failure: The channel itself failed (not found, unreachable, 5xx): another channel
            may succeed, and its cached endpoint is suspect.
    """

    def __init__(self, message: str, *, channel_arn: str, code: str, channel_failure: bool = False) -> None:
        super().__init__(message)
        self.channel_arn = channel_arn
        self.code = code
        self.channel_failure = channel_failure

    @property
    def throttled(self) -> bool:
        """Whether KVS refused the call for exceeding a rate limit."""
        return self.code == "ClientLimitExceededException"


class CredentialTtlError(BrokerError):
    """KVS returned credentials whose TTL is shorter than the configured safety margin."""

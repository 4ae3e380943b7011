"""Explicit AWS credentials for services that cannot use the default credential chain.

Nova Sonic's Pipecat service signs with explicit keys. In AgentCore those are the runtime role's
temporary credentials (with a session token), which expire after an hour or so while a call may last
8 hours. :class:`CredentialBridge` reads them from a boto3 session and hands out a fresh set whenever
the one it holds comes within ``refresh_margin`` of its expiry, so every new model session of a long
call signs with valid credentials.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.exceptions import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwsCredentials:
    """One set of AWS credentials; its repr shows only the access key id.

    Attributes:
        access_key_id: The access key id.
        secret_access_key: The secret key.
        session_token: The session token of temporary credentials.
        expires_at: Epoch seconds when they stop working, or ``None`` when unknown or never.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None


CredentialSource = Callable[[], AwsCredentials]


def boto3_credential_source(session: Any | None = None) -> CredentialSource:
    """Read credentials from a boto3 session (default: a new one with the default chain).

    botocore renews temporary credentials by itself when they near expiry, on the read; the
    source reports their expiry when botocore exposes it so the bridge knows when to read again.

    Args:
        session: A ``boto3.Session``.

    Returns:
        A callable that returns the session's current credentials.
    """
    if session is None:
        import boto3  # noqa: PLC0415 - boto3 is only needed when nothing was injected

        session = boto3.Session()

    def read() -> AwsCredentials:
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "no AWS credentials found: AgentCore provides the runtime role's; locally set "
                "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        frozen = credentials.get_frozen_credentials()
        # RefreshableCredentials keeps its expiry only in this attribute; static ones have none.
        expiry = getattr(credentials, "_expiry_time", None)
        return AwsCredentials(
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token,
            expires_at=expiry.timestamp() if isinstance(expiry, datetime) else None,
        )

    return read


class CredentialBridge:
    """Hands out AWS credentials, renewing them from the source before they expire.

    Credentials with a known expiry are reused until ``refresh_margin`` seconds before it; those
    without one are re-read after ``max_age`` seconds (cheap: botocore serves them from memory).
    Thread-safe.

    Args:
        source: Where credentials come from (see :func:`boto3_credential_source`).
        refresh_margin: Renew credentials this many seconds before they expire.
        max_age: Re-read credentials of unknown expiry after this many seconds.
        clock: Epoch clock.
    """

    def __init__(
        self,
        source: CredentialSource,
        *,
        refresh_margin: float = 300.0,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._refresh_margin = refresh_margin
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._current: AwsCredentials | None = None
        self._read_at = 0.0
        self.refreshes = 0

    def _fresh_enough(self, credentials: AwsCredentials, now: float) -> bool:
        if credentials.expires_at is None:
            return now - self._read_at < self._max_age
        return credentials.expires_at - now > self._refresh_margin

    def current(self) -> AwsCredentials:
        """Return credentials valid for at least ``refresh_margin`` seconds when the source allows.

        Raises:
            ConfigurationError: The source has no credentials.
        """
        with self._lock:
            now = self._clock()
            if self._current is not None and self._fresh_enough(self._current, now):
                return self._current
            credentials = self._source()
            if self._current is not None:
                self.refreshes += 1
            self._current, self._read_at = credentials, now
            if credentials.expires_at is not None and credentials.expires_at - now <= self._refresh_margin:
                logger.warning(
                    "AWS credentials %s expire in %.0f s, within the refresh margin of %.0f s",
                    credentials.access_key_id,
                    credentials.expires_at - now,
                    self._refresh_margin,
                )
            else:
                logger.debug("AWS credentials %s read", credentials.access_key_id)
            return credentials

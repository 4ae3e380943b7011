"""Temporary credentials the stand-in hands out and then honours, as STS and Bedrock do together.

A test gives the agent's credential bridge a source that calls :meth:`CredentialIssuer.issue`; every
set lives ``lifetime`` seconds, after which requests and events signed with it are refused. Refreshed
credentials therefore keep a long call going only if the agent really renews them in time.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.credentials import Credentials


@dataclass(frozen=True)
class IssuedCredentials:
    """One temporary set: what STS returns.

    Attributes:
        access_key_id: ``ASIA...``, unique to this set.
        secret_access_key: Its secret.
        session_token: The token that must accompany it.
        expires_at: Epoch seconds after which it is refused.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float


class CredentialIssuer:
    """Issues temporary credentials and answers which ones are still valid. Thread-safe.

    Args:
        clock: Wall clock, epoch seconds.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._issued: dict[str, IssuedCredentials] = {}
        self._lock = threading.Lock()

    def issue(self, lifetime_seconds: float) -> IssuedCredentials:
        """A new set valid for ``lifetime_seconds`` from now."""
        credentials = IssuedCredentials(
            access_key_id="ASIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(48),
            expires_at=self._clock() + lifetime_seconds,
        )
        with self._lock:
            self._issued[credentials.access_key_id] = credentials
        return credentials

    def lookup(self, access_key_id: str) -> Credentials | None:
        """The set with this key if it was issued here and has not expired, else None."""
        with self._lock:
            issued = self._issued.get(access_key_id)
        if issued is None or self._clock() >= issued.expires_at:
            return None
        return Credentials(issued.access_key_id, issued.secret_access_key, issued.session_token)

    @property
    def issued(self) -> int:
        """How many sets were handed out."""
        with self._lock:
            return len(self._issued)

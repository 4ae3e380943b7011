"""Session ids that are unguessable and bound to the caller who started them, with no database.

A session id is ``<issued hex>-<nonce hex>-<mac hex>``, where ``mac = HMAC-SHA256(key, subject, issued,
nonce)``. Only the broker can mint one, it names its owner without storing anything, and it is 73
characters of ``[0-9a-f-]``, which AgentCore accepts as a ``runtimeSessionId`` (33-256 characters).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from broker.api.errors import NotFoundError

SESSION_ID_PATTERN = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{32})-([0-9a-f]{32})$")
MIN_KEY_BYTES = 32
DEFAULT_MAX_AGE_SECONDS = 8 * 3600 + 15 * 60
"""An AgentCore session lives at most 8 hours; allow a little beyond for the last candidates."""


class SessionNotFoundError(NotFoundError):
    """The session id is malformed, expired, or was issued to another caller (404: nothing to reveal)."""

    code = "session_not_found"


class SessionIssuer:
    """Mints and checks session ids bound to a subject.

    Args:
        key: HMAC key, at least 32 bytes (shared by every broker instance).
        max_age_seconds: How long an id stays valid after it was issued.
        clock: Epoch clock.
    """

    def __init__(
        self, key: bytes, *, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the session signing key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._max_age = max_age_seconds
        self._clock = clock

    def _mac(self, subject: str, issued: str, nonce: str) -> str:
        message = "\n".join((subject, issued, nonce)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def issue(self, subject: str) -> str:
        """Return a new session id owned by ``subject``."""
        issued = f"{int(self._clock()):08x}"
        nonce = secrets.token_hex(16)
        return f"{issued}-{nonce}-{self._mac(subject, issued, nonce)}"

    def verify(self, subject: str, session_id: str) -> None:
        """Check that ``session_id`` was issued to ``subject`` and has not expired.

        Raises:
            SessionNotFoundError: It was not (the same error whatever the reason).
        """
        match = SESSION_ID_PATTERN.match(session_id)
        if match is None:
            raise SessionNotFoundError("no such session")
        issued, nonce, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac(subject, issued, nonce)):
            raise SessionNotFoundError("no such session")
        age = self._clock() - int(issued, 16)
        if not -60 <= age <= self._max_age:
            raise SessionNotFoundError("no such session")

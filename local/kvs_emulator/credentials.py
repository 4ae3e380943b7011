"""TURN REST credentials (the coturn ``use-auth-secret`` scheme) as GetIceServerConfig returns them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnCredential:
    """One time-limited TURN username and password pair.

    Attributes:
        username: ``"<expiry epoch seconds>:<id>"``.
        password: ``base64(hmac_sha1(secret, username))``.
        expiry: Epoch second after which coturn refuses the credential.
    """

    username: str
    password: str
    expiry: int


def turn_password(secret: str, username: str) -> str:
    """Return the password coturn expects for ``username`` under ``static-auth-secret=secret``."""
    # SHA-1 is what coturn's TURN REST API scheme specifies; it is an HMAC, not a bare digest.
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint_turn_credential(secret: str, *, ttl_seconds: int, now: float, user_id: str | None = None) -> TurnCredential:
    """Create a credential valid for ``ttl_seconds`` from ``now`` (epoch seconds).

    Args:
        secret: coturn's static auth secret.
        ttl_seconds: Lifetime of the credential.
        now: Current wall-clock time in epoch seconds.
        user_id: Part after the colon; a random URL-safe id when omitted.

    Returns:
        The credential.
    """
    expiry = int(now) + ttl_seconds
    username = f"{expiry}:{user_id or secrets.token_urlsafe(12)}"
    return TurnCredential(username=username, password=turn_password(secret, username), expiry=expiry)

"""Temporary credentials the stand-in hands out and then honours, as STS and Bedrock do together.

:class:`ContainerCredentials` serves them the way AgentCore (and ECS) serve a runtime role's: an HTTP
endpoint that botocore's own container provider reads (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and
``AWS_CONTAINER_AUTHORIZATION_TOKEN``), each answer a new set living ``lifetime`` seconds, after which
requests and events signed with it are refused. Refreshed credentials therefore keep a long call going
only if the agent (botocore, then the agent's credential bridge) really renews them in time.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

from botocore.credentials import Credentials

from local.http_server import FastRequestHandler, LoopbackHTTPServer

CREDENTIALS_PATH: Final = "/role-credentials"


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


class _CredentialsHandler(FastRequestHandler):
    server: _CredentialsServer

    def do_GET(self) -> None:
        """Answer a container credentials request: a new set, if the token is right."""
        token = self.headers.get("Authorization", "")
        if self.path != CREDENTIALS_PATH:
            self.send_all(404, [("Content-Type", "application/json")], b'{"message": "not found"}')
            return
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self.send_all(403, [("Content-Type", "application/json")], b'{"message": "bad authorization token"}')
            return
        issued = self.server.issuer.issue(self.server.lifetime)
        body = {
            "AccessKeyId": issued.access_key_id,
            "SecretAccessKey": issued.secret_access_key,
            "Token": issued.session_token,
            "Expiration": datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.send_all(200, [("Content-Type", "application/json")], json.dumps(body).encode())


class _CredentialsServer(LoopbackHTTPServer):
    def __init__(self, issuer: CredentialIssuer, lifetime: float, token: str) -> None:
        self.issuer = issuer
        self.lifetime = lifetime
        self.token = token
        super().__init__(("127.0.0.1", 0), _CredentialsHandler, idle_timeout=30)


class ContainerCredentials:
    """The runtime role's credentials endpoint on loopback, handing out sets from ``issuer``.

    Args:
        issuer: Where the sets come from (the Nova Sonic stand-in's, so it honours them).
        lifetime_seconds: How long each set lives.
    """

    def __init__(self, issuer: CredentialIssuer, *, lifetime_seconds: float) -> None:
        if lifetime_seconds < 1:
            raise ValueError("lifetime_seconds must be at least 1")
        self._server = _CredentialsServer(issuer, lifetime_seconds, secrets.token_urlsafe(24))
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="role-credentials", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        if self._thread is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The variables botocore's container provider reads."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{self._server.server_port}{CREDENTIALS_PATH}",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self._server.token,
        }
